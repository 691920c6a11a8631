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
/// token ids to logits: embed, then each layer by its family's straight-line recipe (Llama.cs, Qwen3.cs,
/// Gemma3.cs) over the shared <see cref="Blocks{T}"/>, then final norm and LM head. Weights stay memory-mapped in
/// their stored dtype and are widened inside the GEMM. Passing a <see cref="FrozenTrace{T}"/> records every
/// factor the detached Jacobian freezes.
/// </summary>
public sealed partial class Transformer<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    public Checkpoint Checkpoint { get; }
    public ModelConfig Config { get; }
    readonly T eps;
    readonly T[] finalGain;
    readonly LayerGains[] gains;
    readonly Dictionary<RopeSpec, RopeTable<T>> ropeTables = new();

    /// <summary>Norm gains widened to T once, Gemma's stored offsets turned into 1 + w.</summary>
    sealed record LayerGains(T[] Input, T[] PostAttention, T[]? PreFeedforward, T[]? PostFeedforward, T[]? Q, T[]? K);

    public Transformer(Checkpoint checkpoint)
    {
        Checkpoint = checkpoint;
        Config = checkpoint.Config;
        eps = T.CreateChecked(Config.RmsNormEps);
        finalGain = Gain(checkpoint.FinalNorm);
        gains = checkpoint.Layers.Select(w => new LayerGains(Gain(w.InputNorm), Gain(w.PostAttentionNorm),
            Gain(w.PreFeedforwardNorm), Gain(w.PostFeedforwardNorm), Gain(w.QNorm), Gain(w.KNorm))).ToArray();
    }

    public static string DTypeName => typeof(T) == typeof(double) ? "float64" : "float32";
    public int Hidden => Config.HiddenSize;

    /// <summary>The effective gain of a stored norm weight: w (Llama order), or 1 + w (Gemma), in T.</summary>
    public T[] Gain(StoredTensor? weight)
    {
        if (weight is not { } w) return null!;
        var g = new T[w.Count];
        for (long i = 0; i < g.Length; i++)
            g[i] = Config.IsGemma ? T.One + T.CreateChecked(w[i]) : T.CreateChecked(w[i]);
        return g;
    }

    /// <summary>The gains of layer l's norms, for code that applies the frozen map.</summary>
    public (T[] input, T[] postAttention, T[]? preFeedforward, T[]? postFeedforward) LayerNormGains(int l) =>
        (gains[l].Input, gains[l].PostAttention, gains[l].PreFeedforward, gains[l].PostFeedforward);
    public T[] FinalNormGain => finalGain;

    RopeTable<T> Rope(int layer, int capacity)
    {
        var spec = Config.Rope[layer];
        lock (ropeTables)
        {
            if (!ropeTables.TryGetValue(spec, out var t) || t.Capacity < capacity)
                ropeTables[spec] = t = new RopeTable<T>(spec, Config.HeadDim, Math.Max(capacity, 64));
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

    /// <summary>Input embeddings [n×d]: rows of E, times √d (rounded to T) for Gemma.</summary>
    public T[] Embed(ReadOnlySpan<int> ids)
    {
        int d = Hidden;
        var x = Pinned.Array<T>((long)ids.Length * d);
        T scale = Config.IsGemma ? T.CreateChecked(Math.Sqrt(d)) : T.One;
        var e = Checkpoint.Embedding;
        for (int r = 0; r < ids.Length; r++)
            for (int k = 0; k < d; k++)
                x[r * d + k] = T.CreateChecked(e[ids[r], k]) * scale;
        return x;
    }

    /// <summary>Forward pass over a prompt from position 0, optionally recording the frozen trace.</summary>
    public ForwardResult<T> Forward(ReadOnlySpan<int> ids, bool allLogits = false, bool trace = false, bool nonlinear = false)
    {
        Validate(ids);
        return ForwardEmbeddings(Embed(ids), ids.Length, allLogits, trace, nonlinear);
    }

    /// <summary>Forward pass from given input embeddings x [n×d] (Gemma: already scaled), no cache kept.</summary>
    /// <param name="nonlinear">Also record what the ordinary (non-frozen) Jacobian needs (implies trace).</param>
    public ForwardResult<T> ForwardEmbeddings(T[] x, int n, bool allLogits = false, bool trace = false, bool nonlinear = false)
    {
        var cache = new KvCache<T>(Config, n);
        var c = Config;
        var nl = nonlinear ? new NonlinearTrace<T>(n, c.NumLayers, Hidden, c.QDim, c.KvDim, c.NumHeads, c.NumKvHeads, c.IntermediateSize, c.IsGemma) : null;
        var tr = trace || nonlinear ? new FrozenTrace<T>(n, c.NumLayers, Hidden, c.NumHeads, c.IntermediateSize, c.IsGemma, nl) : null;
        var final = Run(x, n, cache, tr);
        var logits = Logits(final, n, allLogits ? 0 : n - 1);
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
            var rope = Rope(l, startPos + rows);
            switch (Config.Family)
            {
                case Family.Llama: LlamaLayer(l, h, rows, startPos, cache, rope, ws, trace); break;
                case Family.Qwen3: Qwen3Layer(l, h, rows, startPos, cache, rope, ws, trace); break;
                case Family.Gemma3: Gemma3Layer(l, h, rows, startPos, cache, rope, ws, trace); break;
            }
            hook?.Invoke(l + 1, h, rows, startPos);
        }
        cache.Length = startPos + rows;
        var y = Pinned.Array<T>((long)rows * d);
        Blocks<T>.RmsNorm(h, rows, d, finalGain, eps, y, trace is null ? default : trace.FinalScale);
        if (trace is not null) { h.CopyTo(trace.ResidPre[Config.NumLayers], 0); y.CopyTo(trace.Final, 0); }
        return y;
    }

    /// <summary>logits = W_lm · y for rows first…rows−1 of y [rows×d].</summary>
    public T[] Logits(T[] y, int rows, int first)
    {
        var logits = Pinned.Array<T>((long)(rows - first) * Config.VocabSize);
        MatMul.Run(Pinned.View(y, rows - first, Hidden, (long)first * Hidden), false, Checkpoint.LmHead, true, logits, 0, Config.VocabSize);
        return logits;
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

    // ---- pieces the family recipes share -------------------------------------------------------------------

    /// <summary>q, k, v projections of the normed input ws.X; per-head q/k norms when given; RoPE; k, v into the cache.</summary>
    void QkvRope(int l, int rows, int startPos, KvCache<T> cache, RopeTable<T> rope, Workspace ws, NonlinearTrace<T>? nl)
    {
        var w = Checkpoint.Layers[l];
        var c = Config;
        MatMul.Linear(ws.X, rows, w.Q, ws.Q);
        MatMul.Linear(ws.X, rows, w.K, ws.K);
        MatMul.Linear(ws.X, rows, w.V, ws.V);
        if (nl is not null) { Keep(ws.Q, nl.QRaw[l]); Keep(ws.K, nl.KRaw[l]); Keep(ws.V, nl.V[l]); }
        if (gains[l].Q is { } qg)   // per-head RMSNorm over D (Qwen3, Gemma 3)
        {
            Blocks<T>.RmsNorm(ws.Q, rows * c.NumHeads, c.HeadDim, qg, eps, ws.Q, Or(nl?.QHeadScale[l], ws.HeadScale));
            Blocks<T>.RmsNorm(ws.K, rows * c.NumKvHeads, c.HeadDim, gains[l].K!, eps, ws.K, Or(nl?.KHeadScale[l], ws.HeadScale));
        }
        Blocks<T>.Rope(ws.Q, rows, c.NumHeads, c.HeadDim, rope, startPos);
        Blocks<T>.Rope(ws.K, rows, c.NumKvHeads, c.HeadDim, rope, startPos);
        if (nl is not null) { Keep(ws.Q, nl.QRot[l]); Keep(ws.K, nl.KRot[l]); }
        ws.K.AsSpan(0, rows * c.KvDim).CopyTo(cache.Keys[l].AsSpan(startPos * c.KvDim));
        ws.V.AsSpan(0, rows * c.KvDim).CopyTo(cache.Values[l].AsSpan(startPos * c.KvDim));
    }

    /// <summary>Attention over the cache and the output projection: ws.A = W_o · concat_h o_h.</summary>
    void AttentionOut(int l, int rows, int startPos, KvCache<T> cache, Workspace ws, FrozenTrace<T>? trace)
    {
        Blocks<T>.Attention(ws.Q, rows, startPos, cache.Keys[l], cache.Values[l], Config, Config.SlidingWindow[l],
            ws.Scores, ws.O, trace?.AttnProbs[l]);
        MatMul.Linear(ws.O, rows, Checkpoint.Layers[l].O, ws.A);
    }

    static void AddInto(T[] h, T[] branch, int count) =>
        System.Numerics.Tensors.TensorPrimitives.Add(h.AsSpan(0, count), branch.AsSpan(0, count), h.AsSpan(0, count));

    static Span<T> Or(T[]? traceArray, T[] scratch) => traceArray is null ? scratch : traceArray;

    /// <summary>Copies the leading part of a workspace buffer into a trace array of the exact size.</summary>
    static void Keep(T[] workspace, T[] traceArray) => workspace.AsSpan(0, traceArray.Length).CopyTo(traceArray);

    /// <summary>The RoPE table layer l uses, with room for at least `capacity` positions.</summary>
    public RopeTable<T> RopeFor(int layer, int capacity) => Rope(layer, capacity);
}

/// <summary>Called after each layer with the residual stream (rows×d) of the positions just run; may change it in place.</summary>
public delegate void ResidualHook<T>(int layersDone, T[] residual, int rows, int startPos);
