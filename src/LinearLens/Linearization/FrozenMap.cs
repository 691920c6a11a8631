using System.Numerics;
using System.Numerics.Tensors;
using LinearLens.Loading;
using LinearLens.Models;
using LinearLens.Numerics;

namespace LinearLens.Linearization;

/// <summary>
/// The frozen (detached) network of one forward pass (architectures.md §3.4): every norm scale, activated gate and
/// attention probability held at its traced value, so that the map from the input embeddings (or from the residual
/// stream entering a layer) to any traced output is linear. It uses only the linear path — W_v, W_o, W_up, W_down
/// and the norm gains — never W_q, W_k or W_gate.
///
/// Products are batched: B tangents (JVP, J·v) or B cotangents (VJP, Jᵀ·u) travel together as one matrix of
/// n·B rows laid out position-major (row t·B + b), so every weight product is one GEMM over the whole batch and a
/// frozen per-position factor scales a contiguous block of B rows.
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

    /// <summary>The traced value at the target's site for the last position, before any final norm [d].</summary>
    public ReadOnlySpan<T> SiteValue(JacobianTarget t) => t.Key switch
    {
        OutputKey.Layer => Trace.ResidPre[t.Layer].AsSpan((n - 1) * d, d),
        OutputKey.Attn => Trace.AttnOut[t.Layer - 1].AsSpan((n - 1) * d, d),
        _ => Trace.MlpOut[t.Layer - 1].AsSpan((n - 1) * d, d),
    };

    /// <summary>ρ of the final norm frozen at the site value (for the model output: ln_final's own scale).</summary>
    public T OutputScale(JacobianTarget t)
    {
        if (t.Key == OutputKey.Layer && t.Layer == c.NumLayers) return Trace.FinalScale[n - 1];
        return Blocks<T>.RmsScale(SiteValue(t), T.CreateChecked(c.RmsNormEps));
    }

    /// <summary>The real output of the network at the target (what Σᵢ Jᵢ xᵢ must reconstruct) [d].</summary>
    public T[] Output(JacobianTarget t)
    {
        var y = new T[d];
        if (!t.FinalNorm) { SiteValue(t).CopyTo(y); return y; }
        if (t.Key == OutputKey.Layer && t.Layer == c.NumLayers) { Trace.Final.AsSpan((n - 1) * d, d).CopyTo(y); return y; }
        Blocks<T>.ScaleRows(SiteValue(t), 1, d, Model.FinalNormGain, [OutputScale(t)], y);
        return y;
    }

    // ---- gains of the four kinds of norm in a layer ----------------------------------------------------------

    T[] AttnInGain(int l) => Model.LayerNormGains(l).input;
    T[] MlpInGain(int l) => c.IsGemma ? Model.LayerNormGains(l).preFeedforward! : Model.LayerNormGains(l).postAttention;
    T[]? AttnOutGain(int l) => c.IsGemma ? Model.LayerNormGains(l).postAttention : null;
    T[]? MlpOutGain(int l) => c.IsGemma ? Model.LayerNormGains(l).postFeedforward : null;

    // ---- forward product -------------------------------------------------------------------------------------

    /// <summary>
    /// J·v for B tangents at once: <paramref name="tangents"/> [n][B][d] (position-major, the perturbation of every
    /// input row) → <paramref name="outputs"/> [B][d].
    /// </summary>
    public void Jvp(JacobianTarget t, T[] tangents, int batch, T[] outputs)
    {
        t.Validate(c.NumLayers);
        var ws = Workspace(batch);
        tangents.AsSpan(0, ws.Rows * d).CopyTo(ws.H);
        // Causality: positions before the first non-zero tangent stay zero through every layer, so skip them.
        int p0 = 0;
        while (p0 < n - 1 && !tangents.AsSpan(p0 * batch * d, batch * d).ContainsAnyExcept(T.Zero)) p0++;
        T[]? tap = null;
        for (int l = t.FirstLayer; l < t.Layer; l++)
            tap = ForwardLayer(l, ws, l == t.Layer - 1 ? t.Key : OutputKey.Layer, p0);
        var last = tap!.AsSpan((n - 1) * batch * d, batch * d);
        if (t.FinalNorm)
        {
            T rho = OutputScale(t);
            for (int b = 0; b < batch; b++)
                Blocks<T>.ScaleRows(last.Slice(b * d, d), 1, d, Model.FinalNormGain, [rho], outputs.AsSpan(b * d, d));
        }
        else last.CopyTo(outputs);
    }

    /// <summary>
    /// One layer of the frozen map on ws.H for positions p0 … n−1 (earlier rows are zero and stay zero); returns
    /// the array holding the requested tap (H for Layer).
    /// </summary>
    T[] ForwardLayer(int l, Batch ws, OutputKey tap, int p0)
    {
        var w = Model.Checkpoint.Layers[l];
        int B = ws.B, r0 = p0 * B, rows = ws.Rows - r0;
        void Linear(T[] x, MatrixView weight, T[] y) =>
            MatMul.Run(Pinned.View(x, rows, weight.Cols, (long)r0 * weight.Cols), false, weight, true, y, (long)r0 * weight.Rows, weight.Rows);
        var h = ws.H.AsSpan(r0 * d, rows * d);
        var a = ws.A.AsSpan(r0 * d, rows * d);
        // attention branch: a = ρ_in·w_in ⊙ h;  v = W_v a;  o_s = Σ_t P[s,t] v_t;  attn = W_o o
        ScaleRows(ws.H, d, AttnInGain(l), Trace.AttnNormScale[l], B, ws.A, p0);
        Linear(ws.A, w.V, ws.Kv);
        MixForward(Trace.AttnProbs[l], ws.Kv, B, ws.Q, p0);
        Linear(ws.Q, w.O, ws.A);
        if (AttnOutGain(l) is { } ga) ScaleRows(ws.A, d, ga, Trace.AttnOutNormScale[l]!, B, ws.A, p0);
        if (tap == OutputKey.Attn) return ws.A;
        TensorPrimitives.Add(h, a, h);
        // MLP branch: b = ρ·w ⊙ h';  z = γ ⊙ W_up b;  m = W_down z
        ScaleRows(ws.H, d, MlpInGain(l), Trace.MlpNormScale[l], B, ws.A, p0);
        Linear(ws.A, w.Up, ws.I);
        ScaleByGate(ws.I, Trace.Gate[l], B, p0);
        Linear(ws.I, w.Down, ws.A);
        if (MlpOutGain(l) is { } gm) ScaleRows(ws.A, d, gm, Trace.MlpOutNormScale[l]!, B, ws.A, p0);
        if (tap == OutputKey.Mlp) return ws.A;
        TensorPrimitives.Add(h, a, h);
        return ws.H;
    }

    // ---- transpose product -----------------------------------------------------------------------------------

    /// <summary>
    /// Jᵀ·u for B cotangents at once: <paramref name="cotangents"/> [B][d] on the output → <paramref name="inputCotangents"/>
    /// [n][B][d] (position-major): row (i, b) is uᵦᵀ Jᵢ, i.e. for unit uᵦ = e_k it is row k of Jᵢ.
    /// </summary>
    public void Vjp(JacobianTarget t, ReadOnlySpan<T> cotangents, int batch, T[] inputCotangents)
    {
        t.Validate(c.NumLayers);
        var ws = Workspace(batch);
        int R = ws.Rows, last = (n - 1) * batch * d;
        Array.Clear(ws.H, 0, R * d);
        // the final norm with frozen scale: Γ = ρ·(w_f ⊙ u), at the last position only
        var top = ws.H.AsSpan(last, batch * d);
        cotangents[..(batch * d)].CopyTo(top);
        if (t.FinalNorm)
        {
            T rho = OutputScale(t);
            for (int b = 0; b < batch; b++)
            {
                var row = top.Slice(b * d, d);
                TensorPrimitives.Multiply(row, Model.FinalNormGain, row);
                TensorPrimitives.Multiply(row, rho, row);
            }
        }
        int l = t.Layer - 1;
        switch (t.Key)
        {
            case OutputKey.Layer: BackwardLayer(l, ws, fromPos: n - 1); break;
            case OutputKey.Mlp:
                // Γ enters at the MLP output: Γ_mid = MLPᵀ Γ (no residual path), then through attention.
                MlpBackward(l, ws, fromPos: n - 1, addToH: false);
                AttnBackward(l, ws, fromPos: n - 1);
                break;
            case OutputKey.Attn:
                ws.H.AsSpan(last, batch * d).CopyTo(ws.G.AsSpan(last));
                Array.Clear(ws.H, 0, R * d);
                AttnBackwardFrom(l, ws, ws.G, fromPos: n - 1);
                break;
        }
        for (l = t.Layer - 2; l >= t.FirstLayer; l--) BackwardLayer(l, ws, fromPos: 0);
        ws.H.AsSpan(0, R * d).CopyTo(inputCotangents);
    }

    /// <summary>Γ (ws.H, w.r.t. the residual after layer l) → Γ w.r.t. the residual entering layer l. Rows before fromPos are zero on entry.</summary>
    void BackwardLayer(int l, Batch ws, int fromPos)
    {
        MlpBackward(l, ws, fromPos, addToH: true);
        AttnBackward(l, ws, fromPos);
    }

    /// <summary>ws.H ← (addToH ? ws.H : 0) + MLPᵀ ws.H over rows from fromPos (the residual h' = h + MLP(h') transposed).</summary>
    void MlpBackward(int l, Batch ws, int fromPos, bool addToH)
    {
        var w = Model.Checkpoint.Layers[l];
        int B = ws.BatchSize, r0 = fromPos * B, rows = ws.Rows - r0;
        long off = (long)r0 * d;
        T[] src = ws.H;
        if (MlpOutGain(l) is { } gm) { ScaleRows(ws.H, d, gm, Trace.MlpOutNormScale[l]!, B, ws.G, fromPos); src = ws.G; }
        // Γ_z = W_downᵀ Γ ⊙ γ;  Γ_b = W_upᵀ Γ_z;  Γ_h' += ρ·w ⊙ Γ_b
        MatMul.Run(Pinned.View(src, rows, d, off), false, w.Down, false, ws.I, (long)r0 * c.IntermediateSize, c.IntermediateSize);
        ScaleByGate(ws.I, Trace.Gate[l], B, fromPos);
        MatMul.Run(Pinned.View(ws.I, rows, c.IntermediateSize, (long)r0 * c.IntermediateSize), false, w.Up, false, ws.A, off, d);
        if (!addToH) Array.Clear(ws.H, 0, ws.Rows * d);
        ScaleRowsAdd(ws.A, MlpInGain(l), Trace.MlpNormScale[l], B, ws.H, fromPos);
    }

    /// <summary>ws.H ← ws.H + Attnᵀ ws.H (the residual h' = h + Attn(h) transposed).</summary>
    void AttnBackward(int l, Batch ws, int fromPos)
    {
        int B = ws.BatchSize;
        T[] src = ws.H;
        if (AttnOutGain(l) is { } ga) { ScaleRows(ws.H, d, ga, Trace.AttnOutNormScale[l]!, B, ws.G, fromPos); src = ws.G; }
        else { ws.H.AsSpan(fromPos * B * d, (ws.Rows - fromPos * B) * d).CopyTo(ws.G.AsSpan(fromPos * B * d)); src = ws.G; }
        AttnBackwardFrom(l, ws, src, fromPos, preScaled: true);
    }

    /// <summary>ws.H += Attnᵀ Γ where Γ = src rows from fromPos (post-attention norm already applied when preScaled).</summary>
    void AttnBackwardFrom(int l, Batch ws, T[] src, int fromPos, bool preScaled = false)
    {
        var w = Model.Checkpoint.Layers[l];
        int B = ws.BatchSize, r0 = fromPos * B, rows = ws.Rows - r0;
        if (!preScaled && AttnOutGain(l) is { } ga) { ScaleRows(src, d, ga, Trace.AttnOutNormScale[l]!, B, src, fromPos); }
        // Γ_o = W_oᵀ Γ;  Γ_v[t] = Σ_{s≥t} Σ_h P_h[s,t] Γ_o[s,h];  Γ_a = W_vᵀ Γ_v;  Γ_h += ρ_in·w_in ⊙ Γ_a
        MatMul.Run(Pinned.View(src, rows, d, (long)r0 * d), false, w.O, false, ws.Q, (long)r0 * c.QDim, c.QDim);
        MixBackward(Trace.AttnProbs[l], ws.Q, B, ws.Kv, fromPos);
        MatMul.Run(Pinned.View(ws.Kv, ws.Rows, c.KvDim), false, w.V, false, ws.A, 0, d);
        ScaleRowsAdd(ws.A, AttnInGain(l), Trace.AttnNormScale[l], B, ws.H, 0);
    }

    // ---- the frozen elementwise pieces -----------------------------------------------------------------------

    /// <summary>dst rows (t, b) = gain ⊙ (src · ρ[t]) for positions from fromPos.</summary>
    void ScaleRows(T[] src, int width, T[] gain, T[] rho, int B, T[] dst, int fromPos = 0) =>
        Parallel.For(fromPos, n, t =>
        {
            for (int b = 0; b < B; b++)
            {
                long o = ((long)t * B + b) * width;
                var s = src.AsSpan((int)o, width);
                var dd = dst.AsSpan((int)o, width);
                TensorPrimitives.Multiply(s, rho[t], dd);
                TensorPrimitives.Multiply(dd, gain, dd);
            }
        });

    /// <summary>dst rows (t, b) += gain ⊙ (src · ρ[t]) for positions from fromPos.</summary>
    void ScaleRowsAdd(T[] src, T[] gain, T[] rho, int B, T[] dst, int fromPos) =>
        Parallel.For(fromPos, n, t =>
        {
            Span<T> tmp = new T[d];
            for (int b = 0; b < B; b++)
            {
                long o = ((long)t * B + b) * d;
                TensorPrimitives.Multiply(gain, rho[t], tmp);
                TensorPrimitives.MultiplyAdd(src.AsSpan((int)o, d), tmp, dst.AsSpan((int)o, d), dst.AsSpan((int)o, d));
            }
        });

    /// <summary>rows (t, b) of the intermediate activation ⊙= γ_t, the frozen activated gate.</summary>
    void ScaleByGate(T[] z, T[] gate, int B, int fromPos)
    {
        int I = c.IntermediateSize;
        Parallel.For(fromPos, n, t =>
        {
            var g = gate.AsSpan(t * I, I);
            for (int b = 0; b < B; b++)
            {
                var row = z.AsSpan((int)(((long)t * B + b) * I), I);
                TensorPrimitives.Multiply(row, g, row);
            }
        });
    }

    /// <summary>o[s, b, head h] = Σ_{p0≤t≤s} P_h[s,t] · v[t, b, kv head of h] for s ≥ p0 (v is zero before p0).</summary>
    void MixForward(T[] probs, T[] v, int B, T[] o, int p0)
    {
        int H = c.NumHeads, D = c.HeadDim, G = H / c.NumKvHeads, q = c.QDim, kv = c.KvDim;
        Parallel.For(p0, n, s =>
        {
            o.AsSpan(s * B * q, B * q).Clear();
            for (int h = 0; h < H; h++)
            {
                int j = h / G;
                for (int t = p0; t <= s; t++)
                {
                    T p = probs[(h * n + s) * n + t];
                    if (p == T.Zero) continue;
                    for (int b = 0; b < B; b++)
                    {
                        var dst = o.AsSpan((s * B + b) * q + h * D, D);
                        TensorPrimitives.MultiplyAdd(v.AsSpan((t * B + b) * kv + j * D, D), p, dst, dst);
                    }
                }
            }
        });
    }

    /// <summary>Γ_v[t, b, kv head j] = Σ_{s≥t, s≥fromPos} Σ_{h: j(h)=j} P_h[s,t] · Γ_o[s, b, h], for every t.</summary>
    void MixBackward(T[] probs, T[] go, int B, T[] gv, int fromPos)
    {
        int H = c.NumHeads, D = c.HeadDim, G = H / c.NumKvHeads, q = c.QDim, kv = c.KvDim;
        Parallel.For(0, n, t =>
        {
            gv.AsSpan(t * B * kv, B * kv).Clear();
            for (int h = 0; h < H; h++)
            {
                int j = h / G;
                for (int s = Math.Max(t, fromPos); s < n; s++)
                {
                    T p = probs[(h * n + s) * n + t];
                    if (p == T.Zero) continue;
                    for (int b = 0; b < B; b++)
                    {
                        var dst = gv.AsSpan((t * B + b) * kv + j * D, D);
                        TensorPrimitives.MultiplyAdd(go.AsSpan((s * B + b) * q + h * D, D), p, dst, dst);
                    }
                }
            }
        });
    }

    Batch? cached;

    /// <summary>Buffers for a batch size, reused across calls (a FrozenMap is not for concurrent use).</summary>
    Batch Workspace(int batch)
    {
        if (cached?.BatchSize != batch) { cached = null; cached = new Batch(c, n, batch); }
        return cached;
    }

    /// <summary>Buffers for one batched product: n·B rows of each width the layer needs.</summary>
    sealed class Batch(ModelConfig c, int n, int batch)
    {
        public readonly int BatchSize = batch;
        public readonly int Rows = n * batch;
        public readonly T[] H = Pinned.Array<T>((long)n * batch * c.HiddenSize);    // the state (residual stream or its cotangent)
        public readonly T[] A = Pinned.Array<T>((long)n * batch * c.HiddenSize);    // a branch output
        public readonly T[] G = Pinned.Array<T>((long)n * batch * c.HiddenSize);    // scaled copy of the state
        public readonly T[] Q = Pinned.Array<T>((long)n * batch * c.QDim);          // per-head attention output
        public readonly T[] Kv = Pinned.Array<T>((long)n * batch * c.KvDim);        // values
        public readonly T[] I = Pinned.Array<T>((long)n * batch * c.IntermediateSize);
        public int B => BatchSize;
    }
}
