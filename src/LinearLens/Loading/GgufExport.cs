using LinearLens.Numerics;

namespace LinearLens.Loading;

/// <summary>
/// Writes a Hugging Face-layout checkpoint as a GGUF file laid out the way llama.cpp's convert_hf_to_gguf.py lays
/// it out — llama.cpp's tensor names, llama's q/k rows permuted for adjacent-pair RoPE, Gemma's norms stored as 1 + w,
/// Llama 3 RoPE scaling as the rope_freqs.weight divisors, norms (1-D tensors) in F32, eps and bases as float32 —
/// so that reading it back must undo every convention. Matrices keep their stored type, or are converted to
/// `matrixType` (F32, F16, BF16), or are replaced by seeded random valid blocks of a quantized `matrixType`
/// (benchmark weights without a quantizer). No tokenizer is written (random checkpoints have none).
/// </summary>
public static unsafe class GgufExport
{
    /// <param name="mixture">A per-tensor choice of quantized type by llama.cpp tensor name and layer count (e.g.
    /// <see cref="Q4KMedium"/>), instead of one <paramref name="matrixType"/> for every matrix.</param>
    public static void FromHuggingFace(string folder, string outPath, DType? matrixType = null, ulong seed = 1, string? name = null,
        Func<string, int, DType>? mixture = null)
    {
        var config = ModelConfig.Load(folder);
        using var store = TensorStore.Open(folder);
        Write(config, folder, store.All.Select(t => new SourceTensor(t.Name, t.Shape, t.Type, i => t[i])).ToList(), outPath, matrixType, seed,
            name ?? Path.GetFileName(Path.GetFullPath(folder).TrimEnd('/')), mixture);
    }

    /// <summary>
    /// A random checkpoint straight to GGUF when every matrix is quantized (<paramref name="matrixType"/> a block type, or a
    /// <paramref name="mixture"/>): the matrices are random valid blocks anyway, so the Hugging Face checkpoint they would be
    /// converted from (29.5 GB for a 14B shape in bf16) is never written; the other tensors (norms, biases) take
    /// <see cref="Models.RandomCheckpoint"/>'s values for the same seed, so the file equals the converted one byte for byte.
    /// </summary>
    public static void FromRandom(Models.RandomCheckpointSpec spec, int seed, string outPath, DType? matrixType, string name,
        Func<string, int, DType>? mixture = null)
    {
        if (mixture is null && matrixType?.IsQuantized() != true)
            throw new ArgumentException("FromRandom writes quantized matrices only; convert a written checkpoint for other types");
        using var doc = System.Text.Json.JsonDocument.Parse(Models.RandomCheckpoint.ConfigJson(spec));
        var config = ModelConfig.Parse(doc.RootElement, name);
        var tensors = spec.CanonicalTensors().Select(t =>
        {
            var values = new Lazy<double[]>(() => Models.RandomCheckpoint.TensorValues(spec, seed, t.Name, t.Shape));
            return new SourceTensor(t.Name, t.Shape, spec.DType, i => values.Value[i]);
        }).ToList();
        Write(config, name, tensors, outPath, matrixType, (ulong)seed, name, mixture);
    }

    /// <summary>One tensor to write: canonical name, shape (Hugging Face order), stored type, element i widened to double.</summary>
    readonly record struct SourceTensor(string Name, long[] Shape, DType Type, Func<long, double> Value);

    static void Write(ModelConfig config, string folder, IReadOnlyList<SourceTensor> tensors, string outPath, DType? matrixType, ulong seed,
        string name, Func<string, int, DType>? mixture)
    {
        string arch = config.ModelType switch
        {
            "llama" or "qwen3" or "qwen2" or "phi3" or "olmo2" => config.ModelType,
            "gemma3_text" or "gemma3" => "gemma3",
            var t => throw new LinearLensException($"{folder}: model_type '{t}' has no GGUF export (llama, qwen3, qwen2, gemma3, phi3, olmo2)"),
        };
        var meta = Metadata(config, arch, folder, name);
        var sources = new Dictionary<string, (SourceTensor t, Func<long, long> rowOf, bool normShift)>();
        var entries = new List<GgufTensorEntry>();
        var ropeFreqs = RopeFreqs(config, folder);
        if (ropeFreqs is not null) entries.Add(new GgufTensorEntry("rope_freqs.weight", DType.F32, [ropeFreqs.Length]));

        foreach (var t in tensors.OrderBy(t => Order(t.Name)))
        {
            if (t.Name == "lm_head.weight" && config.TieWordEmbeddings) continue;
            string ggName = GgufName(t.Name, arch, folder);
            long[] dims = t.Shape.Reverse().ToArray();
            bool isMatrix = dims.Length == 2;
            DType type = !isMatrix ? DType.F32 : mixture?.Invoke(ggName, config.NumLayers) ?? matrixType ?? t.Type;
            if (type.IsQuantized() && dims[0] % type.BlockElements() != 0)
                throw new LinearLensException($"{folder}: tensor '{t.Name}' has rows of {dims[0]} elements, not a whole number of {type.BlockElements()}-element {type.Name()} blocks");
            Func<long, long> rowOf = r => r;
            // llama.cpp's converter permutes llama's q/k rows (and their biases) for adjacent-pair RoPE.
            if (arch == "llama" && (t.Name.EndsWith("self_attn.q_proj.weight") || t.Name.EndsWith("self_attn.q_proj.bias"))) rowOf = Permutation(config.NumHeads, config.HeadDim);
            if (arch == "llama" && (t.Name.EndsWith("self_attn.k_proj.weight") || t.Name.EndsWith("self_attn.k_proj.bias"))) rowOf = Permutation(config.NumKvHeads, config.HeadDim);
            entries.Add(new GgufTensorEntry(ggName, type, dims));
            sources[ggName] = (t, rowOf, arch == "gemma3" && t.Name.EndsWith("norm.weight"));
        }

        GgufWriter.Write(outPath, meta, entries, (e, s) =>
        {
            if (e.Name == "rope_freqs.weight") { s.Write(SafetensorsWriter.Encode(ropeFreqs!, DType.F32)); return; }
            var (t, rowOf, shift) = sources[e.Name];
            long cols = e.Dims.Length == 1 ? 1 : e.Dims[0], rows = e.Bytes / e.Type.RowBytes(cols);   // a vector: rows of one element
            if (e.Type.IsQuantized())
            {
                var buf = new byte[e.Type.RowBytes(cols) * Math.Min(rows, 256)];
                ulong tensorSeed = seed ^ Fnv(e.Name);
                for (long r0 = 0; r0 < rows; r0 += 256)
                {
                    long n = Math.Min(256, rows - r0);
                    var span = buf.AsSpan(0, (int)(n * e.Type.RowBytes(cols)));
                    QuantBlocks.Random(e.Type, n, cols, tensorSeed, span, r0);
                    s.Write(span);
                }
                return;
            }
            var row = new double[cols];
            var bytes = new byte[cols * e.Type.Size()];
            for (long r = 0; r < rows; r++)
            {
                long from = rowOf(r) * cols;
                for (long c = 0; c < cols; c++) row[c] = t.Value(from + c);
                if (shift) for (long c = 0; c < cols; c++) row[c] = (float)((float)row[c] + 1.0f);   // the converter's w + 1 in float32
                SafetensorsWriter.Encode(row, e.Type, bytes);
                s.Write(bytes);
            }
        });
    }

    /// <summary>
    /// llama.cpp's Q4_K_M mixture (llama-quant.cpp): Q4_K, except Q6_K for the output matrix (and a tied token_embd,
    /// which serves as it) and for attn_v and ffn_down in the layers that get more bits — the first and last eighth
    /// and every third layer between.
    /// </summary>
    public static DType Q4KMedium(string ggufName, int layers, bool tied)
    {
        if (ggufName == "output.weight" || (tied && ggufName == "token_embd.weight")) return DType.Q6_K;
        if (ggufName.StartsWith("blk.") && (ggufName.EndsWith(".attn_v.weight") || ggufName.EndsWith(".ffn_down.weight")))
        {
            int i = int.Parse(ggufName.Split('.')[1], System.Globalization.CultureInfo.InvariantCulture);
            bool moreBits = i < layers / 8 || i >= 7 * layers / 8 || (i - layers / 8) % 3 == 2;
            return moreBits ? DType.Q6_K : DType.Q4_K;
        }
        return DType.Q4_K;
    }

    /// <summary>Stored row r of a permuted q/k holds HF row (D/2)·j + i of its head, r = 2i + j within the head.</summary>
    static Func<long, long> Permutation(int heads, int headDim) => r =>
    {
        long h = r / headDim, k = r % headDim, i = k / 2, j = k % 2;
        return h * headDim + headDim / 2 * j + i;
    };

    static ulong Fnv(string s)
    {
        ulong h = 14695981039346656037UL;
        foreach (char ch in s) { h ^= ch; h *= 1099511628211UL; }
        return h;
    }

    /// <summary>llama.cpp's tensor order: embedding, layers in order, final norm, output.</summary>
    static (int, int, string) Order(string name) =>
        name == "model.embed_tokens.weight" ? (0, 0, name)
        : name.StartsWith("model.layers.") && int.TryParse(name.Split('.')[2], out int l) ? (1, l, name)
        : (2, 0, name);

    static string GgufName(string hf, string arch, string folder)
    {
        switch (hf)
        {
            case "model.embed_tokens.weight": return "token_embd.weight";
            case "model.norm.weight": return "output_norm.weight";
            case "lm_head.weight": return "output.weight";
        }
        var parts = hf.Split('.');
        if (parts.Length >= 5 && parts[0] == "model" && parts[1] == "layers")
        {
            string rest = string.Join('.', parts[3..^1]), kind = parts[^1];
            string? g = rest switch
            {
                "self_attn.q_proj" => "attn_q", "self_attn.k_proj" => "attn_k", "self_attn.v_proj" => "attn_v",
                "self_attn.o_proj" => "attn_output", "self_attn.qkv_proj" => "attn_qkv",
                "mlp.gate_proj" => "ffn_gate", "mlp.up_proj" => "ffn_up", "mlp.down_proj" => "ffn_down", "mlp.gate_up_proj" => "ffn_up",
                "self_attn.q_norm" => "attn_q_norm", "self_attn.k_norm" => "attn_k_norm",
                "input_layernorm" => "attn_norm",
                "post_attention_layernorm" => arch is "gemma3" or "olmo2" ? "post_attention_norm" : "ffn_norm",
                "pre_feedforward_layernorm" => "ffn_norm",
                "post_feedforward_layernorm" => "post_ffw_norm",
                _ => null,
            };
            if (g is not null) return $"blk.{parts[2]}.{g}.{kind}";
        }
        throw new LinearLensException($"{folder}: tensor '{hf}' has no GGUF name in LinearLens's export");
    }

    static List<KeyValuePair<string, object>> Metadata(ModelConfig c, string arch, string folder, string name)
    {
        var full = c.Rope[Array.FindIndex(c.SlidingWindow, w => w is null) is int fi and >= 0 ? fi : 0];
        int rot = (int)Math.Floor(c.HeadDim * full.PartialRotaryFactor);
        var m = new List<KeyValuePair<string, object>>();
        void Add(string key, object value) => m.Add(new(key, value));
        void Refuse(string what) => throw new LinearLensException($"{folder}: {what} cannot be written as a {arch} GGUF (llama.cpp has no key for it)");
        Add("general.architecture", arch);
        Add("general.name", name);
        Add($"{arch}.block_count", (uint)c.NumLayers);
        Add($"{arch}.context_length", (uint)c.MaxPositions);
        Add($"{arch}.embedding_length", (uint)c.HiddenSize);
        Add($"{arch}.feed_forward_length", (uint)c.IntermediateSize);
        Add($"{arch}.attention.head_count", (uint)c.NumHeads);
        Add($"{arch}.attention.head_count_kv", (uint)c.NumKvHeads);
        Add($"{arch}.rope.freq_base", (float)full.Theta);
        Add($"{arch}.attention.layer_norm_rms_epsilon", (float)c.RmsNormEps);
        Add($"{arch}.attention.key_length", (uint)c.HeadDim);
        Add($"{arch}.attention.value_length", (uint)c.HeadDim);
        Add($"{arch}.rope.dimension_count", (uint)rot);
        switch (full.Type)
        {
            case "default" or "llama3": break;
            case "linear":
                Add($"{arch}.rope.scaling.type", "linear");
                Add($"{arch}.rope.scaling.factor", (float)full.Factor);
                break;
            default: Refuse($"RoPE scaling '{full.Type}'"); break;
        }
        int? window = c.SlidingWindow.FirstOrDefault(w => w is not null);
        if (window is int w)
        {
            bool expressible = arch switch
            {
                "gemma3" => Enumerable.Range(0, c.NumLayers).All(i => (c.SlidingWindow[i] is not null) == ((i + 1) % 6 != 0)),
                "phi3" => c.SlidingWindow.All(x => x == w),
                _ => false,
            };
            if (!expressible) Refuse("this pattern of sliding-window layers");
            Add($"{arch}.attention.sliding_window", (uint)w);
        }
        if (arch == "gemma3")
        {
            if (Math.Abs(c.AttentionScale - 1 / Math.Sqrt(c.NumLayers == 62 ? c.HiddenSize / c.NumHeads : c.HeadDim)) > 1e-15)
                Refuse("query_pre_attn_scalar other than llama.cpp's rule");
            if (c.Rope.Zip(c.SlidingWindow).Any(x => x.Second is not null && (x.First.Theta != 10000 || x.First.Type != "default")))
                Refuse("a local RoPE other than base 10000 unscaled");
        }
        if (c.BosTokenId is int bos) Add("tokenizer.ggml.bos_token_id", (uint)bos);
        if (c.EosTokenIds.Length > 0) Add("tokenizer.ggml.eos_token_id", (uint)c.EosTokenIds[0]);
        return m;
    }

    /// <summary>
    /// Llama 3 scaling as llama.cpp's converter stores it: per frequency ω_i = θ^(−2i/R) the divisor 1 (wavelength
    /// below N0/high), f (above N0/low), or 1 / ((1 − s)/f + s) with s = (N0/λ − low)/(high − low) in between.
    /// </summary>
    static double[]? RopeFreqs(ModelConfig c, string folder)
    {
        var r = c.Rope[0];
        if (r.Type != "llama3") return null;
        int rot = (int)Math.Floor(c.HeadDim * r.PartialRotaryFactor);
        double lowWavelen = r.OriginalMaxPositions / r.LowFreqFactor, highWavelen = r.OriginalMaxPositions / r.HighFreqFactor;
        var d = new double[rot / 2];
        for (int i = 0; i < d.Length; i++)
        {
            // the converter computes the frequencies in float32 (torch), the rest in Python floats
            double freq = 1f / MathF.Pow((float)r.Theta, (float)(2 * i) / rot), wavelen = 2 * Math.PI / freq;
            if (wavelen < highWavelen) d[i] = 1;
            else if (wavelen > lowWavelen) d[i] = r.Factor;
            else
            {
                double s = (r.OriginalMaxPositions / wavelen - r.LowFreqFactor) / (r.HighFreqFactor - r.LowFreqFactor);
                d[i] = 1 / ((1 - s) / r.Factor + s);
            }
        }
        return d;
    }
}
