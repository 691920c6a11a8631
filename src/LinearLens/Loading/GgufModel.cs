using System.Text.Json;
using System.Text.Json.Nodes;
using LinearLens.Numerics;

namespace LinearLens.Loading;

/// <summary>
/// A GGUF model opened as a Hugging Face checkpoint: the metadata turned into config.json's keys
/// (<see cref="HfConfig"/>, parsed by <see cref="ModelConfig.Parse"/>), the tensors renamed to Hugging Face's
/// names with llama.cpp's layout conventions undone — llama's q/k row permutation (rows moved whole, in their
/// stored type), phi3's fused qkv and gate/up kept fused as in HF, Gemma's stored 1 + w norms — and Llama 3's
/// RoPE scaling, which GGUF stores as the tensor rope_freqs.weight, exposed as <see cref="RopeFrequencyDivisors"/>.
/// </summary>
public sealed unsafe class GgufModel : IDisposable
{
    public static readonly string[] Architectures = ["llama", "qwen3", "qwen2", "gemma3", "phi3", "olmo2"];

    public GgufFile File { get; }
    public string Architecture { get; }
    /// <summary>The config.json keys the metadata implies (Hugging Face names and conventions).</summary>
    public JsonObject HfConfig { get; }
    /// <summary>The tensors under Hugging Face's names (model.embed_tokens.weight, model.layers.N.…, lm_head.weight).</summary>
    public IReadOnlyDictionary<string, StoredTensor> Tensors => _tensors;
    /// <summary>
    /// Llama 3 RoPE scaling as stored by llama.cpp: one divisor per rotary pair i (R/2 values), the angle of pair i
    /// at position p being p · θ^(−2i/R) / divisor[i]; null when the file has no rope_freqs.weight.
    /// </summary>
    public double[]? RopeFrequencyDivisors { get; }

    readonly Dictionary<string, StoredTensor> _tensors = new();
    readonly List<Array> _buffers = [];   // pinned arrays behind re-laid-out tensors; they live as long as this object

    GgufModel(GgufFile file)
    {
        File = file;
        // llama-gguf-split's parts: each holds some of the tensors (split.count files, split.no counting from 0)
        if (file.Integer("split.count") is > 1 and var parts)
            throw file.Error($"is part {file.Integer("split.no") + 1 ?? 1} of a GGUF split into {parts} files, which LinearLens does not read; merge them into one file with llama.cpp's `llama-gguf-split --merge FIRST-PART.gguf OUT.gguf`");
        Architecture = file.Str("general.architecture") ?? throw file.Error("has no general.architecture; not a model file");
        if (!Architectures.Contains(Architecture))
            throw file.Error($"has architecture '{Architecture}', which LinearLens does not run (supported: {string.Join(", ", Architectures)})");
        HfConfig = BuildConfig();
        RopeFrequencyDivisors = ReadRopeFreqs();
        MapTensors();
    }

    /// <summary>Opens a .gguf file as a model; every header value and the metadata are validated.</summary>
    public static GgufModel Open(string path)
    {
        var file = GgufFile.Open(path);
        try { return new GgufModel(file); }
        catch (LinearLensException e) { file.Dispose(); throw GgufFile.Clean(e); }
        catch { file.Dispose(); throw; }
    }

    /// <summary>
    /// The GGUF that a --model argument names: the file itself (*.gguf), or the one .gguf in a folder that has no
    /// config.json; null when the argument is a Hugging Face folder (or does not exist).
    /// </summary>
    public static string? Locate(string path)
    {
        if (System.IO.File.Exists(path))
            return path.EndsWith(".gguf", StringComparison.OrdinalIgnoreCase) ? path : null;
        if (!Directory.Exists(path) || System.IO.File.Exists(Path.Combine(path, "config.json"))) return null;
        var ggufs = Directory.GetFiles(path, "*.gguf");
        return ggufs.Length switch
        {
            0 => null,
            1 => ggufs[0],
            _ => throw new LinearLensException($"{path} holds {ggufs.Length} .gguf files ({string.Join(", ", ggufs.Select(Path.GetFileName).Order())}); pass --model the one to use"),
        };
    }

    /// <summary>
    /// The model config: config.json's keys parsed by <see cref="ModelConfig.Parse"/>, with rope_freqs.weight as the
    /// RoPE frequency divisors of every layer.
    /// </summary>
    public ModelConfig ParseConfig()
    {
        using var doc = JsonDocument.Parse(HfConfig.ToJsonString());
        var config = ModelConfig.Parse(doc.RootElement, $"{File.Path} (config from GGUF metadata)");
        if (RopeFrequencyDivisors is not { } div) return config;
        foreach (var r in config.Rope)
        {
            int half = (int)Math.Floor(config.HeadDim * r.PartialRotaryFactor) / 2;
            if (div.Length != half)
                throw File.Error($"has {div.Length} values in rope_freqs.weight; the rotary dimension needs {half}");
            if (r.Type != "default")
                throw File.Error($"has rope_freqs.weight together with RoPE scaling '{r.Type}'; LinearLens applies one or the other");
        }
        return config with { Rope = config.Rope.Select(r => r with { FrequencyDivisors = div }).ToArray() };
    }

    // ---- metadata → config.json ---------------------------------------------------------------------------

    string Key(string name) => $"{Architecture}.{name}";

    int Required(string name) => Positive(name, File.Integer(Key(name)) ?? throw File.Error($"lacks {Key(name)}; the file is incomplete"));

    int Positive(string name, long v) => v is > 0 and <= int.MaxValue ? (int)v
        : throw File.Error($"has {Key(name)} = {v}; it must be a positive 32-bit integer");

    /// <summary>A per-layer hyper-parameter that may be stored as one value or an array of equal values.</summary>
    int PerLayer(string name, int? fallback)
    {
        if (File.Metadata.GetValueOrDefault(Key(name)) is GgufArray a)
        {
            var values = a.Values.Cast<object>().Select(v => Convert.ToInt64(v)).Distinct().ToArray();
            if (values.Length != 1)
                throw File.Error($"has per-layer {Key(name)} with different values ({string.Join(", ", values.Take(4))}…); LinearLens supports one value for all layers");
            return Positive(name, values[0]);
        }
        long? v = File.Integer(Key(name));
        return v is long x ? Positive(name, x) : fallback ?? throw File.Error($"lacks {Key(name)}; the file is incomplete");
    }

    JsonObject BuildConfig()
    {
        var f = File;
        string modelType = Architecture switch { "gemma3" => "gemma3_text", var a => a };
        int hidden = Required("embedding_length");
        int layers = Required("block_count");
        if (layers > f.Tensors.Count)   // every layer has tensors: a larger count is corrupt, and must not drive loops
            throw f.Error($"has {Key("block_count")} = {layers} but only {f.Tensors.Count} tensors; the header is corrupt");
        int heads = PerLayer("attention.head_count", null);
        int kvHeads = PerLayer("attention.head_count_kv", heads);
        int intermediate = PerLayer("feed_forward_length", null);
        int headDim = f.Integer(Key("attention.key_length")) is long kl ? Positive("attention.key_length", kl) : hidden / heads;
        if (f.Integer(Key("attention.value_length")) is long vl && vl != headDim)
            throw f.Error($"has {Key("attention.value_length")} = {vl} ≠ key_length {headDim}; LinearLens needs equal q/k and v head sizes");
        var embd = f.Find("token_embd.weight") ?? throw f.Error("has no tensor token_embd.weight");
        if (embd.Dims.Length != 2) throw f.Error($"tensor token_embd.weight has {embd.Dims.Length} dimensions (2 expected)");
        var c = new JsonObject
        {
            ["model_type"] = modelType,
            ["hidden_size"] = hidden,
            ["intermediate_size"] = intermediate,
            ["num_hidden_layers"] = layers,
            ["num_attention_heads"] = heads,
            ["num_key_value_heads"] = kvHeads,
            ["head_dim"] = headDim,
            // Stored as float32; its exact value (e.g. 9.999999747378752e-06 for 1e-5) is what the file means.
            ["rms_norm_eps"] = f.Number(Key("attention.layer_norm_rms_epsilon")) ?? throw f.Error($"lacks {Key("attention.layer_norm_rms_epsilon")}"),
            ["rope_theta"] = f.Number(Key("rope.freq_base")) ?? 10000.0,
            ["max_position_embeddings"] = Required("context_length"),
            ["vocab_size"] = checked((int)embd.Dims[1]),
            ["tie_word_embeddings"] = !f.Contains("output.weight"),
        };
        if (Architecture == "gemma3") c["hidden_activation"] = "gelu_pytorch_tanh"; else c["hidden_act"] = "silu";
        if (Architecture != "qwen2")   // Qwen 2 always has q/k/v biases; elsewhere a bias tensor means attention_bias
        {
            c["attention_bias"] = f.Tensors.Any(t => t.Name.StartsWith("blk.") && (t.Name.EndsWith(".attn_q.bias") || t.Name.EndsWith(".attn_qkv.bias")));
            if (Architecture == "llama") c["mlp_bias"] = f.Tensors.Any(t => t.Name.StartsWith("blk.") && t.Name.EndsWith(".ffn_up.bias"));
        }

        if (f.Integer(Key("rope.dimension_count")) is long rot && rot != headDim)
        {
            if (rot <= 0 || rot > headDim || rot % 2 != 0)
                throw f.Error($"has {Key("rope.dimension_count")} = {rot}, not an even number ≤ head size {headDim}");
            c["partial_rotary_factor"] = (double)rot / headDim;
        }
        switch (f.Str(Key("rope.scaling.type")))
        {
            case null or "none": break;
            case "linear":
                double factor = f.Number(Key("rope.scaling.factor")) ?? throw f.Error($"has linear RoPE scaling but no {Key("rope.scaling.factor")}");
                if (factor != 1) c["rope_scaling"] = new JsonObject { ["rope_type"] = "linear", ["factor"] = factor };
                break;
            case var t:
                throw f.Error($"uses RoPE scaling '{t}', which LinearLens does not support yet (none, linear, Llama 3's rope_freqs)");
        }
        long? window = f.Integer(Key("attention.sliding_window"));
        switch (Architecture)
        {
            case "gemma3":
                if (window is long w) c["sliding_window"] = Positive("attention.sliding_window", w);
                c["rope_local_base_freq"] = 10000.0;   // llama.cpp's fixed base for Gemma 3's sliding layers
                // llama.cpp's Gemma 3 rule for the attention scale: the 27B model (62 layers) uses d/H, the others D.
                c["query_pre_attn_scalar"] = layers == 62 ? hidden / heads : headDim;
                if (f.Number(Key("final_logit_softcapping")) is double cap) c["final_logit_softcapping"] = cap;
                break;
            case "qwen2":
            case "qwen3":
                c["use_sliding_window"] = false;
                break;
            case "phi3":
                if (window is long pw) c["sliding_window"] = Positive("attention.sliding_window", pw);
                break;
            case "olmo2":
                if (window is not null) throw f.Error($"has {Key("attention.sliding_window")} (an OLMo 3 model); LinearLens runs OLMo 2 without sliding windows");
                break;
        }
        int vocab = (int)embd.Dims[1];
        if (TokenId("tokenizer.ggml.bos_token_id", vocab) is int bos) c["bos_token_id"] = bos;
        if (TokenId("tokenizer.ggml.eos_token_id", vocab) is int eos) c["eos_token_id"] = eos;
        return c;
    }

    /// <summary>A special-token id; llama.cpp writes −1 (as u32 0xFFFFFFFF) for "none".</summary>
    internal int? TokenId(string key, int vocab)
    {
        long? v = File.Integer(key);
        if (v is null || v == uint.MaxValue || v == -1) return null;
        if (v < 0 || v >= vocab) throw File.Error($"has {key} = {v}, outside the vocabulary 0…{vocab - 1}");
        return (int)v;
    }

    double[]? ReadRopeFreqs()
    {
        if (File.Find("rope_freqs.weight") is not { } t) return null;
        if (t.Dims.Length != 1 || t.Type.IsQuantized())
            throw File.Error($"tensor rope_freqs.weight is [{string.Join(", ", t.Dims)}] {t.Type.Name()}; a 1-D float vector was expected");
        var p = File.DataOf(t);
        var d = new double[t.Dims[0]];
        for (int i = 0; i < d.Length; i++)
        {
            d[i] = DTypes.Read(p, t.Type, i);
            if (!double.IsFinite(d[i]) || d[i] <= 0)
                throw File.Error($"tensor rope_freqs.weight[{i}] = {d[i]}; RoPE frequency divisors must be positive and finite");
        }
        return d;
    }

    // ---- tensors → Hugging Face names ----------------------------------------------------------------------

    void MapTensors()
    {
        var c = HfConfig;
        int layers = (int)c["num_hidden_layers"]!, heads = (int)c["num_attention_heads"]!, kvHeads = (int)c["num_key_value_heads"]!;
        int headDim = (int)c["head_dim"]!;
        foreach (var t in File.Tensors)
        {
            string name = t.Name;
            if (name == "rope_freqs.weight") continue;   // exposed as RopeFrequencyDivisors
            switch (name)
            {
                case "token_embd.weight": Add("model.embed_tokens.weight", t); continue;
                case "output_norm.weight": Add("model.norm.weight", Norm(t)); continue;
                case "output.weight": Add("lm_head.weight", t); continue;
            }
            var parts = name.Split('.');
            // llama.cpp refuses a file with tensors its block_count leaves unused ("wrong number of tensors"): so do we, by name
            if (parts.Length == 4 && parts[0] == "blk" && int.TryParse(parts[1], out int beyond) && beyond >= layers && parts[1] == beyond.ToString())
                throw File.Error($"has tensor '{name}' of layer {beyond + 1}, but {Key("block_count")} = {layers} layers; the metadata does not match the tensors (set {Key("block_count")} to the number of blk.N layers)");
            if (parts.Length != 4 || parts[0] != "blk" || !int.TryParse(parts[1], out int l) || l < 0 || l >= layers || parts[1] != l.ToString()
                || parts[3] is not ("weight" or "bias"))
                throw File.Error($"has tensor '{name}', which is not part of a {Architecture} model as LinearLens reads it (unsupported variant?)");
            string p = $"model.layers.{l}.", kind = parts[3];
            switch (parts[2])
            {
                case "attn_q" when Architecture == "llama": Add(p + "self_attn.q_proj." + kind, Unpermute(t, heads, headDim)); break;
                case "attn_k" when Architecture == "llama": Add(p + "self_attn.k_proj." + kind, Unpermute(t, kvHeads, headDim)); break;
                case "attn_q": Add(p + "self_attn.q_proj." + kind, t); break;
                case "attn_k": Add(p + "self_attn.k_proj." + kind, t); break;
                case "attn_v": Add(p + "self_attn.v_proj." + kind, t); break;
                case "attn_output": Add(p + "self_attn.o_proj." + kind, t); break;
                case "attn_qkv" when Architecture == "phi3": Add(p + "self_attn.qkv_proj." + kind, t); break;   // rows [q; k; v], as HF
                case "ffn_up" when Architecture == "phi3": Add(p + "mlp.gate_up_proj." + kind, t); break;      // rows [gate; up], as HF
                case "ffn_gate": Add(p + "mlp.gate_proj." + kind, t); break;
                case "ffn_up": Add(p + "mlp.up_proj." + kind, t); break;
                case "ffn_down": Add(p + "mlp.down_proj." + kind, t); break;
                case "attn_q_norm": Add(p + "self_attn.q_norm." + kind, Norm(t)); break;
                case "attn_k_norm": Add(p + "self_attn.k_norm." + kind, Norm(t)); break;
                case "attn_norm" when Architecture != "olmo2": Add(p + "input_layernorm." + kind, Norm(t)); break;
                case "ffn_norm" when Architecture == "gemma3": Add(p + "pre_feedforward_layernorm." + kind, Norm(t)); break;
                case "ffn_norm" when Architecture != "olmo2": Add(p + "post_attention_layernorm." + kind, Norm(t)); break;
                case "post_attention_norm" when Architecture is "gemma3" or "olmo2": Add(p + "post_attention_layernorm." + kind, Norm(t)); break;
                case "post_ffw_norm" when Architecture is "gemma3" or "olmo2": Add(p + "post_feedforward_layernorm." + kind, Norm(t)); break;
                default:
                    throw File.Error($"has tensor '{name}', which is not part of a {Architecture} model as LinearLens reads it (unsupported variant?)");
            }
        }
    }

    void Add(string hfName, StoredTensor t)
    {
        if (!_tensors.TryAdd(hfName, t with { Name = hfName }))
            throw File.Error($"maps two tensors to {hfName}; the file is inconsistent");
    }

    void Add(string hfName, GgufTensorInfo t) => Add(hfName, new StoredTensor(hfName, t.Type, t.Shape, File.DataOf(t), File.Path));

    /// <summary>
    /// llama.cpp's converter reorders the rows of llama's q and k so that RoPE rotates adjacent pairs: within each
    /// head of D rows, stored row 2i + j is Hugging Face row (D/2)·j + i. Moving whole rows undoes it exactly in
    /// any stored type (a row is ne0 elements: whole quantized blocks).
    /// </summary>
    StoredTensor Unpermute(GgufTensorInfo t, int heads, int headDim)
    {
        bool bias = t.Dims.Length == 1;   // the converter permutes q/k biases like the weight rows
        if ((bias ? t.Dims[0] : t.Dims.Length == 2 ? t.Dims[1] : -1) != (long)heads * headDim || headDim % 2 != 0 || (bias && t.Type.IsQuantized()))
            throw File.Error($"tensor '{t.Name}' is [{string.Join(", ", t.Dims)}] {t.Type.Name()}; {(bias ? "" : $"{t.Dims[0]}, ")}{heads}·{headDim} was expected");
        long rowBytes = t.Type.RowBytes(bias ? 1 : t.Dims[0]);
        var buf = Pinned.Array<byte>(t.Bytes);
        _buffers.Add(buf);
        byte* src = File.DataOf(t), dst = Pinned.Pointer(buf);
        int half = headDim / 2;
        for (int h = 0; h < heads; h++)
            for (int r = 0; r < headDim; r++)
            {
                int j = r / half, i = r % half;   // HF row r = half·j + i of this head is stored row 2i + j
                long from = (long)h * headDim + 2 * i + j, to = (long)h * headDim + r;
                Buffer.MemoryCopy(src + from * rowBytes, dst + to * rowBytes, rowBytes, rowBytes);
            }
        return new StoredTensor(t.Name, t.Type, t.Shape, dst, File.Path);
    }

    /// <summary>Gemma's converter stores 1 + w for every norm; the engine adds the 1 itself, so hand it w (exact in float64).</summary>
    StoredTensor Norm(GgufTensorInfo t)
    {
        if (t.Type.IsQuantized())
            throw File.Error($"norm tensor '{t.Name}' is {t.Type.Name()}; norm weights are expected as F32, F16 or BF16");
        var stored = new StoredTensor(t.Name, t.Type, t.Shape, File.DataOf(t), File.Path);
        if (Architecture != "gemma3") return stored;
        var w = Pinned.Array<double>(stored.Count);
        _buffers.Add(w);
        for (long i = 0; i < w.Length; i++) w[i] = stored[i] - 1.0;
        return new StoredTensor(t.Name, DType.F64, t.Shape, (byte*)Pinned.Pointer(w), File.Path);
    }

    public void Dispose() => File.Dispose();
}

/// <summary>Typed reads of GGUF metadata, each failing with one line when the stored type does not fit.</summary>
public static class GgufMetadata
{
    public static LinearLensException Error(this GgufFile f, string what) => new($"{f.Path} {what}");

    public static string? Str(this GgufFile f, string key) => f.Metadata.GetValueOrDefault(key) switch
    {
        null => null,
        string s => s,
        var v => throw f.Error($"has '{key}' of type {GgufFile.TypeName(v)} where a string was expected; the file is corrupt"),
    };

    public static long? Integer(this GgufFile f, string key) => f.Metadata.GetValueOrDefault(key) switch
    {
        null => null,
        byte v => v, sbyte v => v, ushort v => v, short v => v, uint v => v, int v => v, long v => v,
        ulong v when v <= long.MaxValue => (long)v,
        var v => throw f.Error($"has '{key}' = {v} of type {GgufFile.TypeName(v)} where an integer was expected; the file is corrupt"),
    };

    /// <summary>A number as the exact double value of what is stored (a float32 stays its float32 value).</summary>
    public static double? Number(this GgufFile f, string key)
    {
        double? v = f.Metadata.GetValueOrDefault(key) switch
        {
            null => null,
            float x => x, double x => x,
            byte or sbyte or ushort or short or uint or int or long or ulong => f.Integer(key),
            var x => throw f.Error($"has '{key}' of type {GgufFile.TypeName(x)} where a number was expected; the file is corrupt"),
        };
        if (v is double d && !double.IsFinite(d)) throw f.Error($"has '{key}' = {d}; a finite number was expected");
        return v;
    }

    public static bool? Bool(this GgufFile f, string key) => f.Metadata.GetValueOrDefault(key) switch
    {
        null => null,
        bool b => b,
        var v => throw f.Error($"has '{key}' of type {GgufFile.TypeName(v)} where a boolean was expected; the file is corrupt"),
    };

    /// <summary>An array of the given element type(s), or null when the key is absent.</summary>
    public static T[]? Array<T>(this GgufFile f, string key)
    {
        var v = f.Metadata.GetValueOrDefault(key);
        if (v is null) return null;
        if (v is GgufArray { Values: T[] a }) return a;
        throw f.Error($"has '{key}' as {(v is GgufArray ? "an " : "")}{GgufFile.TypeName(v)} where an array of {GgufFile.TypeName(typeof(T))} was expected; the file is corrupt");
    }
}
