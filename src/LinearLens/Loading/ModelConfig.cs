using System.Text.Json;

namespace LinearLens.Loading;

public enum Family { Llama, Qwen3, Gemma3 }

public enum Activation { Silu, GeluTanh }

/// <summary>How one layer type rotates q and k (architectures.md §1.3).</summary>
public sealed record RopeSpec(
    string Type,                 // "default", "linear" or "llama3"
    double Theta,
    double Factor = 1,
    double LowFreqFactor = 1,
    double HighFreqFactor = 4,
    double OriginalMaxPositions = 8192,
    double PartialRotaryFactor = 1);

/// <summary>
/// The decoder's configuration, parsed once from config.json with each family's class defaults
/// (architectures.md §1.8, §2.1, §2.4, §2.5). A key that is missing takes the family default; a key that is
/// JSON null means "none" (no scaling, no window), which is not the same thing.
/// </summary>
public sealed record ModelConfig
{
    public required string ModelType { get; init; }          // as written in config.json
    public required Family Family { get; init; }
    public required int HiddenSize { get; init; }
    public required int IntermediateSize { get; init; }
    public required int NumLayers { get; init; }
    public required int NumHeads { get; init; }
    public required int NumKvHeads { get; init; }
    public required int HeadDim { get; init; }
    public required int VocabSize { get; init; }
    public required int MaxPositions { get; init; }
    public required double RmsNormEps { get; init; }
    public required Activation Activation { get; init; }
    public required bool TieWordEmbeddings { get; init; }
    /// <summary>Per layer: the sliding window W (keys with 0 ≤ s−t ≤ W−1 are visible), or null for full causal attention.</summary>
    public required int?[] SlidingWindow { get; init; }
    /// <summary>Per layer: its RoPE (Gemma 3: local base for sliding layers, global base and scaling for full layers).</summary>
    public required RopeSpec[] Rope { get; init; }
    /// <summary>Attention score scale c in c·⟨q, k⟩: D^(−1/2), or query_pre_attn_scalar^(−1/2) for Gemma 3.</summary>
    public required double AttentionScale { get; init; }
    public int? BosTokenId { get; init; }
    public int[] EosTokenIds { get; init; } = [];
    public string? StoredDType { get; init; }

    /// <summary>Gemma: √d embedding scale, (1+w) norm gains, four norms per layer.</summary>
    public bool IsGemma => Family == Family.Gemma3;
    public bool HasQkNorm => Family is Family.Qwen3 or Family.Gemma3;
    public int QDim => NumHeads * HeadDim;
    public int KvDim => NumKvHeads * HeadDim;

    public static ModelConfig Load(string folder)
    {
        string path = Path.Combine(folder, "config.json");
        if (!File.Exists(path))
            throw new LinearLensException($"config.json not found in {folder} (point --model at a Hugging Face model folder)");
        JsonDocument doc;
        try { doc = JsonDocument.Parse(File.ReadAllText(path)); }
        catch (JsonException e) { throw new LinearLensException($"{path} is not valid JSON: {e.Message}"); }
        using (doc) return Parse(doc.RootElement, path);
    }

    public static ModelConfig Parse(JsonElement root, string where = "config.json")
    {
        var top = new Keys(root, where);
        string modelType = top.String("model_type") ?? throw new LinearLensException($"{where} has no model_type (expected llama, qwen3, gemma3_text or gemma3)");
        var c = modelType == "gemma3"
            ? new Keys(root.TryGetProperty("text_config", out var tc) && tc.ValueKind == JsonValueKind.Object ? tc : default, where + " text_config")
            : top;
        Family family = modelType switch
        {
            "llama" => Family.Llama,
            "qwen3" => Family.Qwen3,
            "gemma3_text" or "gemma3" => Family.Gemma3,
            _ => throw new LinearLensException($"{where}: model_type '{modelType}' is not supported (LinearLens runs llama, qwen3, gemma3_text and gemma3)"),
        };

        // Class defaults (architectures.md §2.1 LlamaConfig, §2.4 Qwen3Config, §2.5 Gemma3TextConfig).
        var (dVocab, dHidden, dInter, dLayers, dHeads, dMaxPos, dEps, dTheta, dTie) = family switch
        {
            Family.Llama => (32000, 4096, 11008, 32, 32, 2048, 1e-6, 10000.0, false),
            Family.Qwen3 => (151936, 4096, 22016, 32, 32, 32768, 1e-6, 10000.0, false),
            _ => (262208, 2304, 9216, 26, 8, 131072, 1e-6, 1e6, true),
        };
        int hidden = c.Int("hidden_size") ?? dHidden;
        int heads = c.Int("num_attention_heads") ?? dHeads;
        int? kvDefault = family switch { Family.Gemma3 => 4, Family.Qwen3 => 32, _ => null };
        int kvHeads = c.Has("num_key_value_heads") ? c.Int("num_key_value_heads") ?? heads : kvDefault ?? heads;
        int headDimDefault = family switch { Family.Qwen3 => 128, Family.Gemma3 => 256, _ => heads > 0 ? hidden / heads : 0 };
        int headDim = c.Int("head_dim") ?? headDimDefault;
        int layers = c.Int("num_hidden_layers") ?? dLayers;

        string act = family == Family.Gemma3
            ? c.String("hidden_activation") ?? c.String("hidden_act") ?? "gelu_pytorch_tanh"
            : c.String("hidden_act") ?? "silu";
        Activation activation = act switch
        {
            "silu" or "swish" => Activation.Silu,
            "gelu_pytorch_tanh" or "gelu_new" or "gelu_fast" => Activation.GeluTanh,
            _ => throw new LinearLensException($"{where}: activation '{act}' is not supported (silu, gelu_pytorch_tanh)"),
        };
        foreach (var key in new[] { "attention_bias", "mlp_bias" })
            if (c.Bool(key) == true)
                throw new LinearLensException($"{where}: {key} = true is not supported yet (biases make the frozen map affine; no supported checkpoint uses them)");

        // Layer types: the explicit list wins; otherwise each family's rule.
        var sliding = new bool[layers];
        int? window = family switch
        {
            Family.Gemma3 => c.Has("sliding_window") ? c.Int("sliding_window") : 4096,
            Family.Qwen3 => c.Has("sliding_window") ? c.Int("sliding_window") : 4096,
            _ => null,
        };
        if (c.Has("layer_types") && c.Raw("layer_types") is { ValueKind: JsonValueKind.Array } lt)
        {
            var types = lt.EnumerateArray().Select(x => x.GetString()).ToArray();
            if (types.Length != layers)
                throw new LinearLensException($"{where}: layer_types has {types.Length} entries for {layers} layers");
            for (int i = 0; i < layers; i++)
                sliding[i] = types[i] switch
                {
                    "sliding_attention" => true,
                    "full_attention" => false,
                    var t => throw new LinearLensException($"{where}: layer_types[{i}] = '{t}' (expected full_attention or sliding_attention)"),
                };
        }
        else if (family == Family.Gemma3)
        {
            int pattern = c.Int("sliding_window_pattern") ?? c.Int("_sliding_window_pattern") ?? 6;
            for (int i = 0; i < layers; i++) sliding[i] = pattern <= 0 || (i + 1) % pattern != 0;
        }
        else if (family == Family.Qwen3)
        {
            bool use = c.Bool("use_sliding_window") ?? false;
            int maxWindowLayers = c.Int("max_window_layers") ?? 28;
            for (int i = 0; i < layers; i++) sliding[i] = use && window != null && i >= maxWindowLayers;
        }
        if (family == Family.Gemma3 && c.Bool("use_bidirectional_attention") == true)
            throw new LinearLensException($"{where}: use_bidirectional_attention = true is not a causal language model; not supported");

        // RoPE per layer type.
        int maxPos = c.Int("max_position_embeddings") ?? dMaxPos;
        double partial = c.Double("partial_rotary_factor") ?? 1.0;
        RopeSpec full, local;
        if (c.Raw("rope_parameters") is { ValueKind: JsonValueKind.Object } rp)
        {
            if (family == Family.Gemma3 && rp.TryGetProperty("full_attention", out var fa))
            {
                full = ParseRope(new Keys(fa, where + " rope_parameters.full_attention"), dTheta, maxPos, partial);
                local = rp.TryGetProperty("sliding_attention", out var sa)
                    ? ParseRope(new Keys(sa, where + " rope_parameters.sliding_attention"), 10000, maxPos, partial)
                    : new RopeSpec("default", 10000);
            }
            else local = full = ParseRope(new Keys(rp, where + " rope_parameters"), dTheta, maxPos, partial);
        }
        else
        {
            double theta = c.Double("rope_theta") ?? dTheta;
            full = c.Raw("rope_scaling") is { ValueKind: JsonValueKind.Object } rs
                ? ParseRope(new Keys(rs, where + " rope_scaling"), theta, maxPos, partial, theta)
                : new RopeSpec("default", theta, PartialRotaryFactor: partial);
            // Gemma 3 local layers: their own base, always default RoPE (legacy rope_scaling is global-only).
            local = family == Family.Gemma3 ? new RopeSpec("default", c.Double("rope_local_base_freq") ?? 10000) : full;
        }

        double scale = family == Family.Gemma3
            ? 1.0 / Math.Sqrt(c.Double("query_pre_attn_scalar") ?? 256)
            : 1.0 / Math.Sqrt(headDim);
        if (family == Family.Gemma3 && c.Double("attn_logit_softcapping") is not null)
        { /* Gemma 3's attention never passes the soft-cap to the kernel (architectures.md §1.4): ignored, as HF does. */ }
        if (c.Double("final_logit_softcapping") is not null)
            throw new LinearLensException($"{where}: final_logit_softcapping is set; LinearLens does not support logit soft-capping");

        var cfg = new ModelConfig
        {
            ModelType = modelType,
            Family = family,
            HiddenSize = hidden,
            IntermediateSize = c.Int("intermediate_size") ?? dInter,
            NumLayers = layers,
            NumHeads = heads,
            NumKvHeads = kvHeads,
            HeadDim = headDim,
            VocabSize = c.Int("vocab_size") ?? dVocab,
            MaxPositions = maxPos,
            RmsNormEps = c.Double("rms_norm_eps") ?? dEps,
            Activation = activation,
            TieWordEmbeddings = top.Bool("tie_word_embeddings") ?? c.Bool("tie_word_embeddings") ?? dTie,
            SlidingWindow = sliding.Select(s => s ? window : null).ToArray(),
            Rope = sliding.Select(s => s ? local : full).ToArray(),
            AttentionScale = scale,
            BosTokenId = c.Int("bos_token_id") ?? top.Int("bos_token_id"),
            EosTokenIds = c.IntOrList("eos_token_id") ?? top.IntOrList("eos_token_id") ?? [],
            StoredDType = top.String("torch_dtype") ?? top.String("dtype") ?? c.String("torch_dtype") ?? c.String("dtype"),
        };
        cfg.Validate(where);
        return cfg;
    }

    static RopeSpec ParseRope(Keys k, double defaultTheta, int maxPos, double partial, double? legacyTheta = null)
    {
        string type = k.String("rope_type") ?? k.String("type") ?? "default";
        double theta = legacyTheta ?? k.Double("rope_theta") ?? defaultTheta;
        partial = k.Double("partial_rotary_factor") ?? partial;
        return type switch
        {
            "default" => new RopeSpec("default", theta, PartialRotaryFactor: partial),
            "linear" => new RopeSpec("linear", theta, k.Double("factor") ?? throw new LinearLensException($"{k.Where}: linear RoPE scaling needs 'factor'"), PartialRotaryFactor: partial),
            "llama3" => new RopeSpec("llama3", theta,
                k.Double("factor") ?? throw new LinearLensException($"{k.Where}: llama3 RoPE scaling needs 'factor'"),
                k.Double("low_freq_factor") ?? 1, k.Double("high_freq_factor") ?? 4,
                k.Double("original_max_position_embeddings") ?? maxPos, partial),
            _ => throw new LinearLensException($"{k.Where}: rope_type '{type}' is not supported yet (default, linear, llama3)"),
        };
    }

    void Validate(string where)
    {
        void Positive(string name, int v) { if (v <= 0) throw new LinearLensException($"{where}: {name} = {v} must be positive"); }
        Positive("hidden_size", HiddenSize); Positive("intermediate_size", IntermediateSize); Positive("num_hidden_layers", NumLayers);
        Positive("num_attention_heads", NumHeads); Positive("num_key_value_heads", NumKvHeads); Positive("head_dim", HeadDim);
        Positive("vocab_size", VocabSize); Positive("max_position_embeddings", MaxPositions);
        if (NumHeads % NumKvHeads != 0)
            throw new LinearLensException($"{where}: num_attention_heads {NumHeads} is not a multiple of num_key_value_heads {NumKvHeads}");
        foreach (var r in Rope)
            if ((int)Math.Floor(HeadDim * r.PartialRotaryFactor) % 2 != 0)
                throw new LinearLensException($"{where}: rotary dimension {HeadDim}·{r.PartialRotaryFactor} is odd");
        if (RmsNormEps < 0) throw new LinearLensException($"{where}: rms_norm_eps is negative");
    }

    /// <summary>Typed access to a JSON object that tells "missing" from "null".</summary>
    readonly struct Keys(JsonElement obj, string where)
    {
        public string Where => where;
        public bool Has(string key) => obj.ValueKind == JsonValueKind.Object && obj.TryGetProperty(key, out _);
        public JsonElement? Raw(string key) =>
            obj.ValueKind == JsonValueKind.Object && obj.TryGetProperty(key, out var v) && v.ValueKind != JsonValueKind.Null ? v : null;

        public int? Int(string key) => Raw(key) is { } v
            ? v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int i) ? i
              : v.ValueKind == JsonValueKind.Number && v.TryGetDouble(out double d) && d == Math.Floor(d) && Math.Abs(d) < int.MaxValue ? (int)d
              : throw new LinearLensException($"{where}: '{key}' should be an integer, found {v.GetRawText()}")
            : null;

        public double? Double(string key) => Raw(key) is { } v
            ? v.ValueKind == JsonValueKind.Number ? v.GetDouble() : throw new LinearLensException($"{where}: '{key}' should be a number, found {v.GetRawText()}")
            : null;

        public string? String(string key) => Raw(key) is { } v
            ? v.ValueKind == JsonValueKind.String ? v.GetString() : throw new LinearLensException($"{where}: '{key}' should be a string, found {v.GetRawText()}")
            : null;

        public bool? Bool(string key) => Raw(key) is { } v
            ? v.ValueKind switch { JsonValueKind.True => true, JsonValueKind.False => false, _ => throw new LinearLensException($"{where}: '{key}' should be true or false, found {v.GetRawText()}") }
            : null;

        public int[]? IntOrList(string key) => Raw(key) is { } v
            ? v.ValueKind == JsonValueKind.Array ? v.EnumerateArray().Select(x => x.GetInt32()).ToArray() : [Int(key)!.Value]
            : null;
    }
}
