using System.Text.Json;
using System.Text.Json.Nodes;
using LinearLens.Loading;
using LinearLens.Numerics;

namespace LinearLens.Models;

/// <summary>
/// RoPE scaling of a random checkpoint: "linear" (Factor), "llama3" (all four keys) or "longrope" (Phi-3: ShortFactor
/// and LongFactor, each of length R/2; its N0 is the spec's top-level <see cref="RandomCheckpointSpec.OriginalMaxPos"/>
/// and its factor is max_position_embeddings / N0, so Factor is unused and not written).
/// </summary>
public sealed record RopeScalingSpec(
    string Type,
    double Factor,
    double LowFreqFactor = 1,
    double HighFreqFactor = 4,
    double OriginalMaxPositionEmbeddings = 8192,
    double[]? ShortFactor = null,
    double[]? LongFactor = null)
{
    public static RopeScalingSpec LongRope(double[] shortFactor, double[] longFactor) =>
        new("longrope", 0, ShortFactor: shortFactor, LongFactor: longFactor);
}

/// <summary>
/// Shape and configuration of a random Hugging Face-layout checkpoint (architectures.md §2; docs/hf-family-notes.md).
/// ModelType: "llama", "qwen3", "gemma3_text", "gemma3" (multimodal wrapper: config under <c>text_config</c>,
/// weights under <c>language_model.model.</c>), "phi3" (fused qkv_proj / gate_up_proj, PartialRotaryFactor, longrope,
/// SlidingWindow on every layer), "olmo2" (no input norm, post-norms on both branch outputs, q/k norms over the whole
/// H·D / K·D projection), "mistral" (SlidingWindow on every layer; LayerTypes, if given, are written but HF ignores
/// them), "ministral" (per-layer LayerTypes; absent → all sliding when SlidingWindow is set), "qwen2" (q/k/v biases;
/// UseSlidingWindow, MaxWindowLayers, LayerTypes). Gemma only: SlidingWindowPattern, RopeLocalBaseFreq,
/// QueryPreAttnScalar (null → HeadDim). Llama and OLMo 2: AttentionBias (q, k, v, o biases); Llama: MlpBias (gate, up,
/// down biases).
/// RopeScaling applies to all layers, except Gemma's sliding layers. UseRopeParametersV5 writes the v5
/// <c>rope_parameters</c> form (and <c>dtype</c>) instead of <c>rope_theta</c>/<c>rope_scaling</c> (and <c>torch_dtype</c>).
/// Shards = 1 writes <c>model.safetensors</c>; more writes the sharded layout with an index.
/// </summary>
public sealed record RandomCheckpointSpec(
    string ModelType,
    int Hidden,
    int Intermediate,
    int Layers,
    int Heads,
    int KvHeads,
    int HeadDim,
    int Vocab,
    int MaxPos = 2048,
    bool Tie = false,
    DType DType = DType.F32,
    int Shards = 1,
    double RopeTheta = 10000,
    RopeScalingSpec? RopeScaling = null,
    int? SlidingWindow = null,
    string[]? LayerTypes = null,
    int? SlidingWindowPattern = null,
    double RopeLocalBaseFreq = 10000,
    double? QueryPreAttnScalar = null,
    double RmsNormEps = 1e-6,
    bool UseRopeParametersV5 = false,
    bool AttentionBias = false,
    bool MlpBias = false,
    double PartialRotaryFactor = 1.0,
    int? OriginalMaxPos = null,
    bool UseSlidingWindow = false,
    int? MaxWindowLayers = null)
{
    public bool IsGemma => ModelType is "gemma3" or "gemma3_text";
    /// <summary>Per-head q/k RMSNorm over D (Qwen3, Gemma 3). OLMo 2's full-width q/k norms are <see cref="HasFullWidthQkNorm"/>.</summary>
    public bool HasQkNorm => ModelType is "qwen3" or "gemma3" or "gemma3_text";
    public bool HasFullWidthQkNorm => ModelType == "olmo2";
    public bool IsMultimodal => ModelType == "gemma3";
    public bool IsPhi3 => ModelType == "phi3";
    public bool IsOlmo2 => ModelType == "olmo2";

    /// <summary>q_proj/k_proj/v_proj biases: always for qwen2 (hard-coded in HF), for llama and olmo2 when attention_bias.</summary>
    public bool HasQkvBias => ModelType == "qwen2" || (ModelType is "llama" or "olmo2" && AttentionBias);
    /// <summary>o_proj bias: llama and olmo2 with attention_bias (Qwen2's o_proj has none).</summary>
    public bool HasOutputBias => ModelType is "llama" or "olmo2" && AttentionBias;
    public bool HasMlpBias => ModelType == "llama" && MlpBias;
    public bool HasBias => HasQkvBias || HasOutputBias || HasMlpBias;

    /// <summary>Rotary dim R = int(D · partial_rotary_factor); dims [R, D) of each head pass through unrotated.</summary>
    public int RotaryDim => (int)(HeadDim * PartialRotaryFactor);

    /// <summary>Phi-3's top-level original_max_position_embeddings N0 (written for phi3; defaults to MaxPos).</summary>
    public int LongRopeOriginalMax => OriginalMaxPos ?? MaxPos;

    /// <summary>
    /// Longrope attention factor a = √(1 + ln f / ln N0), f = max_position_embeddings / N0 (1 when f ≤ 1); multiplies
    /// cos and sin at every sequence length. 1 without longrope.
    /// </summary>
    public double RopeAttentionFactor
    {
        get
        {
            if (RopeScaling is not { Type: "longrope" }) return 1.0;
            double f = (double)MaxPos / LongRopeOriginalMax;
            return f <= 1.0 ? 1.0 : Math.Sqrt(1.0 + Math.Log(f) / Math.Log(LongRopeOriginalMax));
        }
    }

    /// <summary>Longrope factor list used for a forward pass over <paramref name="n"/> tokens: long iff n &gt; N0.</summary>
    public double[]? LongRopeFactorsFor(int n) =>
        RopeScaling is { Type: "longrope" } s ? (n > LongRopeOriginalMax ? s.LongFactor : s.ShortFactor) : null;

    /// <summary>Prefix of decoder tensors in the files: "model." or, for the multimodal wrapper, "language_model.model.".</summary>
    public string DecoderPrefix => IsMultimodal ? "language_model.model." : "model.";

    /// <summary>Maps a canonical name ("model.…", "lm_head.weight") to the name stored in this checkpoint's files.</summary>
    public string StoredName(string canonical) =>
        !IsMultimodal ? canonical
        : canonical.StartsWith("model.", StringComparison.Ordinal) ? "language_model." + canonical
        : canonical == "lm_head.weight" ? "language_model.lm_head.weight"
        : canonical;

    /// <summary>
    /// Whether layer i uses sliding-window attention, by each family's HF rule: mistral and phi3 every layer when
    /// SlidingWindow is set (mistral ignores layer_types); ministral LayerTypes, else all when SlidingWindow is set;
    /// qwen2 LayerTypes, else use_sliding_window ∧ i ≥ max_window_layers; olmo2 never; others explicit LayerTypes,
    /// else Gemma's pattern rule (default 6).
    /// </summary>
    public bool IsSliding(int layer)
    {
        switch (ModelType)
        {
            case "mistral" or "phi3": return SlidingWindow is not null;
            case "olmo2": return false;
            case "ministral": return LayerTypes is not null ? LayerTypes[layer] == "sliding_attention" : SlidingWindow is not null;
            case "qwen2":
                return LayerTypes is not null ? LayerTypes[layer] == "sliding_attention"
                    : UseSlidingWindow && SlidingWindow is not null && layer >= (MaxWindowLayers ?? 28);
        }
        if (LayerTypes is not null) return LayerTypes[layer] == "sliding_attention";
        if (!IsGemma) return false;
        int p = SlidingWindowPattern ?? 6;
        return p <= 0 || (layer + 1) % p != 0;
    }

    /// <summary>
    /// The window W of layer i (keys with 0 ≤ s−t ≤ W−1 visible), or null for full causal attention. Qwen2's config
    /// sets sliding_window to None unless use_sliding_window (sliding layer_types then make HF raise; Validate rejects them).
    /// </summary>
    public int? WindowOf(int layer) =>
        !IsSliding(layer) ? null : ModelType == "qwen2" && !UseSlidingWindow ? null : SlidingWindow;

    /// <summary>RoPE base of layer i: the local base on Gemma sliding layers, else RopeTheta.</summary>
    public double ThetaOf(int layer) => IsGemma && IsSliding(layer) ? RopeLocalBaseFreq : RopeTheta;

    /// <summary>RoPE scaling of layer i: none on Gemma sliding layers, else RopeScaling.</summary>
    public RopeScalingSpec? ScalingOf(int layer) => IsGemma && IsSliding(layer) ? null : RopeScaling;

    /// <summary>Attention score scale c: query_pre_attn_scalar^(−1/2) for Gemma, else D^(−1/2).</summary>
    public double AttentionScale => 1.0 / Math.Sqrt(IsGemma ? QueryPreAttnScalar ?? HeadDim : HeadDim);

    public static IReadOnlyList<string> PresetNames { get; } =
    [
        "tiny-llama", "tiny-qwen3", "tiny-gemma3", "tiny-gemma3-multimodal",
        "tiny-phi3", "tiny-phi4-mini", "tiny-phi3-plain", "tiny-olmo2", "tiny-mistral", "tiny-ministral", "tiny-qwen2",
        "tiny-llama-bias",
        "qwen3-0.6b", "phi-4", "phi-4-mini", "olmo-2-7b", "ministral-8b", "qwen2.5-7b", "qwen3-8b", "qwen3-14b",
    ];

    // Longrope factor lists of the tiny Phi presets (R/2 = 8 and 6 entries): all distinct, so that reading the wrong
    // list or the wrong entry changes the output.
    static readonly double[] TinyShort8 = [1.0, 1.02, 1.05, 1.1, 1.2, 1.35, 1.6, 2.0];
    static readonly double[] TinyLong8 = [1.0, 1.3, 1.9, 2.8, 4.1, 6.0, 8.8, 13.0];
    static readonly double[] TinyShort6 = [1.0, 1.03, 1.08, 1.2, 1.45, 1.9];
    static readonly double[] TinyLong6 = [1.0, 1.4, 2.3, 3.9, 6.5, 11.0];

    /// <summary>
    /// Phi-4-mini-instruct's released longrope lists (config.json at revision cfbefacb, as quoted by a third-party
    /// copy; short_factor is all ones).
    /// </summary>
    static readonly double[] Phi4MiniLong =
    [
        1, 1.118320672, 1.250641126, 1.398617824, 1.564103225, 1.74916897, 1.956131817, 2.187582649, 2.446418898,
        2.735880826, 3.059592084, 3.421605075, 3.826451687, 4.279200023, 4.785517845, 5.351743533, 5.984965424,
        6.693110555, 7.485043894, 8.370679318, 9.36110372, 10.4687158, 11.70738129, 13.09260651, 14.64173252,
        16.37415215, 18.31155283, 20.47818807, 22.90118105, 25.61086418, 28.64115884, 32.03, 32.1, 32.13, 32.23,
        32.6, 32.61, 32.64, 32.66, 32.7, 32.71, 32.93, 32.97, 33.28, 33.49, 33.5, 44.16, 47.77,
    ];

    /// <summary>
    /// Named shapes. tiny-llama: d=64, H=4, K=2, D=16, I=96, L=2, V=101, llama3 RoPE scaling with
    /// original_max_position_embeddings 700 so that two of the eight frequencies at D=16 fall in the blend region.
    /// tiny-qwen3: d=48, H·D=64 ≠ d, tied. tiny-gemma3: L=3, layer 1 sliding with W=3, global linear scaling ×8,
    /// query_pre_attn_scalar 24 ≠ D. tiny-gemma3-multimodal: the same as a "gemma3" wrapper.
    /// tiny-phi3: window 4 on both layers, longrope with N0 = 6 (prompts of ≤ 6 tokens use short_factor, longer ones
    /// long_factor), max_pos 64 (attention factor √(1 + ln(64/6)/ln 6)). tiny-phi4-mini: partial rotary 0.75 (R = 12 of
    /// D = 16) with longrope N0 = 6, GQA, tied, no window. tiny-phi3-plain: partial 1, no scaling, no window (its Llama
    /// twin: <see cref="RandomCheckpoint.WriteLlamaSplitOfPhi3"/>). tiny-olmo2: GQA (k_norm over K·D = 32 ≠ H·D = 64).
    /// tiny-mistral: W = 3 on both layers. tiny-ministral: L=3, layer_types sliding/full/sliding, W = 3, H·D = 64 ≠ d = 48.
    /// tiny-qwen2: q/k/v biases, tied, use_sliding_window with max_window_layers 1 (layer 1 slides, W = 3).
    /// tiny-llama-bias: tiny-llama with attention_bias and mlp_bias.
    /// Real shapes (bf16; write on demand, never commit): qwen3-0.6b (d=1024, I=3072, 28 layers, 16/8 heads, D=128,
    /// V=151936, tied, θ=1e6, max_pos 40960), phi-4, phi-4-mini, olmo-2-7b, ministral-8b (model_type mistral, as its hub
    /// config), qwen2.5-7b, qwen3-8b, qwen3-14b — sources and what is unverified in docs/hf-family-notes.md.
    /// </summary>
    public static RandomCheckpointSpec Preset(string name) => name switch
    {
        "tiny-llama" => new("llama", Hidden: 64, Intermediate: 96, Layers: 2, Heads: 4, KvHeads: 2, HeadDim: 16, Vocab: 101,
            MaxPos: 8192, Tie: false, RopeTheta: 10000,
            RopeScaling: new RopeScalingSpec("llama3", 8, 1, 4, 700), RmsNormEps: 1e-5),
        "tiny-qwen3" => new("qwen3", Hidden: 48, Intermediate: 80, Layers: 2, Heads: 4, KvHeads: 2, HeadDim: 16, Vocab: 101,
            MaxPos: 40960, Tie: true, RopeTheta: 1e6, RmsNormEps: 1e-6),
        "tiny-gemma3" => new("gemma3_text", Hidden: 64, Intermediate: 96, Layers: 3, Heads: 4, KvHeads: 2, HeadDim: 16, Vocab: 101,
            MaxPos: 32768, Tie: true, RopeTheta: 1e6, RopeScaling: new RopeScalingSpec("linear", 8),
            SlidingWindow: 3, LayerTypes: ["full_attention", "sliding_attention", "full_attention"],
            RopeLocalBaseFreq: 10000, QueryPreAttnScalar: 24, RmsNormEps: 1e-6),
        "tiny-gemma3-multimodal" => Preset("tiny-gemma3") with { ModelType = "gemma3" },
        "tiny-phi3" => new("phi3", Hidden: 64, Intermediate: 96, Layers: 2, Heads: 4, KvHeads: 2, HeadDim: 16, Vocab: 101,
            MaxPos: 64, OriginalMaxPos: 6, RopeTheta: 10000, RopeScaling: RopeScalingSpec.LongRope(TinyShort8, TinyLong8),
            SlidingWindow: 4, RmsNormEps: 1e-5),
        "tiny-phi4-mini" => new("phi3", Hidden: 64, Intermediate: 96, Layers: 2, Heads: 4, KvHeads: 2, HeadDim: 16, Vocab: 101,
            MaxPos: 64, OriginalMaxPos: 6, Tie: true, RopeTheta: 10000, PartialRotaryFactor: 0.75,
            RopeScaling: RopeScalingSpec.LongRope(TinyShort6, TinyLong6), RmsNormEps: 1e-5),
        "tiny-phi3-plain" => new("phi3", Hidden: 64, Intermediate: 96, Layers: 2, Heads: 4, KvHeads: 2, HeadDim: 16, Vocab: 101,
            MaxPos: 2048, RopeTheta: 10000, RmsNormEps: 1e-5),
        "tiny-olmo2" => new("olmo2", Hidden: 64, Intermediate: 96, Layers: 2, Heads: 4, KvHeads: 2, HeadDim: 16, Vocab: 101,
            MaxPos: 4096, RopeTheta: 500000, RmsNormEps: 1e-6),
        "tiny-mistral" => new("mistral", Hidden: 64, Intermediate: 96, Layers: 2, Heads: 4, KvHeads: 2, HeadDim: 16, Vocab: 101,
            MaxPos: 32768, RopeTheta: 1e6, SlidingWindow: 3, RmsNormEps: 1e-5),
        "tiny-ministral" => new("ministral", Hidden: 48, Intermediate: 80, Layers: 3, Heads: 4, KvHeads: 2, HeadDim: 16, Vocab: 101,
            MaxPos: 32768, RopeTheta: 1e8, SlidingWindow: 3,
            LayerTypes: ["sliding_attention", "full_attention", "sliding_attention"], RmsNormEps: 1e-5),
        "tiny-qwen2" => new("qwen2", Hidden: 64, Intermediate: 96, Layers: 2, Heads: 4, KvHeads: 2, HeadDim: 16, Vocab: 101,
            MaxPos: 32768, Tie: true, RopeTheta: 1e6, SlidingWindow: 3, UseSlidingWindow: true, MaxWindowLayers: 1,
            RmsNormEps: 1e-6),
        "tiny-llama-bias" => Preset("tiny-llama") with { AttentionBias = true, MlpBias = true },
        "qwen3-0.6b" => new("qwen3", Hidden: 1024, Intermediate: 3072, Layers: 28, Heads: 16, KvHeads: 8, HeadDim: 128, Vocab: 151936,
            MaxPos: 40960, Tie: true, DType: DType.BF16, RopeTheta: 1e6, RmsNormEps: 1e-6),
        "phi-4" => new("phi3", Hidden: 5120, Intermediate: 17920, Layers: 40, Heads: 40, KvHeads: 10, HeadDim: 128, Vocab: 100352,
            MaxPos: 16384, OriginalMaxPos: 16384, Tie: false, DType: DType.BF16, RopeTheta: 250000, RmsNormEps: 1e-5),
        "phi-4-mini" => new("phi3", Hidden: 3072, Intermediate: 8192, Layers: 32, Heads: 24, KvHeads: 8, HeadDim: 128, Vocab: 200064,
            MaxPos: 131072, OriginalMaxPos: 4096, Tie: true, DType: DType.BF16, RopeTheta: 10000, PartialRotaryFactor: 0.75,
            RopeScaling: RopeScalingSpec.LongRope(Enumerable.Repeat(1.0, 48).ToArray(), Phi4MiniLong),
            SlidingWindow: 262144, RmsNormEps: 1e-5),
        "olmo-2-7b" => new("olmo2", Hidden: 4096, Intermediate: 11008, Layers: 32, Heads: 32, KvHeads: 32, HeadDim: 128, Vocab: 100352,
            MaxPos: 4096, Tie: false, DType: DType.BF16, RopeTheta: 500000, RmsNormEps: 1e-6),
        "ministral-8b" => new("mistral", Hidden: 4096, Intermediate: 12288, Layers: 36, Heads: 32, KvHeads: 8, HeadDim: 128, Vocab: 131072,
            MaxPos: 32768, Tie: false, DType: DType.BF16, RopeTheta: 1e8, SlidingWindow: 32768, RmsNormEps: 1e-5),
        "qwen2.5-7b" => new("qwen2", Hidden: 3584, Intermediate: 18944, Layers: 28, Heads: 28, KvHeads: 4, HeadDim: 128, Vocab: 152064,
            MaxPos: 32768, Tie: false, DType: DType.BF16, RopeTheta: 1e6, SlidingWindow: 131072, UseSlidingWindow: false,
            MaxWindowLayers: 28, RmsNormEps: 1e-6),
        "qwen3-8b" => new("qwen3", Hidden: 4096, Intermediate: 12288, Layers: 36, Heads: 32, KvHeads: 8, HeadDim: 128, Vocab: 151936,
            MaxPos: 40960, Tie: false, DType: DType.BF16, RopeTheta: 1e6, RmsNormEps: 1e-6),
        "qwen3-14b" => new("qwen3", Hidden: 5120, Intermediate: 17408, Layers: 40, Heads: 40, KvHeads: 8, HeadDim: 128, Vocab: 151936,
            MaxPos: 40960, Tie: false, DType: DType.BF16, RopeTheta: 1e6, RmsNormEps: 1e-6),
        _ => throw new ArgumentException($"unknown preset '{name}' (known: {string.Join(", ", PresetNames)})"),
    };

    /// <summary>
    /// A lower bound of the bytes the checkpoint's tensors take: matrices in <paramref name="matrixType"/> (this spec's
    /// type when null; a quantized type where whole blocks fit a row), everything else in this spec's type.
    /// </summary>
    public long StoredBytes(DType? matrixType = null)
    {
        long bytes = 0;
        foreach (var (_, shape) in CanonicalTensors())
        {
            long cols = shape[^1], rows = shape.Aggregate(1L, (a, b) => a * b) / cols;
            DType t = shape.Length == 2 && matrixType is { } m && (!m.IsQuantized() || cols % m.BlockElements() == 0) ? m : DType;
            bytes += rows * t.RowBytes(cols);
        }
        return bytes;
    }

    /// <summary>Every tensor of the checkpoint, with canonical names ("model.…", "lm_head.weight") and shapes.</summary>
    public IReadOnlyList<(string Name, long[] Shape)> CanonicalTensors()
    {
        long d = Hidden, q = (long)Heads * HeadDim, kv = (long)KvHeads * HeadDim, I = Intermediate;
        var list = new List<(string, long[])> { ("model.embed_tokens.weight", [Vocab, d]) };
        for (int i = 0; i < Layers; i++)
        {
            string p = $"model.layers.{i}.";
            if (!IsOlmo2) list.Add((p + "input_layernorm.weight", [d]));
            if (IsPhi3) list.Add((p + "self_attn.qkv_proj.weight", [q + 2 * kv, d]));
            else
            {
                list.Add((p + "self_attn.q_proj.weight", [q, d]));
                if (HasQkvBias) list.Add((p + "self_attn.q_proj.bias", [q]));
                list.Add((p + "self_attn.k_proj.weight", [kv, d]));
                if (HasQkvBias) list.Add((p + "self_attn.k_proj.bias", [kv]));
                list.Add((p + "self_attn.v_proj.weight", [kv, d]));
                if (HasQkvBias) list.Add((p + "self_attn.v_proj.bias", [kv]));
            }
            list.Add((p + "self_attn.o_proj.weight", [d, q]));
            if (HasOutputBias) list.Add((p + "self_attn.o_proj.bias", [d]));
            if (HasQkNorm)
            {
                list.Add((p + "self_attn.q_norm.weight", [HeadDim]));
                list.Add((p + "self_attn.k_norm.weight", [HeadDim]));
            }
            if (HasFullWidthQkNorm)
            {
                list.Add((p + "self_attn.q_norm.weight", [q]));
                list.Add((p + "self_attn.k_norm.weight", [kv]));
            }
            list.Add((p + "post_attention_layernorm.weight", [d]));
            if (IsGemma) list.Add((p + "pre_feedforward_layernorm.weight", [d]));
            if (IsGemma || IsOlmo2) list.Add((p + "post_feedforward_layernorm.weight", [d]));
            if (IsPhi3) list.Add((p + "mlp.gate_up_proj.weight", [2 * I, d]));
            else
            {
                list.Add((p + "mlp.gate_proj.weight", [I, d]));
                if (HasMlpBias) list.Add((p + "mlp.gate_proj.bias", [I]));
                list.Add((p + "mlp.up_proj.weight", [I, d]));
                if (HasMlpBias) list.Add((p + "mlp.up_proj.bias", [I]));
            }
            list.Add((p + "mlp.down_proj.weight", [d, I]));
            if (HasMlpBias) list.Add((p + "mlp.down_proj.bias", [d]));
        }
        list.Add(("model.norm.weight", [d]));
        if (!Tie) list.Add(("lm_head.weight", [Vocab, d]));
        return list;
    }

    static readonly string[] ModelTypes = ["llama", "qwen3", "gemma3_text", "gemma3", "phi3", "olmo2", "mistral", "ministral", "qwen2"];

    public void Validate()
    {
        if (!ModelTypes.Contains(ModelType))
            throw new ArgumentException($"model type '{ModelType}' (expected one of {string.Join(", ", ModelTypes)})");
        if (Hidden <= 0 || Intermediate <= 0 || Layers <= 0 || Heads <= 0 || KvHeads <= 0 || HeadDim <= 0 || Vocab <= 0)
            throw new ArgumentException("all sizes must be positive");
        if (Heads % KvHeads != 0) throw new ArgumentException($"heads {Heads} not a multiple of kv heads {KvHeads}");
        if (HeadDim % 2 != 0) throw new ArgumentException("head_dim must be even");
        // These config classes have no head_dim key (HF derives D = d/H), so the shape must agree with it.
        if (ModelType is "phi3" or "olmo2" or "qwen2" && Heads * HeadDim != Hidden)
            throw new ArgumentException($"{ModelType} has no head_dim key: heads·head_dim must equal hidden ({Heads}·{HeadDim} ≠ {Hidden})");
        if (LayerTypes is not null)
        {
            if (LayerTypes.Length != Layers) throw new ArgumentException("layer_types length != layers");
            if (ModelType is "llama" or "phi3" or "olmo2") throw new ArgumentException($"{ModelType} has no layer_types");
        }
        if (Shards < 1) throw new ArgumentException("shards must be ≥ 1");
        // HF raises for a sliding layer without a window (masking_utils: "Could not find a `sliding_window` argument in
        // the config, or it is not set"); Qwen2Config nulls sliding_window unless use_sliding_window.
        int? effectiveWindow = ModelType == "qwen2" && !UseSlidingWindow ? null : SlidingWindow;
        if (ModelType is "qwen2" or "ministral" && effectiveWindow is null && LayerTypes?.Contains("sliding_attention") == true)
            throw new ArgumentException($"{ModelType}: sliding layer_types without an effective sliding_window (HF raises)");
        if (PartialRotaryFactor != 1.0 && !IsPhi3) throw new ArgumentException("partial_rotary_factor is a phi3 option");
        if (PartialRotaryFactor is <= 0 or > 1 || RotaryDim % 2 != 0 || RotaryDim == 0)
            throw new ArgumentException($"partial_rotary_factor {PartialRotaryFactor} gives rotary dim {RotaryDim} (must be even, 2..head_dim)");
        if (AttentionBias && ModelType is not ("llama" or "olmo2")) throw new ArgumentException("attention_bias is a llama/olmo2 option");
        if (MlpBias && ModelType != "llama") throw new ArgumentException("mlp_bias is a llama option");
        if (UseSlidingWindow && ModelType != "qwen2") throw new ArgumentException("use_sliding_window is a qwen2 option here");
        if (OriginalMaxPos is not null && !IsPhi3) throw new ArgumentException("original_max_position_embeddings (top level) is a phi3 option");
        if (SlidingWindow is <= 0) throw new ArgumentException("sliding_window must be positive");
        switch (RopeScaling)
        {
            case null: break;
            case { Type: "longrope" } s:
                if (!IsPhi3) throw new ArgumentException("longrope is written for phi3 only");
                if (s.ShortFactor?.Length != RotaryDim / 2 || s.LongFactor?.Length != RotaryDim / 2)
                    throw new ArgumentException($"longrope short_factor/long_factor must have R/2 = {RotaryDim / 2} entries");
                if (s.ShortFactor.Concat(s.LongFactor).Any(x => !(x > 0))) throw new ArgumentException("longrope factors must be positive");
                break;
            case { Type: "linear" or "llama3" }:
                if (ModelType is not ("llama" or "qwen3" or "gemma3_text" or "gemma3"))
                    throw new ArgumentException($"rope scaling '{RopeScaling.Type}' is written for llama, qwen3 and gemma3 only");
                break;
            default: throw new ArgumentException($"rope scaling '{RopeScaling.Type}'");
        }
    }
}

/// <summary>One tensor of a random checkpoint: its shape and (when kept) its values exactly as stored, widened to double.</summary>
public sealed record RandomTensor(long[] Shape, double[]? Values);

/// <summary>
/// What <see cref="RandomCheckpoint.Write"/> wrote: the folder, the spec, and the tensors keyed by the names stored in the
/// files (for the multimodal wrapper these carry the "language_model." prefix; <see cref="Get"/> takes canonical names).
/// </summary>
public sealed class RandomWeights
{
    public required string Folder { get; init; }
    public required RandomCheckpointSpec Spec { get; init; }
    public required int Seed { get; init; }
    public required IReadOnlyDictionary<string, RandomTensor> Tensors { get; init; }

    /// <summary>The tensor with canonical name ("model.layers.0.self_attn.q_proj.weight", "lm_head.weight", …).</summary>
    public RandomTensor Get(string canonicalName) => Tensors[Spec.StoredName(canonicalName)];

    /// <summary>Stored values of a tensor by canonical name; throws if the checkpoint was written with keepValues: false.</summary>
    public double[] Values(string canonicalName) => Get(canonicalName).Values
        ?? throw new InvalidOperationException("values were not kept (RandomCheckpoint.Write with keepValues: false)");
}

/// <summary>
/// Writes a complete Hugging Face-layout checkpoint folder (config.json + safetensors) of random weights.
/// Deterministic for a seed: each tensor's values depend only on (seed, canonical tensor name, element index), so the
/// multimodal wrapper and the text-only model with the same seed hold the same numbers. Values are "normal-ish"
/// (Irwin–Hall sum of four uniforms, unit variance): projections std 1/√fan_in (also the fused Phi-3 ones); embeddings
/// std 1 (Gemma 1/√d, so the √d-scaled embedding has unit RMS); norm gains 1 + 0.15·z (Gemma: offsets 0.15·z, effective
/// gain 1 + w); biases 0.5·z.
/// Tensors are generated and streamed to disk chunk by chunk; values are returned only with keepValues.
/// </summary>
public static class RandomCheckpoint
{
    const int ChunkElements = 1 << 16;

    public static RandomWeights Write(string folder, RandomCheckpointSpec spec, int seed, bool keepValues = true)
    {
        spec.Validate();
        Directory.CreateDirectory(folder);
        File.WriteAllText(Path.Combine(folder, "config.json"), ConfigJson(spec));

        var canon = spec.CanonicalTensors();
        var headers = new List<TensorHeader>(canon.Count);
        var info = new Dictionary<string, (string Canonical, Init Init)>(StringComparer.Ordinal);
        foreach (var (name, shape) in canon)
        {
            string stored = spec.StoredName(name);
            headers.Add(new TensorHeader(stored, spec.DType, shape));
            info[stored] = (name, InitOf(spec, name, shape));
        }
        var values = new Dictionary<string, RandomTensor>(StringComparer.Ordinal);
        object gate = new();

        void WriteData(TensorHeader h, Stream s)
        {
            var (canonical, init) = info[h.Name];
            double[]? kept = keepValues ? new double[h.Count] : null;
            Generate(h, Seed(seed, canonical), init, s, kept);
            lock (gate) values[h.Name] = new RandomTensor(h.Shape, kept);
        }

        // Remove stale files of a previous layout so that a reader cannot pick them up.
        foreach (var f in Directory.EnumerateFiles(folder, "model*.safetensors*")) File.Delete(f);
        if (spec.Shards == 1) SafetensorsWriter.Write(Path.Combine(folder, "model.safetensors"), headers, WriteData);
        else SafetensorsWriter.WriteSharded(folder, headers, WriteData, spec.Shards);

        return new RandomWeights { Folder = folder, Spec = spec, Seed = seed, Tensors = values };
    }

    /// <summary>The stored values of one tensor of a spec's checkpoint (exactly what <see cref="Write"/> stores for it).</summary>
    public static double[] TensorValues(RandomCheckpointSpec spec, int seed, string canonicalName, long[] shape)
    {
        var h = new TensorHeader(spec.StoredName(canonicalName), spec.DType, shape);
        var kept = new double[h.Count];
        Generate(h, Seed(seed, canonicalName), InitOf(spec, canonicalName, shape), Stream.Null, kept);
        return kept;
    }

    /// <summary>
    /// Writes the Llama-layout twin of a phi3 checkpoint (partial factor 1, no RoPE scaling, no window): the same
    /// config values as model_type "llama", <c>qkv_proj</c> split by rows into q/k/v ([0, H·D), [H·D, H·D+K·D), rest) and
    /// <c>gate_up_proj</c> into gate ([0, I)) and up ([I, 2I)), every other tensor unchanged — the values are those that
    /// <see cref="Write"/>(phi3, seed) stores, bit for bit, so both folders describe the same function.
    /// </summary>
    public static RandomWeights WriteLlamaSplitOfPhi3(string folder, RandomCheckpointSpec phi3, int seed)
    {
        phi3.Validate();
        if (!phi3.IsPhi3 || phi3.PartialRotaryFactor != 1.0 || phi3.RopeScaling is not null || phi3.SlidingWindow is not null)
            throw new ArgumentException("a Llama twin exists only for phi3 with partial_rotary_factor 1, no rope scaling and no sliding window");
        var llama = phi3 with { ModelType = "llama", OriginalMaxPos = null };
        llama.Validate();
        long d = phi3.Hidden, q = (long)phi3.Heads * phi3.HeadDim, kv = (long)phi3.KvHeads * phi3.HeadDim, I = phi3.Intermediate;

        static double[] Rows(double[] m, long first, long count, long cols) =>
            m.AsSpan((int)(first * cols), (int)(count * cols)).ToArray();

        var values = new Dictionary<string, RandomTensor>(StringComparer.Ordinal);
        var tensors = new List<(string, DType, long[], byte[])>();
        double[]? qkv = null, gateUp = null;
        foreach (var (name, shape) in llama.CanonicalTensors())
        {
            int dot = name.IndexOf(".self_attn.", StringComparison.Ordinal) is int a and >= 0 ? a : name.IndexOf(".mlp.", StringComparison.Ordinal);
            string layer = dot >= 0 ? name[..(dot + 1)] : "";
            double[] v;
            switch (name[layer.Length..])
            {
                case "self_attn.q_proj.weight":
                    qkv = TensorValues(phi3, seed, layer + "self_attn.qkv_proj.weight", [q + 2 * kv, d]);
                    v = Rows(qkv, 0, q, d);
                    break;
                case "self_attn.k_proj.weight": v = Rows(qkv!, q, kv, d); break;
                case "self_attn.v_proj.weight": v = Rows(qkv!, q + kv, kv, d); break;
                case "mlp.gate_proj.weight":
                    gateUp = TensorValues(phi3, seed, layer + "mlp.gate_up_proj.weight", [2 * I, d]);
                    v = Rows(gateUp, 0, I, d);
                    break;
                case "mlp.up_proj.weight": v = Rows(gateUp!, I, I, d); break;
                default: v = TensorValues(phi3, seed, name, shape); break;
            }
            values[name] = new RandomTensor(shape, v);
            tensors.Add((name, llama.DType, shape, SafetensorsWriter.Encode(v, llama.DType)));
        }

        Directory.CreateDirectory(folder);
        File.WriteAllText(Path.Combine(folder, "config.json"), ConfigJson(llama));
        foreach (var f in Directory.EnumerateFiles(folder, "model*.safetensors*")) File.Delete(f);
        if (llama.Shards == 1) SafetensorsWriter.Write(Path.Combine(folder, "model.safetensors"), tensors);
        else SafetensorsWriter.WriteSharded(folder, tensors, llama.Shards);
        return new RandomWeights { Folder = folder, Spec = llama, Seed = seed, Tensors = values };
    }

    readonly record struct Init(double Mean, double Std);

    static Init InitOf(RandomCheckpointSpec spec, string name, long[] shape)
    {
        // Biases: zero-mean with std 0.5, large enough that dropping one (or the affine constant it makes) shows.
        if (name.EndsWith(".bias", StringComparison.Ordinal)) return new Init(0, 0.5);
        if (shape.Length == 1) return spec.IsGemma ? new Init(0, 0.15) : new Init(1, 0.15);
        if (name is "model.embed_tokens.weight")
            return new Init(0, spec.IsGemma ? 1.0 / Math.Sqrt(spec.Hidden) : 1.0);
        return new Init(0, 1.0 / Math.Sqrt(shape[1]));   // [out, in]: fan_in = in
    }

    /// <summary>Generates, rounds to the stored dtype, writes and optionally keeps the values of one tensor.</summary>
    static void Generate(TensorHeader h, ulong tensorSeed, Init init, Stream s, double[]? kept)
    {
        long count = h.Count;
        int size = h.DType.Size();
        long chunks = (count + ChunkElements - 1) / ChunkElements;
        int batch = Math.Max(1, Environment.ProcessorCount) * 4;
        var buffers = new byte[Math.Min(batch, Math.Max(chunks, 1))][];
        for (int b = 0; b < buffers.Length; b++) buffers[b] = new byte[ChunkElements * size];
        for (long first = 0; first < chunks; first += buffers.Length)
        {
            int inBatch = (int)Math.Min(buffers.Length, chunks - first);
            void Fill(int j)
            {
                long c = first + j, start = c * ChunkElements;
                int n = (int)Math.Min(ChunkElements, count - start);
                var v = new double[n];
                ulong state = Mix(tensorSeed ^ (0x9E3779B97F4A7C15UL * (ulong)(c + 1)));
                for (int i = 0; i < n; i++) v[i] = init.Mean + init.Std * NormalIsh(ref state);
                var dest = buffers[j].AsSpan(0, n * size);
                SafetensorsWriter.Encode(v, h.DType, dest);
                if (kept is not null) Decode(dest, h.DType, kept.AsSpan((int)start, n));
            }
            if (inBatch > 1 && count > 4 * ChunkElements) Parallel.For(0, inBatch, Fill);
            else for (int j = 0; j < inBatch; j++) Fill(j);
            for (int j = 0; j < inBatch; j++)
            {
                long start = (first + j) * ChunkElements;
                int n = (int)Math.Min(ChunkElements, count - start);
                s.Write(buffers[j], 0, n * size);
            }
        }
    }

    static unsafe void Decode(ReadOnlySpan<byte> bytes, DType t, Span<double> dest)
    {
        fixed (byte* p = bytes)
            for (int i = 0; i < dest.Length; i++) dest[i] = DTypes.Read(p, t, i);
    }

    /// <summary>Unit-variance, zero-mean, bounded (±2√3) "normal-ish" value: Irwin–Hall sum of four 32-bit uniforms.</summary>
    static double NormalIsh(ref ulong state)
    {
        ulong a = Next(ref state), b = Next(ref state);
        double sum = (double)(uint)a + (double)(a >> 32) + (double)(uint)b + (double)(b >> 32);
        return (sum * (1.0 / 4294967296.0) - 2.0) * 1.7320508075688772;
    }

    static ulong Next(ref ulong state)
    {
        state += 0x9E3779B97F4A7C15UL;
        return Mix(state);
    }

    static ulong Mix(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    static ulong Seed(int seed, string canonicalName)
    {
        ulong h = 14695981039346656037UL;                       // FNV-1a, stable across runs (unlike string.GetHashCode)
        foreach (char ch in canonicalName) { h ^= ch; h *= 1099511628211UL; }
        return Mix(h ^ Mix((ulong)(uint)seed + 0x632BE59BD9B4E019UL));
    }

    static string TorchDType(DType t) => t switch
    {
        DType.F64 => "float64", DType.F32 => "float32", DType.BF16 => "bfloat16", _ => "float16",
    };

    static JsonArray Numbers(double[] values) => new(values.Select(x => (JsonNode?)x).ToArray());

    static JsonObject RopeObject(string type, double theta, RopeScalingSpec? s, bool withTheta)
    {
        var o = new JsonObject { ["rope_type"] = type };
        if (withTheta) o["rope_theta"] = theta;
        if (s is not null)
        {
            o["factor"] = s.Factor;
            if (s.Type == "llama3")
            {
                o["low_freq_factor"] = s.LowFreqFactor;
                o["high_freq_factor"] = s.HighFreqFactor;
                o["original_max_position_embeddings"] = s.OriginalMaxPositionEmbeddings;
            }
        }
        return o;
    }

    /// <summary>
    /// Phi-3's RoPE entry. Legacy: <c>rope_scaling</c> = {"type": "longrope", "short_factor", "long_factor"} — exactly the
    /// three keys of the released Phi-3.5 / Phi-4-mini configs (Phi3Config ≤ 4.4x rejects any other key count), N0 and
    /// partial_rotary_factor top-level. v5: <c>rope_parameters</c> with rope_type, rope_theta, partial_rotary_factor and,
    /// for longrope, the lists and N0.
    /// </summary>
    static JsonNode? Phi3Rope(RandomCheckpointSpec spec, bool v5)
    {
        var s = spec.RopeScaling;
        if (!v5)
            return s is null ? null : new JsonObject
            {
                ["type"] = "longrope", ["short_factor"] = Numbers(s.ShortFactor!), ["long_factor"] = Numbers(s.LongFactor!),
            };
        var o = new JsonObject
        {
            ["rope_type"] = s is null ? "default" : "longrope",
            ["rope_theta"] = spec.RopeTheta,
            ["partial_rotary_factor"] = spec.PartialRotaryFactor,
        };
        if (s is not null)
        {
            o["short_factor"] = Numbers(s.ShortFactor!);
            o["long_factor"] = Numbers(s.LongFactor!);
            o["original_max_position_embeddings"] = spec.LongRopeOriginalMax;
        }
        return o;
    }

    static string Architecture(string modelType) => modelType switch
    {
        "llama" => "LlamaForCausalLM", "qwen3" => "Qwen3ForCausalLM", "phi3" => "Phi3ForCausalLM",
        "olmo2" => "Olmo2ForCausalLM", "mistral" => "MistralForCausalLM", "ministral" => "MinistralForCausalLM",
        "qwen2" => "Qwen2ForCausalLM", _ => "Gemma3ForCausalLM",
    };

    /// <summary>
    /// The config.json text for a spec (legacy or v5 RoPE form; multimodal wrapper for "gemma3"). Each family gets the
    /// keys its HF config class reads (docs/hf-family-notes.md): no head_dim for phi3/olmo2/qwen2 (HF derives d/H), no
    /// attention_bias where the class has none (phi3, mistral, ministral, qwen2).
    /// </summary>
    public static string ConfigJson(RandomCheckpointSpec spec)
    {
        bool v5 = spec.UseRopeParametersV5;
        string dtypeKey = v5 ? "dtype" : "torch_dtype";
        string mt = spec.ModelType;
        var c = new JsonObject();
        string textType = spec.IsGemma ? "gemma3_text" : mt;
        if (!spec.IsMultimodal) c["architectures"] = new JsonArray(Architecture(mt));
        c["model_type"] = textType;
        c["vocab_size"] = spec.Vocab;
        c["hidden_size"] = spec.Hidden;
        c["intermediate_size"] = spec.Intermediate;
        c["num_hidden_layers"] = spec.Layers;
        c["num_attention_heads"] = spec.Heads;
        c["num_key_value_heads"] = spec.KvHeads;
        if (mt is not ("phi3" or "olmo2" or "qwen2")) c["head_dim"] = spec.HeadDim;
        if (spec.IsGemma) c["hidden_activation"] = "gelu_pytorch_tanh";
        else c["hidden_act"] = "silu";
        c["max_position_embeddings"] = spec.MaxPos;
        if (spec.IsPhi3) c["original_max_position_embeddings"] = spec.LongRopeOriginalMax;
        c["rms_norm_eps"] = spec.RmsNormEps;
        if (mt is "llama" or "olmo2") c["attention_bias"] = spec.AttentionBias;
        else if (mt is not ("phi3" or "mistral" or "ministral" or "qwen2")) c["attention_bias"] = false;
        c["attention_dropout"] = 0.0;
        if (spec.IsPhi3)
        {
            c["resid_pdrop"] = 0.0;
            c["embd_pdrop"] = 0.0;
            c["partial_rotary_factor"] = spec.PartialRotaryFactor;
        }
        if (mt == "llama") { c["mlp_bias"] = spec.MlpBias; c["pretraining_tp"] = 1; }
        c["tie_word_embeddings"] = spec.Tie;
        c["initializer_range"] = 0.02;
        c["use_cache"] = true;

        JsonArray? layerTypes = spec.LayerTypes is null ? null : new JsonArray(spec.LayerTypes.Select(x => (JsonNode?)x).ToArray());
        if (spec.IsGemma)
        {
            c["pad_token_id"] = 0; c["eos_token_id"] = 1; c["bos_token_id"] = 2;
            c["query_pre_attn_scalar"] = spec.QueryPreAttnScalar ?? spec.HeadDim;
            c["sliding_window"] = spec.SlidingWindow;
            if (layerTypes is not null) c["layer_types"] = layerTypes;
            if (spec.SlidingWindowPattern is int p) c["sliding_window_pattern"] = p;
            c["final_logit_softcapping"] = null;
            c["attn_logit_softcapping"] = null;
            if (v5)
                c["rope_parameters"] = new JsonObject
                {
                    ["full_attention"] = RopeObject(spec.RopeScaling?.Type ?? "default", spec.RopeTheta, spec.RopeScaling, true),
                    ["sliding_attention"] = RopeObject("default", spec.RopeLocalBaseFreq, null, true),
                };
            else
            {
                c["rope_theta"] = spec.RopeTheta;
                c["rope_local_base_freq"] = spec.RopeLocalBaseFreq;
                c["rope_scaling"] = spec.RopeScaling is null ? null : RopeObject(spec.RopeScaling.Type, spec.RopeTheta, spec.RopeScaling, false);
            }
        }
        else
        {
            c["bos_token_id"] = 1; c["eos_token_id"] = 2;
            switch (mt)
            {
                case "qwen3":
                    c["use_sliding_window"] = false;
                    c["sliding_window"] = spec.SlidingWindow;
                    c["max_window_layers"] = spec.Layers;
                    if (layerTypes is not null) c["layer_types"] = layerTypes;
                    break;
                case "qwen2":
                    c["use_sliding_window"] = spec.UseSlidingWindow;
                    c["sliding_window"] = spec.SlidingWindow;
                    c["max_window_layers"] = spec.MaxWindowLayers ?? 28;
                    if (layerTypes is not null) c["layer_types"] = layerTypes;
                    break;
                case "mistral" or "ministral":
                    // null is meaningful here: the class default is 4096, null disables the window.
                    c["sliding_window"] = spec.SlidingWindow;
                    if (layerTypes is not null) c["layer_types"] = layerTypes;   // mistral: ignored by HF (with a warning)
                    break;
                case "phi3":
                    c["pad_token_id"] = 0;
                    c["sliding_window"] = spec.SlidingWindow;
                    break;
                case "olmo2":
                    c["pad_token_id"] = 0;
                    break;
            }
            if (spec.IsPhi3)
            {
                if (v5) c["rope_parameters"] = Phi3Rope(spec, true);
                else { c["rope_theta"] = spec.RopeTheta; c["rope_scaling"] = Phi3Rope(spec, false); }
            }
            else if (v5)
                c["rope_parameters"] = RopeObject(spec.RopeScaling?.Type ?? "default", spec.RopeTheta, spec.RopeScaling, true);
            else
            {
                c["rope_theta"] = spec.RopeTheta;
                c["rope_scaling"] = spec.RopeScaling is null ? null : RopeObject(spec.RopeScaling.Type, spec.RopeTheta, spec.RopeScaling, false);
            }
        }

        JsonObject root;
        if (spec.IsMultimodal)
        {
            root = new JsonObject
            {
                ["architectures"] = new JsonArray("Gemma3ForConditionalGeneration"),
                ["model_type"] = "gemma3",
                ["boi_token_index"] = 255999,
                ["eoi_token_index"] = 256000,
                ["image_token_index"] = 262144,
                ["mm_tokens_per_image"] = 256,
                ["eos_token_id"] = new JsonArray(1, 106),
                ["initializer_range"] = 0.02,
                ["text_config"] = c,
                ["vision_config"] = new JsonObject
                {
                    ["model_type"] = "siglip_vision_model", ["hidden_size"] = 16, ["intermediate_size"] = 32,
                    ["num_hidden_layers"] = 1, ["num_attention_heads"] = 2, ["image_size"] = 32, ["patch_size"] = 16,
                    ["vision_use_head"] = false,
                },
                [dtypeKey] = TorchDType(spec.DType),
                ["transformers_version"] = v5 ? "5.0.0" : "4.50.0",
            };
        }
        else
        {
            root = c;
            c[dtypeKey] = TorchDType(spec.DType);
            c["transformers_version"] = v5 ? "5.0.0" : "4.50.0";
        }
        return root.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }
}
