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
        if (c.StringList("layer_types") is { } types)
        {
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

    /// <summary>
    /// Range checks of every value the loader and the forward pass rely on, so that a bad config.json ends in one
    /// line here rather than a crash, a huge allocation or a silent NaN later. The size limits are far beyond any
    /// real model (the largest have d ≈ 16k, I ≈ 53k, L ≈ 126, V ≈ 262k) and keep every derived size in range.
    /// </summary>
    const int MaxLayers = 10_000, MaxDimension = 1 << 24;

    void Validate(string where)
    {
        void Range(string name, long v, long max)
        {
            if (v <= 0) throw new LinearLensException($"{where}: {name} = {v} must be positive");
            if (v > max) throw new LinearLensException($"{where}: {name} = {v} is larger than LinearLens accepts ({max}); the config is corrupt or not a supported model");
        }
        void Finite(string name, double v, bool zeroAllowed)
        {
            if (!double.IsFinite(v) || v < 0 || (!zeroAllowed && v == 0))
                throw new LinearLensException($"{where}: {name} = {v.ToString(System.Globalization.CultureInfo.InvariantCulture)} must be a finite number {(zeroAllowed ? "≥ 0" : "> 0")}");
        }
        const int MaxSize = 1 << 20, MaxHeads = 1 << 12, MaxHeadDim = 1 << 14;
        Range("hidden_size", HiddenSize, MaxSize); Range("intermediate_size", IntermediateSize, 1 << 22);
        Range("num_hidden_layers", NumLayers, MaxLayers);
        Range("num_attention_heads", NumHeads, MaxHeads); Range("num_key_value_heads", NumKvHeads, MaxHeads);
        Range("head_dim", HeadDim, MaxHeadDim);
        Range("vocab_size", VocabSize, 1 << 24); Range("max_position_embeddings", MaxPositions, int.MaxValue);
        Range("num_attention_heads·head_dim", (long)NumHeads * HeadDim, MaxSize);
        if (NumHeads % NumKvHeads != 0)
            throw new LinearLensException($"{where}: num_attention_heads {NumHeads} is not a multiple of num_key_value_heads {NumKvHeads}");
        if (SlidingWindow.Length != NumLayers || Rope.Length != NumLayers)
            throw new LinearLensException($"{where}: {SlidingWindow.Length} layer types for {NumLayers} layers");
        foreach (var w in SlidingWindow)
            if (w is int window && window <= 0)
                throw new LinearLensException($"{where}: sliding_window = {window} must be positive (or null for full attention)");
        foreach (var r in Rope)
        {
            Finite("rope_theta", r.Theta, zeroAllowed: false);
            if (!(r.PartialRotaryFactor > 0 && r.PartialRotaryFactor <= 1))
                throw new LinearLensException($"{where}: partial_rotary_factor = {r.PartialRotaryFactor} must lie in (0, 1]");
            if ((int)Math.Floor(HeadDim * r.PartialRotaryFactor) % 2 != 0)
                throw new LinearLensException($"{where}: rotary dimension {HeadDim}·{r.PartialRotaryFactor} is odd");
            if (r.Type != "default") Finite("RoPE scaling factor", r.Factor, zeroAllowed: false);
            if (r.Type == "llama3")
            {
                Finite("RoPE low_freq_factor", r.LowFreqFactor, zeroAllowed: false);
                Finite("RoPE high_freq_factor", r.HighFreqFactor, zeroAllowed: false);
                Finite("RoPE original_max_position_embeddings", r.OriginalMaxPositions, zeroAllowed: false);
                if (r.HighFreqFactor <= r.LowFreqFactor)
                    throw new LinearLensException($"{where}: RoPE high_freq_factor {r.HighFreqFactor} must exceed low_freq_factor {r.LowFreqFactor} (the smoothing divides by their difference)");
            }
        }
        Finite("rms_norm_eps", RmsNormEps, zeroAllowed: true);
        Finite("attention scale (query_pre_attn_scalar or head_dim)", AttentionScale, zeroAllowed: false);
        if (BosTokenId is < 0) throw new LinearLensException($"{where}: bos_token_id = {BosTokenId} must be a token id ≥ 0");
        foreach (int e in EosTokenIds)
            if (e < 0) throw new LinearLensException($"{where}: eos_token_id {e} must be a token id ≥ 0");
    }

    /// <summary>
    /// Typed access to a JSON object that tells "missing" from "null". Every accessor checks the value's JSON type
    /// and range and names the file, the key and what was expected.
    /// </summary>
    readonly struct Keys
    {
        readonly JsonElement obj;
        readonly string where;

        public Keys(JsonElement obj, string where)
        {
            if (obj.ValueKind is not (JsonValueKind.Object or JsonValueKind.Undefined or JsonValueKind.Null))
                throw new LinearLensException($"{where} is {Describe(obj)} where a JSON object was expected");
            this.obj = obj; this.where = where;
        }

        public string Where => where;
        public bool Has(string key) => obj.ValueKind == JsonValueKind.Object && obj.TryGetProperty(key, out _);
        public JsonElement? Raw(string key) =>
            obj.ValueKind == JsonValueKind.Object && obj.TryGetProperty(key, out var v) && v.ValueKind != JsonValueKind.Null ? v : null;

        public int? Int(string key)
        {
            if (Raw(key) is not { } v) return null;
            int i = AsInt(v, $"'{key}'");
            // Parse sizes arrays by some of these before Validate runs, so their ranges are checked as they are read.
            long max = key switch
            {
                "num_hidden_layers" => MaxLayers,
                "hidden_size" or "num_attention_heads" or "num_key_value_heads" or "head_dim" or "intermediate_size" or "vocab_size" => MaxDimension,
                _ => int.MaxValue,
            };
            if (i < 0 || i > max)
                throw new LinearLensException($"{where}: '{key}' = {i} is outside 0…{max}; the config is corrupt or not a supported model");
            return i;
        }

        int AsInt(JsonElement v, string what) =>
            v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int i) ? i
            : v.ValueKind == JsonValueKind.Number && v.TryGetDouble(out double d) && d == Math.Floor(d) && Math.Abs(d) < int.MaxValue ? (int)d
            : throw new LinearLensException($"{where}: {what} should be an integer between {int.MinValue} and {int.MaxValue}, found {Describe(v)}");

        public double? Double(string key) => Raw(key) is { } v
            ? v.ValueKind == JsonValueKind.Number && v.TryGetDouble(out double d) && double.IsFinite(d) ? d
              : throw new LinearLensException($"{where}: '{key}' should be a finite number, found {Describe(v)}")
            : null;

        public string? String(string key) => Raw(key) is { } v
            ? v.ValueKind == JsonValueKind.String ? Text(v, $"'{key}'") : throw new LinearLensException($"{where}: '{key}' should be a string, found {Describe(v)}")
            : null;

        /// <summary>A string value; an escape that is no valid UTF-16 ("\ud800") is an error, not an exception.</summary>
        string Text(JsonElement v, string what)
        {
            try { return v.GetString()!; }
            catch (InvalidOperationException) { throw new LinearLensException($"{where}: {what} is not a valid Unicode string, found {Describe(v)}"); }
        }

        public bool? Bool(string key) => Raw(key) is { } v
            ? v.ValueKind switch { JsonValueKind.True => true, JsonValueKind.False => false, _ => throw new LinearLensException($"{where}: '{key}' should be true or false, found {Describe(v)}") }
            : null;

        /// <summary>An integer or a list of integers (eos_token_id).</summary>
        public int[]? IntOrList(string key)
        {
            if (Raw(key) is not { } v) return null;
            if (v.ValueKind != JsonValueKind.Array) return [AsInt(v, $"'{key}'")];
            var result = new int[v.GetArrayLength()];
            int i = 0;
            foreach (var x in v.EnumerateArray()) { result[i] = AsInt(x, $"'{key}'[{i}]"); i++; }
            return result;
        }

        /// <summary>A list of strings (layer_types).</summary>
        public string[]? StringList(string key)
        {
            if (Raw(key) is not { } v) return null;
            if (v.ValueKind != JsonValueKind.Array) throw new LinearLensException($"{where}: '{key}' should be a list of strings, found {Describe(v)}");
            var result = new string[v.GetArrayLength()];
            int i = 0;
            foreach (var x in v.EnumerateArray())
            {
                if (x.ValueKind != JsonValueKind.String) throw new LinearLensException($"{where}: '{key}'[{i}] should be a string, found {Describe(x)}");
                result[i] = Text(x, $"'{key}'[{i}]");
                i++;
            }
            return result;
        }

        static string Describe(JsonElement v) => JsonFile.Describe(v);
    }
}
