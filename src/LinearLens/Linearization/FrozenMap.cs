using System.Numerics;
using System.Numerics.Tensors;
using LinearLens.Loading;
using LinearLens.Models;
using LinearLens.Numerics;

namespace LinearLens.Linearization;

/// <summary>
/// The frozen (detached) network of one forward pass (architectures.md §3.4): every norm scale, the MLP's frozen
/// coefficient and every attention probability held at its traced value, so that the map from the input embeddings
/// (or from the residual stream entering a layer) to any traced output is linear — affine with biases, whose constant
/// term <see cref="Offset"/> gives. It uses only the linear path — W_v, W_o, the MLP's linear projection (W_up, or W_gate
/// under the paper's Phi freezing), W_down and the norm gains — never W_q or W_k (long traces rebuild P from the
/// stored q and k, see <see cref="FrozenTrace{T}.RecomputesProbabilities"/>).
///
/// Products are batched: B tangents (JVP, J·v) or B cotangents (VJP, Jᵀ·u) travel together as one matrix laid out
/// position-major, so every weight product is one GEMM over the whole batch and a frozen per-position factor scales a
/// contiguous block of rows. Causality makes the batch ragged: a column whose tangent starts at position i (or whose
/// cotangent is wanted only from position i on) never touches earlier positions, so position t holds only the columns
/// active there (<see cref="RowLayout"/>) — a per-token product of token i costs (n − i)/n of a full one.
/// </summary>
public sealed class FrozenMap<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    public Transformer<T> Model { get; }
    public FrozenTrace<T> Trace { get; }
    readonly ModelConfig c;
    readonly int n, d;

    public FrozenMap(Transformer<T> model, FrozenTrace<T> trace)
    {
        Model = model; Trace = trace; c = model.Config; n = trace.Tokens; d = c.HiddenSize;
    }

    public int Tokens => n;
    public int Hidden => d;

    /// <summary>The map's real input for a target: the embeddings, or the residual stream entering the layer [n×d].</summary>
    public T[] Input(JacobianTarget t) => t.Mode == JacobianMode.Cumulative ? Trace.Embeddings : Trace.ResidPre[t.Layer - 1];

    /// <summary>
    /// The traced value at the target's site for the last position, before any final norm [d]. attn/mlp are what the
    /// branch adds to the residual stream, or — under the paper's detach policy — the branch before its post-norm.
    /// </summary>
    public ReadOnlySpan<T> SiteValue(JacobianTarget t) => t.Key switch
    {
        OutputKey.Layer => Trace.ResidPre[t.Layer].AsSpan((n - 1) * d, d),
        OutputKey.Attn => TapsRaw(t) ? Trace.AttnRaw[t.Layer - 1]! : Trace.AttnOut[t.Layer - 1],
        _ => TapsRaw(t) ? Trace.MlpRaw[t.Layer - 1]! : Trace.MlpOut[t.Layer - 1],
    };

    /// <summary>Whether the target's attn/mlp tap lies before that branch's post-norm (--detach reference, where the layer has one).</summary>
    bool TapsRaw(JacobianTarget t) => Trace.Detach == DetachPolicy.Reference && t.Key switch
    {
        OutputKey.Attn => Trace.AttnRaw[t.Layer - 1] is not null,
        OutputKey.Mlp => Trace.MlpRaw[t.Layer - 1] is not null,
        _ => false,
    };

    /// <summary>ρ of the final norm frozen at the site value (for the model output: ln_final's own scale).</summary>
    public T OutputScale(JacobianTarget t)
    {
        if (t.Key == OutputKey.Layer && t.Layer == c.NumLayers) return Trace.FinalScale[n - 1];
        return Blocks<T>.RmsScale(SiteValue(t), Model.Eps);
    }

    /// <summary>The real output of the network at the target (what Σᵢ Jᵢ xᵢ + c must reconstruct) [d].</summary>
    public T[] Output(JacobianTarget t)
    {
        var y = new T[d];
        if (!t.FinalNorm) { SiteValue(t).CopyTo(y); return y; }
        if (t.Key == OutputKey.Layer && t.Layer == c.NumLayers) { Trace.Final.AsSpan((n - 1) * d, d).CopyTo(y); return y; }
        Blocks<T>.ScaleRows(SiteValue(t), 1, d, Model.FinalNormGain, [OutputScale(t)], y);
        return y;
    }

    /// <summary>Whether the frozen map has a constant term (the model has biases on its linear path): y = Σᵢ Jᵢxᵢ + c.</summary>
    public bool IsAffine => c.Biases.Any;

    /// <summary>
    /// The constant term c = F̃(0) of the affine frozen map (architectures.md §3.6): the frozen network, factors held at
    /// the real input, evaluated at zero input with every bias on. Zero without biases. [d]
    /// </summary>
    public T[] Offset(JacobianTarget t)
    {
        t.Validate(c.NumLayers);
        var offset = new T[d];
        if (!IsAffine) return offset;
        var ws = Workspace(1, [0]);   // every position active: biases act at all of them
        Array.Clear(ws.H, 0, ws.Layout.Rows * d);
        Propagate(t, ws, affine: true, offset);
        return offset;
    }

    /// <summary>The frozen map at the real input, ŷ = Σᵢ Jᵢxᵢ + c by one JVP and the offset run: what must equal <see cref="Output"/>.</summary>
    public T[] Reconstruct(JacobianTarget t)
    {
        var yHat = new T[d];
        Jvp(t, Input(t), 1, yHat);
        TensorPrimitives.Add(yHat, Offset(t), yHat);
        return yHat;
    }

    // ---- forward product -------------------------------------------------------------------------------------

    /// <summary>
    /// J·v for B tangents at once: <paramref name="tangents"/> [n][B][d] (position-major, the perturbation of every
    /// input row) → <paramref name="outputs"/> [B][d]. Each column runs only from its first non-zero position on. This is
    /// the linear part of the map: biases (the offset c) are not added.
    /// </summary>
    public void Jvp(JacobianTarget t, T[] tangents, int batch, T[] outputs)
    {
        t.Validate(c.NumLayers);
        var first = new int[batch];
        for (int b = 0; b < batch; b++)
        {
            int p = 0;
            while (p < n - 1 && !tangents.AsSpan((p * batch + b) * d, d).ContainsAnyExcept(T.Zero)) p++;
            first[b] = p;
        }
        var ws = Workspace(batch, first);
        ws.Layout.Pack(tangents, d, ws.H);
        Propagate(t, ws, affine: false, outputs);
    }

    /// <summary>Runs the frozen layers of the target over ws.H and writes the last position's output of every column.</summary>
    void Propagate(JacobianTarget t, Batch ws, bool affine, T[] outputs)
    {
        var L = ws.Layout;
        T[]? tap = null;
        for (int l = t.FirstLayer; l < t.Layer; l++)
            tap = ForwardLayer(l, ws, l == t.Layer - 1 ? t.Key : OutputKey.Layer, lastLayer: l == t.Layer - 1, rawTap: TapsRaw(t), affine);
        T rho = t.FinalNorm ? OutputScale(t) : T.One;
        for (int r = 0; r < L.Columns; r++)
        {
            var row = tap!.AsSpan((L.Offset(n - 1) + r) * d, d);
            var dst = outputs.AsSpan(L.Column(r) * d, d);
            if (t.FinalNorm) Blocks<T>.ScaleRows(row, 1, d, Model.FinalNormGain, [rho], dst);
            else row.CopyTo(dst);
        }
    }

    /// <summary>
    /// One layer of the frozen map on ws.H (rows of the layout); returns the array holding the requested tap (H for Layer).
    /// In the last layer only the last position is read, so after the values everything runs for that position alone.
    /// With <paramref name="affine"/>, every bias on the linear path is added (the offset run).
    /// </summary>
    T[] ForwardLayer(int l, Batch ws, OutputKey tap, bool lastLayer, bool rawTap, bool affine)
    {
        var p = Model.Params(l);
        var w = p.Weights;
        var L = ws.Layout;
        int q0 = lastLayer ? n - 1 : 0;
        // rows from position p0 on: one GEMM y = x·Wᵀ (+ bias in the offset run)
        void Linear(T[] x, MatrixView weight, T[]? bias, T[] y, int p0)
        {
            int r0 = L.Offset(p0), rows = L.Rows - r0;
            MatMul.Run(Pinned.View(x, rows, weight.Cols, (long)r0 * weight.Cols), false, weight, true, y, (long)r0 * weight.Rows, weight.Rows);
            if (affine && bias is not null)
                for (int r = r0; r < L.Rows; r++) TensorPrimitives.Add(y.AsSpan(r * bias.Length, bias.Length), bias, y.AsSpan(r * bias.Length, bias.Length));
        }
        Span<T> From(T[] x, int p0) => x.AsSpan(L.Offset(p0) * d, (L.Rows - L.Offset(p0)) * d);
        // attention branch: a = N_attn_in(h) (ρ frozen) or h;  v = W_v a;  o_s = Σ_t P[s,t] v_t;  attn = N_attn_out(W_o o)
        T[] a = ws.H;
        if (p.AttnIn is { } gi) { ScaleRows(ws.H, d, gi, Trace.AttnInScale[l]!, L, ws.A, 0); a = ws.A; }
        Linear(a, w.V, p.VBias, ws.Kv, 0);
        MixForward(l, ws.Kv, L, ws.Q, q0);
        Linear(ws.Q, w.O, p.OBias, ws.A, q0);
        bool raw = rawTap && tap == OutputKey.Attn;
        if (p.AttnOut is { } ga && !raw) ScaleRows(ws.A, d, ga, Trace.AttnOutScale[l]!, L, ws.A, q0);
        if (tap == OutputKey.Attn) return ws.A;
        TensorPrimitives.Add(From(ws.H, q0), From(ws.A, q0), From(ws.H, q0));
        // MLP branch: b = N_mlp_in(h') or h';  z = γ ⊙ W_lin b;  m = N_mlp_out(W_down z)  (or m = M_t b, see MlpMatrixPays)
        T[] b = ws.H;
        if (p.MlpIn is { } gm) { ScaleRows(ws.H, d, gm, Trace.MlpInScale[l]!, L, ws.A, q0); b = ws.A; }
        T[] m = ws.A;
        if (!affine && MlpMatrixPays(L, q0))
        {
            m = ws.G;
            ApplyMlpMatrices(l, b, L, q0, transposed: true, m);
        }
        else
        {
            var (lin, linBias) = LinearPath(p);
            Linear(b, lin, linBias, ws.I, q0);
            ScaleByCoefficient(ws.I, Gamma(l), L, q0);
            Linear(ws.I, w.Down, p.Mlp.Down, ws.A, q0);
        }
        raw = rawTap && tap == OutputKey.Mlp;
        if (p.MlpOut is { } go && !raw) ScaleRows(m, d, go, Trace.MlpOutScale[l]!, L, m, q0);
        if (tap == OutputKey.Mlp) return m;
        TensorPrimitives.Add(From(ws.H, q0), From(m, q0), From(ws.H, q0));
        return ws.H;
    }

    /// <summary>The MLP's linear path under the trace's freezing: W_up (γ = act(g)) or W_gate (γ = u ⊙ σ(g)), with its bias.</summary>
    (MatrixView weight, T[]? bias) LinearPath(LayerParams<T> p) =>
        Trace.MlpFreezing == MlpFreezing.Gate ? (p.Weights.Up, p.Mlp.Up) : (p.Weights.Gate, p.Mlp.Gate);

    // ---- transpose product -----------------------------------------------------------------------------------

    /// <summary>
    /// Jᵀ·u for B cotangents at once: <paramref name="cotangents"/> [B][d] on the output → <paramref name="inputCotangents"/>
    /// [n][B][d] (position-major): row (i, b) is uᵦᵀ Jᵢ, i.e. for unit uᵦ = e_k it is row k of Jᵢ. With
    /// <paramref name="firstPosition"/>, column b is computed only for positions ≥ firstPosition[b] (earlier rows are
    /// returned as zero): by causality they need no later work, so a per-token product is cheaper.
    /// </summary>
    public void Vjp(JacobianTarget t, ReadOnlySpan<T> cotangents, int batch, T[] inputCotangents, ReadOnlySpan<int> firstPosition = default)
    {
        t.Validate(c.NumLayers);
        var first = new int[batch];
        for (int b = 0; b < batch && !firstPosition.IsEmpty; b++) first[b] = Math.Clamp(firstPosition[b], 0, n - 1);
        var ws = Workspace(batch, first);
        var L = ws.Layout;
        Array.Clear(ws.H, 0, L.Rows * d);
        // the final norm with frozen scale: Γ = ρ·(w_f ⊙ u), at the last position only
        T rho = OutputScale(t);
        for (int r = 0; r < batch; r++)
        {
            var row = ws.H.AsSpan((L.Offset(n - 1) + r) * d, d);
            cotangents.Slice(L.Column(r) * d, d).CopyTo(row);
            if (t.FinalNorm)
            {
                TensorPrimitives.Multiply(row, Model.FinalNormGain, row);
                TensorPrimitives.Multiply(row, rho, row);
            }
        }
        int l = t.Layer - 1;
        bool raw = TapsRaw(t);
        switch (t.Key)
        {
            case OutputKey.Layer: BackwardLayer(l, ws, fromPos: n - 1); break;
            case OutputKey.Mlp:
                // Γ enters at the MLP output: Γ_mid = MLPᵀ Γ (no residual path), then through attention.
                MlpBackward(l, ws, fromPos: n - 1, addToH: false, rawTap: raw);
                AttnBackward(l, ws, fromPos: n - 1);
                break;
            case OutputKey.Attn:
                // Γ enters at the attention output: no residual path
                AttnOutBackward(l, ws, n - 1, rawTap: raw);
                Array.Clear(ws.H, 0, L.Rows * d);
                AttnBackwardFrom(l, ws, ws.G, fromPos: n - 1);
                break;
        }
        for (l = t.Layer - 2; l >= t.FirstLayer; l--) BackwardLayer(l, ws, fromPos: 0);
        L.Unpack(ws.H, d, inputCotangents);
    }

    /// <summary>Γ (ws.H, w.r.t. the residual after layer l) → Γ w.r.t. the residual entering layer l. Rows before fromPos are zero on entry.</summary>
    void BackwardLayer(int l, Batch ws, int fromPos)
    {
        MlpBackward(l, ws, fromPos, addToH: true, rawTap: false);
        AttnBackward(l, ws, fromPos);
    }

    /// <summary>ws.H ← (addToH ? ws.H : 0) + MLPᵀ ws.H over rows from fromPos (the residual h'' = h' + MLP(h') transposed).</summary>
    void MlpBackward(int l, Batch ws, int fromPos, bool addToH, bool rawTap)
    {
        var p = Model.Params(l);
        var L = ws.Layout;
        int r0 = L.Offset(fromPos), rows = L.Rows - r0, I = c.IntermediateSize;
        T[] src = ws.H;
        if (p.MlpOut is { } go && !rawTap) { ScaleRows(ws.H, d, go, Trace.MlpOutScale[l]!, L, ws.G, fromPos); src = ws.G; }
        // Γ_z = W_downᵀ Γ ⊙ γ;  Γ_b = W_linᵀ Γ_z (or Γ_b = M_tᵀ Γ, see MlpMatrixPays);  Γ_h' += N_mlp_inᵀ Γ_b
        if (MlpMatrixPays(L, fromPos))
            ApplyMlpMatrices(l, src, L, fromPos, transposed: false, ws.A);
        else
        {
            MatMul.Run(Pinned.View(src, rows, d, (long)r0 * d), false, p.Weights.Down, false, ws.I, (long)r0 * I, I);
            ScaleByCoefficient(ws.I, Gamma(l), L, fromPos);
            MatMul.Run(Pinned.View(ws.I, rows, I, (long)r0 * I), false, LinearPath(p).weight, false, ws.A, (long)r0 * d, d);
        }
        if (!addToH) Array.Clear(ws.H, 0, L.Rows * d);
        NormTransposeAdd(ws.A, p.MlpIn, Trace.MlpInScale[l], L, ws.H, fromPos);
    }

    /// <summary>ws.H ← ws.H + Attnᵀ ws.H (the residual h' = h + Attn(h) transposed).</summary>
    void AttnBackward(int l, Batch ws, int fromPos)
    {
        AttnOutBackward(l, ws, fromPos, rawTap: false);
        AttnBackwardFrom(l, ws, ws.G, fromPos);
    }

    /// <summary>ws.G = N_attn_outᵀ ws.H (a copy where the layer has no attention-out norm or the tap lies before it), rows from fromPos.</summary>
    void AttnOutBackward(int l, Batch ws, int fromPos, bool rawTap)
    {
        var L = ws.Layout;
        if (Model.Params(l).AttnOut is { } ga && !rawTap) ScaleRows(ws.H, d, ga, Trace.AttnOutScale[l]!, L, ws.G, fromPos);
        else ws.H.AsSpan(L.Offset(fromPos) * d, (L.Rows - L.Offset(fromPos)) * d).CopyTo(ws.G.AsSpan(L.Offset(fromPos) * d));
    }

    /// <summary>ws.H += Attnᵀ Γ where Γ = src rows from fromPos (the attention-out norm already applied).</summary>
    void AttnBackwardFrom(int l, Batch ws, T[] src, int fromPos)
    {
        var p = Model.Params(l);
        var L = ws.Layout;
        int r0 = L.Offset(fromPos), rows = L.Rows - r0;
        // Γ_o = W_oᵀ Γ;  Γ_v[t] = Σ_{s≥t} Σ_h P_h[s,t] Γ_o[s,h];  Γ_a = W_vᵀ Γ_v;  Γ_h += N_attn_inᵀ Γ_a
        MatMul.Run(Pinned.View(src, rows, d, (long)r0 * d), false, p.Weights.O, false, ws.Q, (long)r0 * c.QDim, c.QDim);
        MixBackward(l, ws.Q, L, ws.Kv, fromPos);
        MatMul.Run(Pinned.View(ws.Kv, L.Rows, c.KvDim), false, p.Weights.V, false, ws.A, 0, d);
        NormTransposeAdd(ws.A, p.AttnIn, Trace.AttnInScale[l], L, ws.H, 0);
    }

    /// <summary>dst rows += Nᵀ src for a frozen norm N = diag(gain)·ρ_t (its own transpose), or += src where there is no norm.</summary>
    void NormTransposeAdd(T[] src, T[]? gain, T[]? rho, RowLayout L, T[] dst, int fromPos)
    {
        if (gain is not null) { ScaleRowsAdd(src, gain, rho!, L, dst, fromPos); return; }
        var s = src.AsSpan(L.Offset(fromPos) * d, (L.Rows - L.Offset(fromPos)) * d);
        var t = dst.AsSpan(L.Offset(fromPos) * d, s.Length);
        TensorPrimitives.Add(t, s, t);
    }

    // ---- the frozen elementwise pieces -----------------------------------------------------------------------

    /// <summary>dst rows (t, b) = gain ⊙ (src · ρ[t]) for positions from fromPos.</summary>
    void ScaleRows(T[] src, int width, T[] gain, T[] rho, RowLayout L, T[] dst, int fromPos) =>
        Parallel.For(fromPos, n, t =>
        {
            for (int r = L.Offset(t); r < L.Offset(t + 1); r++)
            {
                var s = src.AsSpan(r * width, width);
                var dd = dst.AsSpan(r * width, width);
                TensorPrimitives.Multiply(s, rho[t], dd);
                TensorPrimitives.Multiply(dd, gain, dd);
            }
        });

    /// <summary>dst rows (t, b) += gain ⊙ (src · ρ[t]) for positions from fromPos.</summary>
    void ScaleRowsAdd(T[] src, T[] gain, T[] rho, RowLayout L, T[] dst, int fromPos) =>
        Parallel.For(fromPos, n, t =>
        {
            Span<T> tmp = new T[d];
            TensorPrimitives.Multiply(gain, rho[t], tmp);
            for (int r = L.Offset(t); r < L.Offset(t + 1); r++)
                TensorPrimitives.MultiplyAdd(src.AsSpan(r * d, d), tmp, dst.AsSpan(r * d, d), dst.AsSpan(r * d, d));
        });

    /// <summary>
    /// Whether the MLP is cheaper as one d×d matrix per position: frozen, it is M_t = W_down·diag(γ_t)·W_up (row form:
    /// m = b·M_tᵀ forward, Γ_b = Γ·M_t transposed). With c rows at a position the two weight products cost 4·c·d·I flops;
    /// forming M_t and applying it, 2·d²·I + 2·c·d² — less from c ≈ 0.6·d rows on (I = 3d), so forming J (d cotangents
    /// at every position) spends a third fewer flops in the MLP. Every position from fromPos must qualify.
    /// </summary>
    bool MlpMatrixPays(RowLayout L, int fromPos)
    {
        for (int t = fromPos; t < n; t++)
            if (!FrozenMlp.MatrixPays(d, c.IntermediateSize, L.Offset(t + 1) - L.Offset(t))) return false;
        return true;
    }

    /// <summary>dst rows of position t = src rows of t · M_t (· M_tᵀ when <paramref name="transposed"/>), for t from fromPos.</summary>
    void ApplyMlpMatrices(int l, T[] src, RowLayout L, int fromPos, bool transposed, T[] dst)
    {
        for (int t = fromPos; t < n; t++)
        {
            int r0 = L.Offset(t), rows = L.Offset(t + 1) - r0;
            if (rows > 0) MatMul.Run(Pinned.View(src, rows, d, (long)r0 * d), false, MlpMatrix(l, t), transposed, dst, (long)r0 * d, d);
        }
    }

    T[]? scaledDown, mlpMatrix;

    /// <summary>M_t = W_down·diag(γ_t)·W_lin (the linear path: W_up, or W_gate under the Phi freezing) of layer l at position t, as a d×d view of a reused buffer.</summary>
    unsafe MatrixView MlpMatrix(int l, int t)
    {
        var p = Model.Params(l);
        int I = c.IntermediateSize;
        scaledDown ??= Pinned.Array<T>((long)d * I);
        mlpMatrix ??= Pinned.Array<T>((long)d * d);
        var gate = Gamma(l);
        var down = p.Weights.Down;
        var dst = scaledDown;
        // W_down·diag(γ_t): each stored row [I] widened to T and scaled elementwise (contiguous, so the product below takes
        // the stored W_up as its B operand, packed like the MLP's own products — faster than a scaled W_up as B)
        Parallel.For(0, 16, part =>
        {
            var (r0, r1) = Gemm.Split(d, 16, part, 1);
            T* pd = (T*)Pinned.Pointer(dst);
            for (int r = r0; r < r1; r++)
            {
                down.DecodeRow(r, pd + (long)r * I);
                var row = dst.AsSpan(r * I, I);
                TensorPrimitives.Multiply(row, gate.AsSpan(t * I, I), row);
            }
        });
        MatMul.Run(Pinned.View(scaledDown, d, I), false, LinearPath(p).weight, false, mlpMatrix, 0, d);
        return Pinned.View(mlpMatrix, d, d);
    }

    // what a long-input trace leaves out (FrozenTrace.RecomputesCoefficients), recomputed for one layer at a time: a
    // product visits each layer once, forward or backward
    T[]? queryBuffer, gammaBuffer;
    int queryLayer = -1, gammaLayer = -1;
    Transformer<T>.RecomputeScratch? scratch;

    Transformer<T>.RecomputeScratch Scratch() => scratch ??= new(c, n, Trace.MlpFreezing == MlpFreezing.UpAndSigmoid);

    /// <summary>Layer l's MLP coefficient γ [n×I]: stored, or recomputed from the stream after attention.</summary>
    T[] Gamma(int l)
    {
        if (Trace.MlpCoefficient[l] is { } stored) return stored;
        if (gammaLayer != l)
        {
            gammaBuffer ??= Pinned.Array<T>((long)n * c.IntermediateSize);
            Model.RecomputeMlpCoefficient(l, Trace.ResidMid[l]!, n, Trace.MlpFreezing, Scratch(), gammaBuffer);
            gammaLayer = l;
        }
        return gammaBuffer!;
    }

    /// <summary>Layer l's q after its norm and RoPE [n×H·D]: stored, or recomputed from the stream entering the layer.</summary>
    T[] Query(int l)
    {
        if (Trace.AttnQ[l] is { } stored) return stored;
        if (queryLayer != l)
        {
            queryBuffer ??= Pinned.Array<T>((long)n * c.QDim);
            Model.RecomputeQuery(l, Trace.ResidPre[l], n, Scratch(), queryBuffer);
            queryLayer = l;
        }
        return queryBuffer!;
    }

    /// <summary>rows (t, b) of the intermediate activation ⊙= γ_t, the MLP's frozen coefficient.</summary>
    void ScaleByCoefficient(T[] z, T[] gate, RowLayout L, int fromPos)
    {
        int I = c.IntermediateSize;
        Parallel.For(fromPos, n, t =>
        {
            var g = gate.AsSpan(t * I, I);
            for (int r = L.Offset(t); r < L.Offset(t + 1); r++)
            {
                var row = z.AsSpan(r * I, I);
                TensorPrimitives.Multiply(row, g, row);
            }
        });
    }

    /// <summary>o[s, b, head h] = Σ_{t≤s} P_h[s,t] · v[t, b, kv head of h] for s ≥ q0 (column b's rows start at its first position).</summary>
    unsafe void MixForward(int l, T[] v, RowLayout L, T[] o, int q0)
    {
        if (Trace.AttnProbs[l] is not { } probs) { MixForwardRecomputed(l, v, L, o, q0); return; }
        int H = c.NumHeads, D = c.HeadDim, G = H / c.NumKvHeads, q = c.QDim, kv = c.KvDim, B = L.Columns;
        // One task per (head, batch column): its n×D values stay in cache while every query row sums over them.
        Parallel.For(0, H * B, hb =>
        {
            int h = hb / B, r = hb % B, j = h / G, p0 = L.First(r);
            fixed (T* pp = probs, pv = v, po = o)
            fixed (int* offs = L.Offsets)
                for (int s = Math.Max(p0, q0); s < n; s++)
                    WeightedRows(pp + (long)(h * n + s) * n + p0, 1, s + 1 - p0, pv + (long)r * kv + j * D, offs + p0, kv,
                        D, po + ((long)L.Offset(s) + r) * q + h * D, accumulate: false);
        });
    }

    /// <summary>Γ_v[t, b, kv head j] = Σ_{s≥t, s≥fromPos} Σ_{h: j(h)=j} P_h[s,t] · Γ_o[s, b, h], for every row (t, b).</summary>
    unsafe void MixBackward(int l, T[] go, RowLayout L, T[] gv, int fromPos)
    {
        if (Trace.AttnProbs[l] is not { } probs) { MixBackwardRecomputed(l, go, L, gv, fromPos); return; }
        int H = c.NumHeads, D = c.HeadDim, G = H / c.NumKvHeads, q = c.QDim, kv = c.KvDim, B = L.Columns;
        Parallel.For(0, c.NumKvHeads * B, jb =>
        {
            int j = jb / B, r = jb % B;
            fixed (T* pp = probs, pg = go, pv = gv)
            fixed (int* offs = L.Offsets)
                for (int t = L.First(r); t < n; t++)
                {
                    int s0 = Math.Max(t, fromPos);
                    T* dst = pv + ((long)L.Offset(t) + r) * kv + j * D;
                    // column t of P_h from row s0 down: stride n
                    for (int g = 0; g < G; g++)
                    {
                        int h = j * G + g;
                        WeightedRows(pp + (long)(h * n + s0) * n + t, n, n - s0, pg + (long)r * q + h * D, offs + s0, q,
                            D, dst, accumulate: g > 0);
                    }
                }
        });
    }

    // ---- attention probabilities recomputed blockwise (long inputs: the trace keeps q, k and row statistics) ----

    /// <summary>Rows (queries) or columns (keys) per recomputed block of P.</summary>
    const int ProbabilityBlock = 32;
    /// <summary>A recomputed block spans at least this many rows and columns, so its scores take the GEMM's packed path as the forward pass's did (same sums, bit for bit).</summary>
    internal const int MinBlock = 5;

    readonly ThreadLocal<T[]> probabilityScratch = new(() => []);

    /// <summary>
    /// P_h[s, t] for queries s ∈ [s0, s1) and keys t ∈ [t0, t1) into a per-thread block (row-major, (s1−s0)×(t1−t0)):
    /// the scores by the forward pass's own product c·q·kᵀ, then the forward's exp(x − max)/sum with the stored row
    /// maximum and normalizer (<see cref="Blocks{T}.ProbabilityRow"/>).
    /// </summary>
    T[] RecomputeProbabilities(int l, T[] query, int h, int s0, int s1, int t0, int t1)
    {
        int D = c.HeadDim, j = h / (c.NumHeads / c.NumKvHeads), rows = s1 - s0, cols = t1 - t0;
        var block = probabilityScratch.Value!;
        if (block.Length < rows * cols) probabilityScratch.Value = block = Pinned.Array<T>((long)rows * cols);
        MatMul.Run(Pinned.View(query, rows, D, (long)s0 * c.QDim + h * D, c.QDim), false,
            Pinned.View(Trace.AttnK[l]!, cols, D, (long)t0 * c.KvDim + j * D, c.KvDim), true, block, 0, cols, alpha: c.AttentionScale);
        var max = Trace.AttnRowMax[l]!; var sum = Trace.AttnRowSum[l]!;
        int? window = c.SlidingWindow[l];
        for (int s = s0; s < s1; s++)
            Blocks<T>.ProbabilityRow(block.AsSpan((s - s0) * cols, cols), s, t0, window, max[h * n + s], sum[h * n + s]);
        return block;
    }

    /// <summary><see cref="MixForward"/> with P rebuilt per (head, block of query rows).</summary>
    unsafe void MixForwardRecomputed(int l, T[] v, RowLayout L, T[] o, int q0)
    {
        int H = c.NumHeads, D = c.HeadDim, G = H / c.NumKvHeads, q = c.QDim, kv = c.KvDim, B = L.Columns;
        int blocks = (n - q0 + ProbabilityBlock - 1) / ProbabilityBlock;
        var query = Query(l);
        Parallel.For(0, H * blocks, task =>
        {
            int h = task / blocks, j = h / G;
            int s0 = q0 + task % blocks * ProbabilityBlock, s1 = Math.Min(n, s0 + ProbabilityBlock);
            int r0 = Math.Max(0, Math.Min(s0, s1 - MinBlock)), keys = Math.Max(s1, MinBlock);   // ≥ MinBlock rows and keys
            var P = RecomputeProbabilities(l, query, h, r0, s1, 0, keys);
            fixed (T* pp = P, pv = v, po = o)
            fixed (int* offs = L.Offsets)
                for (int r = 0; r < B; r++)
                {
                    int p0 = L.First(r);
                    for (int s = Math.Max(s0, p0); s < s1; s++)
                        WeightedRows(pp + (long)(s - r0) * keys + p0, 1, s + 1 - p0, pv + (long)r * kv + j * D, offs + p0, kv,
                            D, po + ((long)L.Offset(s) + r) * q + h * D, accumulate: false);
                }
        });
    }

    /// <summary><see cref="MixBackward"/> with P rebuilt per (kv head, block of key columns): each block's rows s ≥ its first key.</summary>
    unsafe void MixBackwardRecomputed(int l, T[] go, RowLayout L, T[] gv, int fromPos)
    {
        int H = c.NumHeads, D = c.HeadDim, G = H / c.NumKvHeads, q = c.QDim, kv = c.KvDim, B = L.Columns;
        int blocks = (n + ProbabilityBlock - 1) / ProbabilityBlock;
        var query = Query(l);
        Parallel.For(0, c.NumKvHeads * blocks, task =>
        {
            int j = task / blocks, t0 = task % blocks * ProbabilityBlock, t1 = Math.Min(n, t0 + ProbabilityBlock);
            int c0 = Math.Max(0, Math.Min(t0, t1 - MinBlock));                                // ≥ MinBlock key columns
            int sA = Math.Max(0, Math.Min(Math.Max(t0, fromPos), n - MinBlock));               // ≥ MinBlock query rows
            int cols = t1 - c0;
            for (int g = 0; g < G; g++)
            {
                int h = j * G + g;
                var P = RecomputeProbabilities(l, query, h, sA, n, c0, t1);
                fixed (T* pp = P, pg = go, pv = gv)
                fixed (int* offs = L.Offsets)
                    for (int r = 0; r < B; r++)
                        for (int t = Math.Max(t0, L.First(r)); t < t1; t++)
                        {
                            int s0 = Math.Max(t, fromPos);
                            // column t of P_h from row s0 down: stride cols
                            WeightedRows(pp + (long)(s0 - sA) * cols + (t - c0), cols, n - s0, pg + (long)r * q + h * D, offs + s0, q,
                                D, pv + ((long)L.Offset(t) + r) * kv + j * D, accumulate: g > 0);
                        }
            }
        });
    }

    /// <summary>
    /// dst[0…width) = (accumulate ? dst : 0) + Σ_{i&lt;count} w[i·wStride] · src[rowOffset[i]·rowWidth + 0…width): the
    /// attention mixing of one head and batch column, with register accumulators so each source row is read once per
    /// output row.
    /// </summary>
    static unsafe void WeightedRows(T* w, long wStride, int count, T* src, int* rowOffset, int rowWidth, int width, T* dst, bool accumulate)
    {
        int vc = Vector<T>.Count, c0 = 0;
        for (; c0 + 4 * vc <= width; c0 += 4 * vc)
        {
            Vector<T> a0 = Vector<T>.Zero, a1 = Vector<T>.Zero, a2 = Vector<T>.Zero, a3 = Vector<T>.Zero;
            for (int i = 0; i < count; i++)
            {
                T wi = w[i * wStride];
                if (wi == T.Zero) continue;   // masked (sliding window) or underflowed probabilities
                T* s = src + (long)rowOffset[i] * rowWidth + c0;
                var p = new Vector<T>(wi);
                a0 += p * Vector.Load(s); a1 += p * Vector.Load(s + vc); a2 += p * Vector.Load(s + 2 * vc); a3 += p * Vector.Load(s + 3 * vc);
            }
            T* dd = dst + c0;
            if (accumulate) { a0 += Vector.Load(dd); a1 += Vector.Load(dd + vc); a2 += Vector.Load(dd + 2 * vc); a3 += Vector.Load(dd + 3 * vc); }
            a0.Store(dd); a1.Store(dd + vc); a2.Store(dd + 2 * vc); a3.Store(dd + 3 * vc);
        }
        for (; c0 < width; c0++)
        {
            T acc = accumulate ? dst[c0] : T.Zero;
            for (int i = 0; i < count; i++) acc += w[i * wStride] * src[(long)rowOffset[i] * rowWidth + c0];
            dst[c0] = acc;
        }
    }

    Batch? cached;

    /// <summary>Buffers for a batch size, reused across calls (a FrozenMap is not for concurrent use), with this call's layout.</summary>
    Batch Workspace(int batch, int[] first)
    {
        if (cached?.BatchSize != batch) { cached = null; cached = new Batch(c, n, batch); }
        cached.Layout = new RowLayout(n, first);
        return cached;
    }

    /// <summary>Buffers for one batched product: up to n·B rows of each width the layer needs.</summary>
    sealed class Batch(ModelConfig c, int n, int batch)
    {
        public readonly int BatchSize = batch;
        public RowLayout Layout = null!;
        public readonly T[] H = Pinned.Array<T>((long)n * batch * c.HiddenSize);    // the state (residual stream or its cotangent)
        public readonly T[] A = Pinned.Array<T>((long)n * batch * c.HiddenSize);    // a branch output
        public readonly T[] G = Pinned.Array<T>((long)n * batch * c.HiddenSize);    // scaled copy of the state
        public readonly T[] Q = Pinned.Array<T>((long)n * batch * c.QDim);          // per-head attention output
        public readonly T[] Kv = Pinned.Array<T>((long)n * batch * c.KvDim);        // values
        T[]? i;
        // only the MLP's two weight products need it (not the one-matrix-per-position form, see MlpMatrixPays)
        public T[] I => i ??= Pinned.Array<T>((long)n * batch * c.IntermediateSize);
    }
}

/// <summary>When the frozen MLP is cheaper as one d×d matrix per position (see FrozenMap.MlpMatrixPays).</summary>
public static class FrozenMlp
{
    /// <summary>
    /// With <paramref name="rows"/> rows at a position: the two weight products cost 4·rows·d·I flops, forming
    /// M_t = W_down·diag(γ_t)·W_up and applying it 2·d²·I + 2·rows·d² (10 % margin for the extra product).
    /// </summary>
    public static bool MatrixPays(long d, long I, long rows) => rows == 0 || 10 * (d * I + rows * d) <= 9 * (2 * rows * I);
}

/// <summary>
/// The ragged row layout of one batched product. Batch column b is active from position first[b] on; columns are
/// ranked by first position (stable), so at position t the active ones are the ranks 0 … Count(t)−1 and sit in rows
/// Offset(t) … Offset(t+1)−1. With every column starting at 0 this is the plain position-major layout t·B + b.
/// </summary>
public sealed class RowLayout
{
    readonly int n;
    readonly int[] firstOfRank, columnOfRank;

    /// <summary>Offsets[t] = first row of position t (length n + 1; Offsets[n] = Rows).</summary>
    public int[] Offsets { get; }
    public int Columns => firstOfRank.Length;
    public int Rows => Offsets[n];

    public RowLayout(int n, ReadOnlySpan<int> first)
    {
        this.n = n;
        int B = first.Length;
        columnOfRank = Enumerable.Range(0, B).ToArray();
        var keys = first.ToArray();
        Array.Sort(keys, columnOfRank);   // not stable on ties, so re-sort the ranks of equal first positions
        firstOfRank = keys;
        for (int r0 = 0; r0 < B;)
        {
            int r1 = r0;
            while (r1 < B && keys[r1] == keys[r0]) r1++;
            Array.Sort(columnOfRank, r0, r1 - r0);
            r0 = r1;
        }
        Offsets = new int[n + 1];
        int active = 0;
        for (int t = 0; t < n; t++)
        {
            while (active < B && firstOfRank[active] <= t) active++;
            Offsets[t + 1] = Offsets[t] + active;
        }
    }

    public int Offset(int t) => Offsets[t];
    /// <summary>The batch column held by rank r (rank r is row Offset(t) + r at every position where it is active).</summary>
    public int Column(int rank) => columnOfRank[rank];
    /// <summary>The first position of rank r.</summary>
    public int First(int rank) => firstOfRank[rank];

    /// <summary>dense [n][B][width] → packed rows (inactive entries dropped).</summary>
    public void Pack<T>(ReadOnlySpan<T> dense, int width, Span<T> packed)
    {
        int B = Columns;
        for (int t = 0; t < n; t++)
            for (int r = 0; r < Offsets[t + 1] - Offsets[t]; r++)
                dense.Slice((t * B + columnOfRank[r]) * width, width).CopyTo(packed.Slice((Offsets[t] + r) * width, width));
    }

    /// <summary>packed rows → dense [n][B][width], zero where a column is inactive.</summary>
    public void Unpack<T>(ReadOnlySpan<T> packed, int width, Span<T> dense)
    {
        int B = Columns;
        dense[..(n * B * width)].Clear();
        for (int t = 0; t < n; t++)
            for (int r = 0; r < Offsets[t + 1] - Offsets[t]; r++)
                packed.Slice((Offsets[t] + r) * width, width).CopyTo(dense.Slice((t * B + columnOfRank[r]) * width, width));
    }
}
