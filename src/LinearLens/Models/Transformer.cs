using System.Numerics;
using LinearLens.Linearization;
using LinearLens.Loading;
using LinearLens.Numerics;

namespace LinearLens.Models;

/// <summary>Result of one forward pass over a prompt.</summary>
public sealed record ForwardResult<T>(int Tokens, T[] Final, T[] Logits, bool AllLogits, FrozenTrace<T>? Trace)
    where T : unmanaged, IFloatingPointIeee754<T>;

/// <summary>Keys (after norm and RoPE) and values of every layer for positions 0 … Length−1.</summary>
public sealed class KvCache<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    public T[][] Keys { get; }
    public T[][] Values { get; }
    public int Capacity { get; }
    public int Length { get; internal set; }

    public KvCache(ModelConfig c, int capacity)
    {
        Capacity = capacity;
        Keys = Enumerable.Range(0, c.NumLayers).Select(_ => Pinned.Array<T>((long)capacity * c.KvDim)).ToArray();
        Values = Enumerable.Range(0, c.NumLayers).Select(_ => Pinned.Array<T>((long)capacity * c.KvDim)).ToArray();
    }
}

/// <summary>
/// The decoder forward pass in compute type T (double: true float64; float: Hugging Face float32). One path from
/// token ids to logits: embed, then every layer through the one skeleton all families share (<see cref="Layer"/>,
/// with the norms, biases and q/k norm the family's description gives), then final norm and LM head. Weights stay
/// memory-mapped in their stored dtype and are widened inside the GEMM. Passing a <see cref="FrozenTrace{T}"/>
/// records every factor the detached Jacobian freezes.
/// </summary>
public sealed class Transformer<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    public Checkpoint Checkpoint { get; }
    public ModelConfig Config { get; }
    readonly T eps;
    readonly T[] finalGain;
    readonly LayerParams<T>[] layerParams;
    readonly Dictionary<(RopeSpec, bool), RopeTable<T>> ropeTables = new();

    public Transformer(Checkpoint checkpoint)
    {
        Checkpoint = checkpoint;
        Config = checkpoint.Config;
        eps = T.CreateChecked(Config.RmsNormEps);
        finalGain = Gain(checkpoint.FinalNorm)!;
        layerParams = checkpoint.Layers.Select(w => new LayerParams<T>(w,
            Gain(w.AttnInNorm), Gain(w.AttnOutNorm), Gain(w.MlpInNorm), Gain(w.MlpOutNorm), Gain(w.QNorm), Gain(w.KNorm),
            Widen(w.QBias), Widen(w.KBias), Widen(w.VBias), Widen(w.OBias),
            new MlpBiases<T>(Widen(w.GateBias), Widen(w.UpBias), Widen(w.DownBias)))).ToArray();
    }

    public static string DTypeName => typeof(T) == typeof(double) ? "float64" : "float32";
    public int Hidden => Config.HiddenSize;

    /// <summary>The effective gain of a stored norm weight, in T: w, or 1 + w where gains are stored as offsets (Gemma).</summary>
    T[]? Gain(StoredTensor? weight)
    {
        var g = Widen(weight);
        if (g is not null && Config.NormGainOffset) for (int i = 0; i < g.Length; i++) g[i] = T.One + g[i];
        return g;
    }

    static T[]? Widen(StoredTensor? t)
    {
        if (t is not { } w) return null;
        var v = new T[w.Count];
        for (long i = 0; i < v.Length; i++) v[i] = T.CreateChecked(w[i]);
        return v;
    }

    /// <summary>Layer l's weights with its gains and biases widened to T, for the engines that apply the (frozen) layer.</summary>
    public LayerParams<T> Params(int l) => layerParams[l];
    public T[] FinalNormGain => finalGain;
    public T Eps => eps;

    /// <summary>The RoPE table layer l uses for a sequence of `length` positions (longrope: its factors depend on it).</summary>
    public RopeTable<T> RopeFor(int layer, int length)
    {
        var spec = Config.Rope[layer];
        var key = (spec, spec.UsesLongFactors(length));
        lock (ropeTables)
        {
            if (!ropeTables.TryGetValue(key, out var t) || t.Capacity < length)
                ropeTables[key] = t = new RopeTable<T>(spec, Config.HeadDim, Math.Max(length, 64), key.Item2);
            return t;
        }
    }

    /// <summary>Checks ids against the vocabulary and the position limit.</summary>
    public void Validate(ReadOnlySpan<int> ids, int extraPositions = 0)
    {
        if (ids.Length == 0) throw new LinearLensException("the input has no tokens (give a non-empty --text or --token-ids)");
        foreach (int id in ids)
            if ((uint)id >= (uint)Config.VocabSize)
                throw new LinearLensException($"token id {id} is outside the vocabulary 0…{Config.VocabSize - 1}");
        if (ids.Length + extraPositions > Config.MaxPositions)
            throw new LinearLensException($"{ids.Length} tokens{(extraPositions > 0 ? $" + {extraPositions} new" : "")} exceed max_position_embeddings = {Config.MaxPositions}; shorten the input");
    }

    /// <summary>Input embeddings [n×d]: rows of E, times √d (rounded to T) where the family scales them (Gemma).</summary>
    public T[] Embed(ReadOnlySpan<int> ids)
    {
        int d = Hidden;
        var x = Pinned.Array<T>((long)ids.Length * d);
        T scale = Config.ScalesEmbeddings ? T.CreateChecked(Math.Sqrt(d)) : T.One;
        var e = Checkpoint.Embedding;
        var row = new double[d];
        for (int r = 0; r < ids.Length; r++)
        {
            e.DecodeRow(ids[r], row);   // one row of a quantized table decoded on lookup
            for (int k = 0; k < d; k++) x[r * d + k] = T.CreateChecked(row[k]) * scale;
        }
        return x;
    }

    /// <summary>Forward pass over a prompt from position 0, optionally recording the frozen trace.</summary>
    public ForwardResult<T> Forward(ReadOnlySpan<int> ids, bool allLogits = false, bool trace = false, bool nonlinear = false,
        DetachPolicy detach = DetachPolicy.Ours, bool? storeProbabilities = null, bool? storeCoefficients = null)
    {
        Validate(ids);
        return ForwardEmbeddings(Embed(ids), ids.Length, allLogits, trace, nonlinear, detach, storeProbabilities, storeCoefficients);
    }

    /// <summary>Forward pass from given input embeddings x [n×d] (Gemma: already scaled), no cache kept.</summary>
    /// <param name="nonlinear">Also record what the ordinary (non-frozen) Jacobian needs (implies trace).</param>
    /// <param name="storeProbabilities">See <see cref="FrozenTrace{T}(ModelConfig, int, DetachPolicy, bool, bool?, bool?)"/>, as <paramref name="storeCoefficients"/>.</param>
    public ForwardResult<T> ForwardEmbeddings(T[] x, int n, bool allLogits = false, bool trace = false, bool nonlinear = false,
        DetachPolicy detach = DetachPolicy.Ours, bool? storeProbabilities = null, bool? storeCoefficients = null)
    {
        var cache = new KvCache<T>(Config, n);
        var tr = trace || nonlinear ? new FrozenTrace<T>(Config, n, detach, nonlinear, storeProbabilities, storeCoefficients) : null;
        var final = Run(x, n, cache, tr);
        tr?.KeepKeys(cache.Keys);
        if (tr is { RecomputesProbabilities: true })
        {
            // a long input: the values and the layer workspace (0.7 GB at 2,048 Qwen3-0.6B tokens) are garbage now, and the
            // products that follow run for minutes — hand the memory back before they start rather than carry it as RSS
            cache = null!;
            GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
        }
        var logits = Logits(final, n, allLogits ? 0 : n - 1);
        CheckFinite(logits, "the logits");
        return new ForwardResult<T>(n, final, logits, allLogits, tr);
    }

    /// <summary>
    /// Runs `rows` new positions (embeddings x [rows×d]) through every layer, appending their keys and values to
    /// the cache; returns the final-normed hidden states [rows×d].
    /// </summary>
    public T[] Run(T[] x, int rows, KvCache<T> cache, FrozenTrace<T>? trace = null, ResidualHook<T>? hook = null)
    {
        int startPos = cache.Length, d = Hidden;
        if (startPos + rows > cache.Capacity) throw new InvalidOperationException("KV cache is full");
        var h = Pinned.Array<T>((long)rows * d);
        x.AsSpan(0, rows * d).CopyTo(h);
        if (trace is not null) x.AsSpan(0, rows * d).CopyTo(trace.Embeddings);
        var ws = new Workspace(Config, rows, startPos + rows);
        for (int l = 0; l < Config.NumLayers; l++)
        {
            if (trace is not null) h.CopyTo(trace.ResidPre[l], 0);
            Layer(l, h, rows, startPos, cache, RopeFor(l, startPos + rows), ws, trace);
            CheckFinite(h.AsSpan(0, rows * d), $"the residual stream after layer {l + 1}", l);
            hook?.Invoke(l + 1, h, rows, startPos);
        }
        cache.Length = startPos + rows;
        var y = Pinned.Array<T>((long)rows * d);
        Blocks<T>.RmsNorm(h, rows, d, finalGain, eps, y, trace is null ? default : trace.FinalScale);
        if (trace is not null) { h.CopyTo(trace.ResidPre[Config.NumLayers], 0); y.CopyTo(trace.Final, 0); }
        return y;
    }

    /// <summary>
    /// One decoder layer, the skeleton every family shares (architectures.md §1.6), each norm present or not as the
    /// family's description says:
    ///   x = N_attn_in(h);  q, k, v = W_q x, W_k x, W_v x (+ biases);  q, k ← q/k norm, RoPE;  a = W_o·Attn(q, k, v) (+ b_o)
    ///   h ← h + N_attn_out(a)
    ///   x = N_mlp_in(h);   m = W_down(act(W_gate x) ⊙ W_up x) (+ biases)
    ///   h ← h + N_mlp_out(m)
    /// Without a pre-norm (OLMo 2) x is the residual stream itself.
    /// </summary>
    void Layer(int l, T[] h, int rows, int startPos, KvCache<T> cache, RopeTable<T> rope, Workspace ws, FrozenTrace<T>? trace)
    {
        int n = rows * Hidden;
        var p = layerParams[l];
        var nl = trace?.Nonlinear;

        var x = Norm(h, rows, p.AttnIn, ws.X, trace?.AttnInScale[l], ws);
        QkvRope(l, x, rows, startPos, cache, rope, ws, nl);
        if (trace?.AttnQ[l] is { } tq) Keep(ws.Q, tq);   // k: the cache itself (ForwardEmbeddings hands it to the trace)
        Blocks<T>.Attention(ws.Q, rows, startPos, cache.Keys[l], cache.Values[l], Config, Config.SlidingWindow[l], ws.Scores, ws.O,
            trace?.AttnProbs[l], trace?.AttnRowMax[l], trace?.AttnRowSum[l]);
        Blocks<T>.Linear(ws.O, rows, p.Weights.O, p.OBias, ws.A);
        if (trace?.AttnRaw[l] is { } attnRaw) KeepLast(ws.A, rows, attnRaw);   // before its post-norm
        if (nl?.AttnRaw[l] is { } attnRawAll) Keep(ws.A, attnRawAll);
        Norm(ws.A, rows, p.AttnOut, ws.A, trace?.AttnOutScale[l], ws);
        if (trace is not null) KeepLast(ws.A, rows, trace.AttnOut[l]);
        AddInto(h, ws.A, n);
        if (trace?.ResidMid[l] is { } mid) Keep(h, mid);

        x = Norm(h, rows, p.MlpIn, ws.X, trace?.MlpInScale[l], ws);
        Blocks<T>.GatedMlp(x, rows, p.Weights, p.Mlp, Config.Activation, ws.Gate, ws.Up, ws.A,
            trace?.MlpFreezing ?? MlpFreezing.Gate, trace?.MlpCoefficient[l], nl?.GatePre[l], nl?.Up[l]);
        if (trace?.MlpRaw[l] is { } mlpRaw) KeepLast(ws.A, rows, mlpRaw);
        if (nl?.MlpRaw[l] is { } mlpRawAll) Keep(ws.A, mlpRawAll);
        Norm(ws.A, rows, p.MlpOut, ws.A, trace?.MlpOutScale[l], ws);
        if (trace is not null) KeepLast(ws.A, rows, trace.MlpOut[l]);
        AddInto(h, ws.A, n);
    }

    /// <summary>RMSNorm of each row with the given gain into dst (its scales into `scale` when recording); no gain: x itself.</summary>
    T[] Norm(T[] x, int rows, T[]? gain, T[] dst, T[]? scale, Workspace ws) => Norm(x, rows, gain, dst, scale ?? ws.Scale);

    T[] Norm(T[] x, int rows, T[]? gain, T[] dst, T[] scale)
    {
        if (gain is null) return x;
        Blocks<T>.RmsNorm(x, rows, Hidden, gain, eps, dst, scale);
        return dst;
    }

    /// <summary>logits = W_lm · y for rows first…rows−1 of y [rows×d].</summary>
    public T[] Logits(T[] y, int rows, int first)
    {
        var logits = Pinned.Array<T>((long)(rows - first) * Config.VocabSize);
        MatMul.Run(Pinned.View(y, rows - first, Hidden, (long)first * Hidden), false, Checkpoint.LmHead, true, logits, 0, Config.VocabSize);
        return logits;
    }

    /// <summary>
    /// Stops with one line when a hidden state or the logits are no longer finite, naming where — and the first tensor of
    /// that layer holding a non-finite weight, when one does (a corrupt or overflowing checkpoint).
    /// </summary>
    void CheckFinite(ReadOnlySpan<T> values, string what, int layer = -1)
    {
        foreach (var v in values)
            if (!T.IsFinite(v))
            {
                string culprit = layer >= 0 ? Checkpoint.FirstNonFiniteTensor(layer) is { } name ? $"; tensor '{name}' holds non-finite weights" : "" : "";
                throw new LinearLensException($"{what} became non-finite ({v}){culprit}; the checkpoint's weights or the input overflow {DTypeName} ({(DTypeName == "float32" ? "try --dtype float64, or check the file" : "check the file, or give smaller inputs")})");
            }
    }

    /// <summary>Scratch buffers of one Run call, sized for its rows.</summary>
    sealed class Workspace(ModelConfig c, int rows, int keys)
    {
        public readonly T[] X = Pinned.Array<T>((long)rows * c.HiddenSize);
        public readonly T[] Q = Pinned.Array<T>((long)rows * c.QDim);
        public readonly T[] K = Pinned.Array<T>((long)rows * c.KvDim);
        public readonly T[] V = Pinned.Array<T>((long)rows * c.KvDim);
        public readonly T[] O = Pinned.Array<T>((long)rows * c.QDim);
        public readonly T[] A = Pinned.Array<T>((long)rows * c.HiddenSize);
        public readonly T[] Scores = Pinned.Array<T>((long)rows * keys);
        public readonly T[] Gate = Pinned.Array<T>((long)rows * c.IntermediateSize);
        public readonly T[] Up = Pinned.Array<T>((long)rows * c.IntermediateSize);
        public readonly T[] Scale = new T[rows];
        public readonly T[] HeadScale = new T[rows * Math.Max(c.NumHeads, c.NumKvHeads)];
    }

    /// <summary>q, k, v projections of x (+ biases); q/k norms (per head or over the whole projection); RoPE; k, v into the cache.</summary>
    void QkvRope(int l, T[] x, int rows, int startPos, KvCache<T> cache, RopeTable<T> rope, Workspace ws, NonlinearTrace<T>? nl)
    {
        var p = layerParams[l];
        var c = Config;
        Query(l, x, rows, startPos, rope, ws.Q, nl is null ? ws.HeadScale : nl.QNormScale[l], nl?.QRaw[l], nl?.QRot[l]);
        Blocks<T>.Linear(x, rows, p.Weights.K, p.KBias, ws.K);
        Blocks<T>.Linear(x, rows, p.Weights.V, p.VBias, ws.V);
        if (nl is not null) { Keep(ws.K, nl.KRaw[l]); Keep(ws.V, nl.V[l]); }
        if (p.KNorm is { } kg)
        {
            var (kRows, kLen) = c.QkNorm == QkNormKind.Whole ? (rows, c.KvDim) : (rows * c.NumKvHeads, c.HeadDim);
            Blocks<T>.RmsNorm(ws.K, kRows, kLen, kg, eps, ws.K, nl is null ? ws.HeadScale : nl.KNormScale[l]);
        }
        Blocks<T>.Rope(ws.K, rows, c.NumKvHeads, c.HeadDim, rope, startPos);
        if (nl is not null) Keep(ws.K, nl.KRot[l]);
        ws.K.AsSpan(0, rows * c.KvDim).CopyTo(cache.Keys[l].AsSpan(startPos * c.KvDim));
        ws.V.AsSpan(0, rows * c.KvDim).CopyTo(cache.Values[l].AsSpan(startPos * c.KvDim));
    }

    /// <summary>
    /// q = RoPE(N_q(W_q x + b_q)) for rows at positions startPos…, the query as attention sees it (its norm per head over
    /// D — Qwen 3, Gemma 3 — or over the whole H·D projection — OLMo 2); the raw projection and the rotated result are
    /// kept where asked.
    /// </summary>
    void Query(int l, T[] x, int rows, int startPos, RopeTable<T> rope, T[] q, T[] headScale, T[]? raw, T[]? rotated)
    {
        var p = layerParams[l];
        var c = Config;
        Blocks<T>.Linear(x, rows, p.Weights.Q, p.QBias, q);
        if (raw is not null) Keep(q, raw);
        if (p.QNorm is { } qg)
        {
            var (qRows, qLen) = c.QkNorm == QkNormKind.Whole ? (rows, c.QDim) : (rows * c.NumHeads, c.HeadDim);
            Blocks<T>.RmsNorm(q, qRows, qLen, qg, eps, q, headScale);
        }
        Blocks<T>.Rope(q, rows, c.NumHeads, c.HeadDim, rope, startPos);
        if (rotated is not null) Keep(q, rotated);
    }

    /// <summary>Scratch for <see cref="RecomputeQuery"/> and <see cref="RecomputeMlpCoefficient"/> over n prompt rows.</summary>
    public sealed class RecomputeScratch(ModelConfig c, int n, bool up)
    {
        public readonly T[] X = Pinned.Array<T>((long)n * c.HiddenSize);
        public readonly T[] Scale = new T[n];
        public readonly T[] HeadScale = new T[n * Math.Max(c.NumHeads, c.NumKvHeads)];
        public readonly T[]? Up = up ? Pinned.Array<T>((long)n * c.IntermediateSize) : null;
    }

    /// <summary>
    /// Layer l's q (after its norm and RoPE) for the n prompt positions, from the residual stream entering the layer, by
    /// the forward pass's own operations on the same rows — bit for bit the query it attended with. A long-input trace
    /// keeps the n·d stream instead of the n·H·D query.
    /// </summary>
    public void RecomputeQuery(int l, T[] residPre, int n, RecomputeScratch s, T[] q)
    {
        var x = Norm(residPre, n, layerParams[l].AttnIn, s.X, s.Scale);
        Query(l, x, n, 0, RopeFor(l, n), q, s.HeadScale, null, null);
    }

    /// <summary>Layer l's frozen MLP coefficient γ [n×I] from the stream after attention, by the forward's own operations (see <see cref="Blocks{T}.MlpCoefficient"/>).</summary>
    public void RecomputeMlpCoefficient(int l, T[] residMid, int n, MlpFreezing freezing, RecomputeScratch s, T[] gate)
    {
        var p = layerParams[l];
        var x = Norm(residMid, n, p.MlpIn, s.X, s.Scale);
        Blocks<T>.MlpCoefficient(x, n, p.Weights, p.Mlp, Config.Activation, freezing, gate, s.Up, gate);
    }

    static void AddInto(T[] h, T[] branch, int count) =>
        System.Numerics.Tensors.TensorPrimitives.Add(h.AsSpan(0, count), branch.AsSpan(0, count), h.AsSpan(0, count));

    /// <summary>Copies the last of `rows` rows of a workspace buffer into a trace array of one row.</summary>
    static void KeepLast(T[] workspace, int rows, T[] traceRow) => workspace.AsSpan((rows - 1) * traceRow.Length, traceRow.Length).CopyTo(traceRow);

    /// <summary>Copies the leading part of a workspace buffer into a trace array of the exact size.</summary>
    static void Keep(T[] workspace, T[] traceArray) => workspace.AsSpan(0, traceArray.Length).CopyTo(traceArray);
}

/// <summary>
/// One layer's stored weights with its norm gains (Gemma: 1 + w), q/k norm gains and biases widened to T; null where
/// the layer has no such part. The engines (forward, frozen map, ordinary Jacobian) read the layer from here.
/// </summary>
public sealed record LayerParams<T>(
    LayerWeights Weights,
    T[]? AttnIn, T[]? AttnOut, T[]? MlpIn, T[]? MlpOut, T[]? QNorm, T[]? KNorm,
    T[]? QBias, T[]? KBias, T[]? VBias, T[]? OBias, MlpBiases<T> Mlp) where T : unmanaged, IFloatingPointIeee754<T>;

/// <summary>Called after each layer with the residual stream (rows×d) of the positions just run; may change it in place.</summary>
public delegate void ResidualHook<T>(int layersDone, T[] residual, int rows, int startPos);
