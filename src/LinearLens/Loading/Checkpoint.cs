using LinearLens.Numerics;

namespace LinearLens.Loading;

/// <summary>
/// The stored weights of one decoder layer, as memory-mapped views in their stored dtype, by role: the norms of the
/// layer skeleton (attention in/out, MLP in/out — each optional, see <see cref="Models.NormNames"/>), q/k norm gains
/// ([D] per head, or [H·D]/[K·D] for a whole-projection norm), and the biases the config declares.
/// </summary>
public sealed record LayerWeights(
    MatrixView Q, MatrixView K, MatrixView V, MatrixView O,
    MatrixView Gate, MatrixView Up, MatrixView Down,
    StoredTensor? AttnInNorm, StoredTensor? AttnOutNorm, StoredTensor? MlpInNorm, StoredTensor? MlpOutNorm,
    StoredTensor? QNorm, StoredTensor? KNorm,
    StoredTensor? QBias, StoredTensor? KBias, StoredTensor? VBias, StoredTensor? OBias,
    StoredTensor? GateBias, StoredTensor? UpBias, StoredTensor? DownBias);

/// <summary>
/// A model in Hugging Face layout, opened: config.json parsed, safetensors memory-mapped and every tensor the config
/// and its family's description imply checked for presence and shape, tokenizer loaded when the folder has one.
/// </summary>
public sealed class Checkpoint : IDisposable
{
    public string Folder { get; }
    public ModelConfig Config { get; }
    public TextTokenizer? Tokenizer { get; }
    public MatrixView Embedding { get; }
    public MatrixView LmHead { get; }
    public StoredTensor FinalNorm { get; }
    public IReadOnlyList<LayerWeights> Layers { get; }
    readonly TensorStore _store;

    Checkpoint(string folder, ModelConfig config, TensorStore store, TextTokenizer? tokenizer)
    {
        Folder = folder; Config = config; _store = store; Tokenizer = tokenizer;
        var c = config;
        var family = c.Family;
        long d = c.HiddenSize, I = c.IntermediateSize, q = c.QDim, kv = c.KvDim;
        Embedding = store.Get("model.embed_tokens.weight", c.VocabSize, d).AsMatrix();
        LmHead = c.TieWordEmbeddings || !store.Contains("lm_head.weight")
            ? (c.TieWordEmbeddings ? Embedding : throw new LinearLensException($"tensor 'lm_head.weight' is missing from {folder} and tie_word_embeddings is false"))
            : store.Get("lm_head.weight", c.VocabSize, d).AsMatrix();
        FinalNorm = store.Get("model.norm.weight", d);
        var (qkNormQ, qkNormK) = c.QkNorm switch
        {
            Models.QkNormKind.PerHead => ((long)c.HeadDim, (long)c.HeadDim),
            Models.QkNormKind.Whole => (q, kv),
            _ => (0L, 0L),
        };
        var norms = family.Norms;
        static string? Weight(string? norm) => norm is null ? null : norm + ".weight";
        var b = c.Biases;
        var layers = new LayerWeights[c.NumLayers];
        for (int l = 0; l < c.NumLayers; l++)
        {
            string p = $"model.layers.{l}.";
            MatrixView M(string name, long rows, long cols) => store.Get(p + name, rows, cols).AsMatrix();
            StoredTensor? Vec(string? name, long len, bool present = true) => name is not null && present ? store.Get(p + name, len) : null;
            MatrixView wq, wk, wv, gate, up;
            if (family.FusedQkv is { } qkv)
            {
                var fused = M(qkv, q + 2 * kv, d);   // rows [q; k; v]
                (wq, wk, wv) = (fused.SliceRows(0, (int)q), fused.SliceRows((int)q, (int)kv), fused.SliceRows((int)(q + kv), (int)kv));
            }
            else (wq, wk, wv) = (M("self_attn.q_proj.weight", q, d), M("self_attn.k_proj.weight", kv, d), M("self_attn.v_proj.weight", kv, d));
            if (family.FusedGateUp is { } gu)
            {
                var fused = M(gu, 2 * I, d);         // rows [gate; up]
                (gate, up) = (fused.SliceRows(0, (int)I), fused.SliceRows((int)I, (int)I));
            }
            else (gate, up) = (M("mlp.gate_proj.weight", I, d), M("mlp.up_proj.weight", I, d));
            layers[l] = new LayerWeights(wq, wk, wv, M("self_attn.o_proj.weight", d, q), gate, up, M("mlp.down_proj.weight", d, I),
                Vec(Weight(norms.AttnIn), d), Vec(Weight(norms.AttnOut), d), Vec(Weight(norms.MlpIn), d), Vec(Weight(norms.MlpOut), d),
                Vec("self_attn.q_norm.weight", qkNormQ, c.QkNorm != Models.QkNormKind.None),
                Vec("self_attn.k_norm.weight", qkNormK, c.QkNorm != Models.QkNormKind.None),
                Vec("self_attn.q_proj.bias", q, b.Q), Vec("self_attn.k_proj.bias", kv, b.K), Vec("self_attn.v_proj.bias", kv, b.V),
                Vec("self_attn.o_proj.bias", d, b.O),
                Vec("mlp.gate_proj.bias", I, b.Gate), Vec("mlp.up_proj.bias", I, b.Up), Vec("mlp.down_proj.bias", d, b.Down));
        }
        Layers = layers;
        // a GGUF file with more blk.N than its block_count is refused by GgufModel (as llama.cpp does); a Hugging Face folder runs the first layers, as transformers does
        int stored = StoredLayers(store);
        if (stored > c.NumLayers)
            Warnings.Add($"config.json's num_hidden_layers is {c.NumLayers} but {folder} holds weights of {stored} layers; "
                + $"only the first {c.NumLayers} are run (as Hugging Face does, which warns of the unused weights); set it to {stored} to run them all");
    }

    /// <summary>Things about the checkpoint a user should know but that do not stop a run (printed as warnings by the CLI).</summary>
    public List<string> Warnings { get; } = [];

    /// <summary>How many layers the stored tensors hold: one more than the highest N of a model.layers.N.… name (0 without any).</summary>
    static int StoredLayers(TensorStore store)
    {
        int count = 0;
        foreach (var t in store.All)
        {
            const string prefix = "model.layers.";
            if (!t.Name.StartsWith(prefix, StringComparison.Ordinal)) continue;
            int dot = t.Name.IndexOf('.', prefix.Length);
            if (dot > prefix.Length && int.TryParse(t.Name.AsSpan(prefix.Length, dot - prefix.Length), System.Globalization.NumberStyles.None,
                    System.Globalization.CultureInfo.InvariantCulture, out int l) && l < int.MaxValue)
                count = Math.Max(count, l + 1);
        }
        return count;
    }

    /// <summary>Opens a Hugging Face model folder, a .gguf file, or a folder holding one .gguf and no config.json.</summary>
    public static Checkpoint Open(string folder)
    {
        BrokenLink(folder);
        if (Directory.Exists(folder))
            foreach (var f in Directory.EnumerateFileSystemEntries(folder))
                if (Path.GetFileName(f) is "config.json" or "tokenizer.json" or "tokenizer_config.json" or "model.safetensors.index.json"
                    || f.EndsWith(".safetensors", StringComparison.Ordinal) || f.EndsWith(".gguf", StringComparison.OrdinalIgnoreCase))
                    BrokenLink(f);
        if (GgufModel.Locate(folder) is { } gguf) return OpenGguf(gguf);
        if (File.Exists(folder))
        {
            // a file of a Hugging Face folder (config.json, model.safetensors) given for the folder, or a file of another format
            string? parent = Path.GetDirectoryName(Path.GetFullPath(folder));
            throw new LinearLensException(parent is not null && File.Exists(Path.Combine(parent, "config.json"))
                ? $"--model {folder} is a file of a model folder; pass --model the folder itself: {parent}"
                : $"--model {folder} is a file but not a .gguf file; pass --model a .gguf file or a folder holding config.json and *.safetensors");
        }
        if (!Directory.Exists(folder))
            throw new LinearLensException($"model folder not found: {folder} (pass --model a folder holding config.json and *.safetensors, or a .gguf file)");
        var config = ModelConfig.Load(folder);
        var store = TensorStore.Open(folder);
        TextTokenizer? tok = null;
        try
        {
            tok = TextTokenizer.TryLoad(folder);
            return new Checkpoint(folder, config, store, tok);
        }
        catch { store.Dispose(); tok?.Dispose(); throw; }
    }

    /// <summary>
    /// A symbolic link to nothing (a Hugging Face cache snapshot copied or moved without its blobs/): File.Exists is
    /// true for the link itself and the open then fails with "could not find file", so it is named here.
    /// </summary>
    static void BrokenLink(string path)
    {
        var info = new FileInfo(path);
        if (info.LinkTarget is { } target && !Path.Exists(info.ResolveLinkTarget(returnFinalTarget: true)?.FullName))
            throw new LinearLensException($"{path} is a symbolic link to {target}, which does not exist (a Hugging Face cache snapshot copied without its blobs?); copy the model with its files (cp -rL) or download it again");
    }

    /// <summary>A GGUF file: config from its metadata, tensors under Hugging Face names (see <see cref="GgufModel"/>).</summary>
    static Checkpoint OpenGguf(string path)
    {
        var model = GgufModel.Open(path);
        TextTokenizer? tok = null;
        try
        {
            var config = model.ParseConfig();
            var store = TensorStore.FromTensors(path, model.Tensors.Values, model);
            tok = GgufTokenizer.TryLoad(model.File, config.VocabSize);
            return new Checkpoint(path, config, store, tok);
        }
        catch { model.Dispose(); tok?.Dispose(); throw; }
    }

    /// <summary>The name of the first tensor of layer l holding a NaN or ±∞ weight, or null (used to explain a non-finite forward pass).</summary>
    public string? FirstNonFiniteTensor(int l)
    {
        var w = Layers[l];
        var named = new (string, MatrixView?)[]
        {
            ("q", w.Q), ("k", w.K), ("v", w.V), ("o_proj", w.O), ("gate", w.Gate), ("up", w.Up), ("down_proj", w.Down),
            ("attention-in norm", w.AttnInNorm?.AsMatrix()), ("attention-out norm", w.AttnOutNorm?.AsMatrix()),
            ("MLP-in norm", w.MlpInNorm?.AsMatrix()), ("MLP-out norm", w.MlpOutNorm?.AsMatrix()),
            ("q_norm", w.QNorm?.AsMatrix()), ("k_norm", w.KNorm?.AsMatrix()),
            ("q bias", w.QBias?.AsMatrix()), ("k bias", w.KBias?.AsMatrix()), ("v bias", w.VBias?.AsMatrix()), ("o bias", w.OBias?.AsMatrix()),
            ("gate bias", w.GateBias?.AsMatrix()), ("up bias", w.UpBias?.AsMatrix()), ("down bias", w.DownBias?.AsMatrix()),
        };
        foreach (var (name, m) in named)
        {
            if (m is not { } v) continue;
            var row = new double[v.Cols];
            for (int r = 0; r < v.Rows; r++)
            {
                v.DecodeRow(r, row);   // row by row: a quantized matrix decodes each block once
                foreach (double x in row) if (!double.IsFinite(x)) return $"layer {l + 1} {name}";
            }
        }
        return null;
    }

    /// <summary>The tokenizer, or a clear error when the folder has none.</summary>
    public TextTokenizer RequireTokenizer() => Tokenizer
        ?? throw new LinearLensException($"no tokenizer in {Folder} (no tokenizer.json, or a GGUF without tokenizer.ggml.model); pass --token-ids instead of --text");

    public void Dispose()
    {
        _store.Dispose();
        Tokenizer?.Dispose();
    }
}
