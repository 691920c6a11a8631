using System.Text.Json;
using System.Text.Json.Nodes;
using LinearLens.Loading;
using LinearLens.Numerics;

namespace LinearLens.Models;

/// <summary>RoPE scaling of a random checkpoint: "linear" (Factor) or "llama3" (all four keys).</summary>
public sealed record RopeScalingSpec(
    string Type,
    double Factor,
    double LowFreqFactor = 1,
    double HighFreqFactor = 4,
    double OriginalMaxPositionEmbeddings = 8192);

/// <summary>
/// Shape and configuration of a random Hugging Face-layout checkpoint (architectures.md §2.1, §2.4, §2.5).
/// ModelType: "llama", "qwen3", "gemma3_text", or "gemma3" (multimodal wrapper: config under <c>text_config</c>,
/// weights under <c>language_model.model.</c>). Gemma only: SlidingWindow, LayerTypes or SlidingWindowPattern,
/// RopeLocalBaseFreq, QueryPreAttnScalar (null → HeadDim). RopeScaling applies to all layers for llama/qwen3 and to
/// the global (full-attention) layers for Gemma. UseRopeParametersV5 writes the v5 <c>rope_parameters</c> form
/// (and <c>dtype</c>) instead of <c>rope_theta</c>/<c>rope_scaling</c>/<c>rope_local_base_freq</c> (and <c>torch_dtype</c>).
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
    bool UseRopeParametersV5 = false)
{
    public bool IsGemma => ModelType is "gemma3" or "gemma3_text";
    public bool HasQkNorm => ModelType is "qwen3" or "gemma3" or "gemma3_text";
    public bool IsMultimodal => ModelType == "gemma3";

    /// <summary>Prefix of decoder tensors in the files: "model." or, for the multimodal wrapper, "language_model.model.".</summary>
    public string DecoderPrefix => IsMultimodal ? "language_model.model." : "model.";

    /// <summary>Maps a canonical name ("model.…", "lm_head.weight") to the name stored in this checkpoint's files.</summary>
    public string StoredName(string canonical) =>
        !IsMultimodal ? canonical
        : canonical.StartsWith("model.", StringComparison.Ordinal) ? "language_model." + canonical
        : canonical == "lm_head.weight" ? "language_model.lm_head.weight"
        : canonical;

    /// <summary>Whether layer i uses sliding-window attention (explicit LayerTypes win; Gemma: pattern rule, default 6).</summary>
    public bool IsSliding(int layer)
    {
        if (LayerTypes is not null) return LayerTypes[layer] == "sliding_attention";
        if (!IsGemma) return false;
        int p = SlidingWindowPattern ?? 6;
        return p <= 0 || (layer + 1) % p != 0;
    }

    /// <summary>The window W of layer i (keys with 0 ≤ s−t ≤ W−1 visible), or null for full causal attention.</summary>
    public int? WindowOf(int layer) => IsSliding(layer) ? SlidingWindow : null;

    /// <summary>RoPE base of layer i: the local base on Gemma sliding layers, else RopeTheta.</summary>
    public double ThetaOf(int layer) => IsGemma && IsSliding(layer) ? RopeLocalBaseFreq : RopeTheta;

    /// <summary>RoPE scaling of layer i: none on Gemma sliding layers, else RopeScaling.</summary>
    public RopeScalingSpec? ScalingOf(int layer) => IsGemma && IsSliding(layer) ? null : RopeScaling;

    /// <summary>Attention score scale c: query_pre_attn_scalar^(−1/2) for Gemma, else D^(−1/2).</summary>
    public double AttentionScale => 1.0 / Math.Sqrt(IsGemma ? QueryPreAttnScalar ?? HeadDim : HeadDim);

    public static IReadOnlyList<string> PresetNames { get; } =
        ["tiny-llama", "tiny-qwen3", "tiny-gemma3", "tiny-gemma3-multimodal", "qwen3-0.6b"];

    /// <summary>
    /// Named shapes. tiny-llama: d=64, H=4, K=2, D=16, I=96, L=2, V=101, llama3 RoPE scaling with
    /// original_max_position_embeddings 700 so that two of the eight frequencies at D=16 fall in the blend region.
    /// tiny-qwen3: d=48, H·D=64 ≠ d, tied. tiny-gemma3: L=3, layer 1 sliding with W=3, global linear scaling ×8,
    /// query_pre_attn_scalar 24 ≠ D. tiny-gemma3-multimodal: the same as a "gemma3" wrapper. qwen3-0.6b: the real shape
    /// (d=1024, I=3072, 28 layers, 16/8 heads, D=128, V=151936, tied, bf16, θ=1e6, max_pos 40960, ε=1e-6).
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
        "qwen3-0.6b" => new("qwen3", Hidden: 1024, Intermediate: 3072, Layers: 28, Heads: 16, KvHeads: 8, HeadDim: 128, Vocab: 151936,
            MaxPos: 40960, Tie: true, DType: DType.BF16, RopeTheta: 1e6, RmsNormEps: 1e-6),
        _ => throw new ArgumentException($"unknown preset '{name}' (known: {string.Join(", ", PresetNames)})"),
    };

    /// <summary>Every tensor of the checkpoint, with canonical names ("model.…", "lm_head.weight") and shapes.</summary>
    public IReadOnlyList<(string Name, long[] Shape)> CanonicalTensors()
    {
        long d = Hidden, q = (long)Heads * HeadDim, kv = (long)KvHeads * HeadDim, I = Intermediate;
        var list = new List<(string, long[])> { ("model.embed_tokens.weight", [Vocab, d]) };
        for (int i = 0; i < Layers; i++)
        {
            string p = $"model.layers.{i}.";
            list.Add((p + "input_layernorm.weight", [d]));
            list.Add((p + "self_attn.q_proj.weight", [q, d]));
            list.Add((p + "self_attn.k_proj.weight", [kv, d]));
            list.Add((p + "self_attn.v_proj.weight", [kv, d]));
            list.Add((p + "self_attn.o_proj.weight", [d, q]));
            if (HasQkNorm)
            {
                list.Add((p + "self_attn.q_norm.weight", [HeadDim]));
                list.Add((p + "self_attn.k_norm.weight", [HeadDim]));
            }
            list.Add((p + "post_attention_layernorm.weight", [d]));
            if (IsGemma)
            {
                list.Add((p + "pre_feedforward_layernorm.weight", [d]));
                list.Add((p + "post_feedforward_layernorm.weight", [d]));
            }
            list.Add((p + "mlp.gate_proj.weight", [I, d]));
            list.Add((p + "mlp.up_proj.weight", [I, d]));
            list.Add((p + "mlp.down_proj.weight", [d, I]));
        }
        list.Add(("model.norm.weight", [d]));
        if (!Tie) list.Add(("lm_head.weight", [Vocab, d]));
        return list;
    }

    public void Validate()
    {
        if (ModelType is not ("llama" or "qwen3" or "gemma3_text" or "gemma3"))
            throw new ArgumentException($"model type '{ModelType}' (expected llama, qwen3, gemma3_text or gemma3)");
        if (Hidden <= 0 || Intermediate <= 0 || Layers <= 0 || Heads <= 0 || KvHeads <= 0 || HeadDim <= 0 || Vocab <= 0)
            throw new ArgumentException("all sizes must be positive");
        if (Heads % KvHeads != 0) throw new ArgumentException($"heads {Heads} not a multiple of kv heads {KvHeads}");
        if (HeadDim % 2 != 0) throw new ArgumentException("head_dim must be even");
        if (LayerTypes is not null && LayerTypes.Length != Layers) throw new ArgumentException("layer_types length != layers");
        if (Shards < 1) throw new ArgumentException("shards must be ≥ 1");
        if (RopeScaling is { Type: not ("linear" or "llama3") }) throw new ArgumentException($"rope scaling '{RopeScaling.Type}'");
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
/// (Irwin–Hall sum of four uniforms, unit variance): projections std 1/√fan_in; embeddings std 1 (Gemma 1/√d, so the
/// √d-scaled embedding has unit RMS); norm gains 1 + 0.15·z (Gemma: offsets 0.15·z, effective gain 1 + w).
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

    readonly record struct Init(double Mean, double Std);

    static Init InitOf(RandomCheckpointSpec spec, string name, long[] shape)
    {
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

    /// <summary>The config.json text for a spec (legacy or v5 RoPE form; multimodal wrapper for "gemma3").</summary>
    public static string ConfigJson(RandomCheckpointSpec spec)
    {
        bool v5 = spec.UseRopeParametersV5;
        string dtypeKey = v5 ? "dtype" : "torch_dtype";
        var c = new JsonObject();
        string textType = spec.IsGemma ? "gemma3_text" : spec.ModelType;
        if (!spec.IsMultimodal)
            c["architectures"] = new JsonArray(spec.ModelType switch
            {
                "llama" => "LlamaForCausalLM", "qwen3" => "Qwen3ForCausalLM", _ => "Gemma3ForCausalLM",
            });
        c["model_type"] = textType;
        c["vocab_size"] = spec.Vocab;
        c["hidden_size"] = spec.Hidden;
        c["intermediate_size"] = spec.Intermediate;
        c["num_hidden_layers"] = spec.Layers;
        c["num_attention_heads"] = spec.Heads;
        c["num_key_value_heads"] = spec.KvHeads;
        c["head_dim"] = spec.HeadDim;
        if (spec.IsGemma) c["hidden_activation"] = "gelu_pytorch_tanh";
        else c["hidden_act"] = "silu";
        c["max_position_embeddings"] = spec.MaxPos;
        c["rms_norm_eps"] = spec.RmsNormEps;
        c["attention_bias"] = false;
        c["attention_dropout"] = 0.0;
        if (spec.ModelType == "llama") { c["mlp_bias"] = false; c["pretraining_tp"] = 1; }
        c["tie_word_embeddings"] = spec.Tie;
        c["initializer_range"] = 0.02;
        c["use_cache"] = true;

        if (spec.IsGemma)
        {
            c["pad_token_id"] = 0; c["eos_token_id"] = 1; c["bos_token_id"] = 2;
            c["query_pre_attn_scalar"] = spec.QueryPreAttnScalar ?? spec.HeadDim;
            c["sliding_window"] = spec.SlidingWindow;
            if (spec.LayerTypes is not null) c["layer_types"] = new JsonArray(spec.LayerTypes.Select(x => (JsonNode?)x).ToArray());
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
            if (spec.ModelType == "qwen3")
            {
                c["use_sliding_window"] = false;
                c["sliding_window"] = spec.SlidingWindow;
                c["max_window_layers"] = spec.Layers;
                if (spec.LayerTypes is not null) c["layer_types"] = new JsonArray(spec.LayerTypes.Select(x => (JsonNode?)x).ToArray());
            }
            if (v5)
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
