using System.Text.Json;

namespace LinearLens.Loading;

public enum Activation { Silu, GeluTanh }

/// <summary>How one layer type rotates q and k (architectures.md §1.3).</summary>
/// <param name="Type">"default", "linear", "llama3" or "longrope".</param>
/// <param name="AttentionFactor">longrope: the factor a on cos and sin (1 otherwise).</param>
/// <param name="ShortFactor">longrope: per-frequency divisors e_i (length R/2) used while the sequence is at most
/// OriginalMaxPositions long; <paramref name="LongFactor"/> beyond that.</param>
/// <param name="FrequencyDivisors">Per-frequency divisors stored with the weights (GGUF's rope_freqs.weight: Llama 3
/// scaling precomputed by llama.cpp's converter), applied to the default frequencies; null: none.</param>
public sealed record RopeSpec(
    string Type,
    double Theta,
    double Factor = 1,
    double LowFreqFactor = 1,
    double HighFreqFactor = 4,
    double OriginalMaxPositions = 8192,
    double PartialRotaryFactor = 1,
    double AttentionFactor = 1,
    double[]? ShortFactor = null,
    double[]? LongFactor = null,
    double[]? FrequencyDivisors = null)
{
    /// <summary>longrope: whether a sequence of this many positions uses the long factors (HF: max position + 1 &gt; N0).</summary>
    public bool UsesLongFactors(int length) => Type == "longrope" && length > OriginalMaxPositions;
}

/// <summary>
/// The decoder's configuration, parsed once from config.json by its <see cref="Models.Family"/> (class defaults and
/// config keys live in the family's file, architectures.md §1.8, §2). A key that is missing takes the family default;
/// a key that is JSON null means "none" (no scaling, no window), which is not the same thing. The traits the engine
/// reads (norm gains 1 + w, embedding scale, q/k norm, biases) are explicit here, copied from the family.
/// </summary>
public sealed record ModelConfig
{
    public required string ModelType { get; init; }          // as written in config.json
    public required Models.Family Family { get; init; }
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
    /// <summary>Which projections carry biases (the frozen map is then affine).</summary>
    public required Models.LayerBiases Biases { get; init; }
    public int? BosTokenId { get; init; }
    public int[] EosTokenIds { get; init; } = [];
    public string? StoredDType { get; init; }

    /// <summary>Norm gains are stored as offsets: the effective gain is 1 + w (Gemma).</summary>
    public bool NormGainOffset => Family.GainOffset;
    /// <summary>Input embeddings are multiplied by √d (Gemma).</summary>
    public bool ScalesEmbeddings => Family.ScalesEmbeddings;
    public Models.QkNormKind QkNorm => Family.QkNorm;
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
        string modelType = top.String("model_type") ?? throw new LinearLensException($"{where} has no model_type (expected one of {string.Join(", ", Models.Family.All.SelectMany(f => f.ModelTypes))})");
        var family = Models.Family.For(modelType, where);
        var c = family.TextKeys(top);
        var dflt = family.Defaults;

        int hidden = c.Int("hidden_size") ?? dflt.Hidden;
        int heads = c.Int("num_attention_heads") ?? dflt.Heads;
        int kvHeads = c.Has("num_key_value_heads") ? c.Int("num_key_value_heads") ?? heads : dflt.KvHeads ?? heads;
        int headDim = c.Int("head_dim") ?? dflt.HeadDim ?? (heads > 0 ? hidden / heads : 0);
        int layers = c.Int("num_hidden_layers") ?? dflt.Layers;
        int maxPos = c.Int("max_position_embeddings") ?? dflt.MaxPositions;
        var activation = family.ParseActivation(c);
        var biases = family.ParseBiases(c);

        // Layer types: the explicit list wins (where the family reads it); otherwise the family's rule.
        int? window = family.ParseWindow(c);
        bool[] sliding;
        if (family.ReadsLayerTypes && c.Raw("layer_types") is { ValueKind: JsonValueKind.Array } lt)
        {
            var types = lt.EnumerateArray().ToArray();
            if (types.Length != layers)
                throw new LinearLensException($"{where}: layer_types has {types.Length} entries for {layers} layers");
            sliding = new bool[layers];
            for (int i = 0; i < layers; i++)
                sliding[i] = (types[i].ValueKind == JsonValueKind.String ? types[i].GetString() : types[i].GetRawText()) switch
                {
                    "sliding_attention" => true,
                    "full_attention" => false,
                    var t => throw new LinearLensException($"{where}: layer_types[{i}] = {t} (expected \"full_attention\" or \"sliding_attention\")"),
                };
        }
        else sliding = family.SlidingLayers(c, Math.Max(layers, 0), window);
        if (sliding.Any(s => s) && window is null)
            throw new LinearLensException($"{where}: layer_types has sliding_attention layers but sliding_window is null");

        var (full, local) = family.ParseRope(c, dflt.Theta, maxPos);
        if (c.Double("final_logit_softcapping") is not null)
            throw new LinearLensException($"{where}: final_logit_softcapping is set; LinearLens does not support logit soft-capping");
        // Gemma 3's attention never passes attn_logit_softcapping to the kernel (architectures.md §1.4): ignored, as HF does.

        var cfg = new ModelConfig
        {
            ModelType = modelType,
            Family = family,
            HiddenSize = hidden,
            IntermediateSize = c.Int("intermediate_size") ?? dflt.Intermediate,
            NumLayers = layers,
            NumHeads = heads,
            NumKvHeads = kvHeads,
            HeadDim = headDim,
            VocabSize = c.Int("vocab_size") ?? dflt.Vocab,
            MaxPositions = maxPos,
            RmsNormEps = c.Double("rms_norm_eps") ?? dflt.Eps,
            Activation = activation,
            TieWordEmbeddings = top.Bool("tie_word_embeddings") ?? c.Bool("tie_word_embeddings") ?? dflt.Tie,
            SlidingWindow = sliding.Select(s => s ? window : null).ToArray(),
            Rope = sliding.Select(s => s ? local : full).ToArray(),
            AttentionScale = family.AttentionScale(c, headDim),
            Biases = biases,
            BosTokenId = c.Int("bos_token_id") ?? top.Int("bos_token_id"),
            EosTokenIds = c.IntOrList("eos_token_id") ?? top.IntOrList("eos_token_id") ?? [],
            StoredDType = top.String("torch_dtype") ?? top.String("dtype") ?? c.String("torch_dtype") ?? c.String("dtype"),
        };
        cfg.Validate(where);
        return cfg;
    }

    internal static Activation ActivationNamed(string act, string where) => act switch
    {
        "silu" or "swish" => Activation.Silu,
        "gelu_pytorch_tanh" or "gelu_new" or "gelu_fast" => Activation.GeluTanh,
        _ => throw new LinearLensException($"{where}: activation '{act}' is not supported (silu, gelu_pytorch_tanh)"),
    };

    /// <summary>Size limits checked as the keys are read (Keys.Int), before Parse sizes any array by them.</summary>
    const int MaxLayers = 10_000, MaxDimension = 1 << 24;

    /// <summary>
    /// Range checks of every value the loader and the forward pass rely on, so that a bad config.json ends in one
    /// line here rather than a crash, a huge allocation or a silent NaN later. The size limits are far beyond any
    /// real model (the largest have d ≈ 16k, I ≈ 53k, L ≈ 126, V ≈ 262k) and keep every derived size in range.
    /// </summary>
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
        foreach (var r in Rope.Where(r => r.Type == "longrope").Distinct())
        {
            int half = (int)Math.Floor(HeadDim * r.PartialRotaryFactor) / 2;
            if (r.ShortFactor!.Length != half || r.LongFactor!.Length != half)
                throw new LinearLensException($"{where}: longrope short_factor/long_factor have {r.ShortFactor.Length}/{r.LongFactor.Length} entries; the rotary dimension needs {half} (head_dim·partial_rotary_factor/2)");
            if (r.ShortFactor.Concat(r.LongFactor).Any(f => !(f > 0) || !double.IsFinite(f)))
                throw new LinearLensException($"{where}: longrope factors must be finite and positive");
            Finite("longrope attention_factor", r.AttentionFactor, zeroAllowed: false);
        }
        Finite("rms_norm_eps", RmsNormEps, zeroAllowed: true);
        Finite("attention scale (query_pre_attn_scalar or head_dim)", AttentionScale, zeroAllowed: false);
        if (BosTokenId is < 0) throw new LinearLensException($"{where}: bos_token_id = {BosTokenId} must be a token id ≥ 0");
        foreach (int e in EosTokenIds)
            if (e < 0) throw new LinearLensException($"{where}: eos_token_id {e} must be a token id ≥ 0");
        // an id the model cannot emit: generation would never stop at it (a GGUF file's ids are checked the same way)
        if (BosTokenId is int bos && bos >= VocabSize)
            throw new LinearLensException($"{where}: bos_token_id = {bos} is outside the vocabulary 0…{VocabSize - 1} (vocab_size {VocabSize})");
        foreach (int e in EosTokenIds)
            if (e >= VocabSize) throw new LinearLensException($"{where}: eos_token_id {e} is outside the vocabulary 0…{VocabSize - 1} (vocab_size {VocabSize}); generation could never stop at it");
    }

    /// <summary>
    /// Typed access to a JSON object that tells "missing" from "null". Every accessor checks the value's JSON type
    /// and range and names the file, the key and what was expected.
    /// </summary>
    internal readonly struct Keys
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
        /// <summary>The keys of a nested object, named for messages as where + " " + name.</summary>
        public Keys Nested(JsonElement inner, string name) => new(inner, where + " " + name);
        public bool Has(string key) => obj.ValueKind == JsonValueKind.Object && obj.TryGetProperty(key, out _);
        /// <summary>The value of a key (null when missing or JSON null); every string inside it is checked to be decodable.</summary>
        public JsonElement? Raw(string key)
        {
            if (obj.ValueKind != JsonValueKind.Object || !obj.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null) return null;
            JsonFile.RequireDecodable(v, $"{where}: '{key}'");
            return v;
        }

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

        /// <summary>A list of finite numbers (longrope factors).</summary>
        public double[]? DoubleList(string key)
        {
            if (Raw(key) is not { } v) return null;
            if (v.ValueKind != JsonValueKind.Array) throw new LinearLensException($"{where}: '{key}' should be a list of numbers, found {Describe(v)}");
            var result = new double[v.GetArrayLength()];
            int i = 0;
            foreach (var x in v.EnumerateArray())
            {
                if (x.ValueKind != JsonValueKind.Number || !x.TryGetDouble(out result[i]) || !double.IsFinite(result[i]))
                    throw new LinearLensException($"{where}: '{key}'[{i}] should be a finite number, found {Describe(x)}");
                i++;
            }
            return result;
        }

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

/// <summary>The RoPE keys of config.json, legacy (rope_theta + rope_scaling) and v5 (rope_parameters) forms (architectures.md §1.3, §1.8).</summary>
internal static class RopeParsing
{
    /// <summary>One RoPE for every layer. <paramref name="originalMaxPositions"/>: a top-level N0 that wins over the rope object's (Phi-3).</summary>
    public static (RopeSpec full, RopeSpec sliding) Uniform(ModelConfig.Keys c, double defaultTheta, int maxPos, int? originalMaxPositions,
        IReadOnlyDictionary<string, string>? aliases = null)
    {
        double partial = c.Double("partial_rotary_factor") ?? 1.0;
        RopeSpec spec;
        if (c.Raw("rope_parameters") is { ValueKind: JsonValueKind.Object } rp)
            spec = Parse(c.Nested(rp, "rope_parameters"), defaultTheta, maxPos, partial, originalMaxPositions, aliases);
        else
        {
            double theta = c.Double("rope_theta") ?? defaultTheta;
            spec = c.Raw("rope_scaling") is { ValueKind: JsonValueKind.Object } rs
                ? Parse(c.Nested(rs, "rope_scaling"), theta, maxPos, partial, originalMaxPositions, aliases, legacyTheta: theta)
                : new RopeSpec("default", theta, PartialRotaryFactor: partial);
        }
        return (spec, spec);
    }

    public static RopeSpec Parse(ModelConfig.Keys k, double defaultTheta, int maxPos, double partial, int? originalMaxPositions,
        IReadOnlyDictionary<string, string>? aliases, double? legacyTheta = null)
    {
        string type = k.String("rope_type") ?? k.String("type") ?? "default";
        if (aliases is not null && aliases.TryGetValue(type, out var canonical)) type = canonical;
        double theta = legacyTheta ?? k.Double("rope_theta") ?? defaultTheta;
        partial = k.Double("partial_rotary_factor") ?? partial;
        double n0 = originalMaxPositions ?? k.Double("original_max_position_embeddings") ?? maxPos;
        double Factor() => k.Double("factor") ?? throw new LinearLensException($"{k.Where}: {type} RoPE scaling needs 'factor'");
        switch (type)
        {
            case "default": return new RopeSpec("default", theta, PartialRotaryFactor: partial);
            case "linear": return new RopeSpec("linear", theta, Factor(), PartialRotaryFactor: partial);
            case "llama3":
                return new RopeSpec("llama3", theta, Factor(), k.Double("low_freq_factor") ?? 1, k.Double("high_freq_factor") ?? 4,
                    k.Double("original_max_position_embeddings") ?? maxPos, partial);
            case "longrope":
            {
                // f = factor, else max_position_embeddings / N0; a = attention_factor, else 1 (f ≤ 1) or √(1 + ln f / ln N0)
                double f = k.Double("factor") ?? maxPos / n0;
                double a = k.Double("attention_factor") ?? (f <= 1 ? 1.0 : Math.Sqrt(1 + Math.Log(f) / Math.Log(n0)));
                return new RopeSpec("longrope", theta, f, OriginalMaxPositions: n0, PartialRotaryFactor: partial, AttentionFactor: a,
                    ShortFactor: k.DoubleList("short_factor") ?? throw new LinearLensException($"{k.Where}: longrope RoPE scaling needs 'short_factor'"),
                    LongFactor: k.DoubleList("long_factor") ?? throw new LinearLensException($"{k.Where}: longrope RoPE scaling needs 'long_factor'"));
            }
            default:
                throw new LinearLensException($"{k.Where}: rope_type '{type}' is not supported (LinearLens runs default, linear, llama3 and longrope RoPE)");
        }
    }
}
