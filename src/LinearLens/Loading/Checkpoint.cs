using LinearLens.Numerics;

namespace LinearLens.Loading;

/// <summary>The stored weights of one decoder layer, as memory-mapped views in their stored dtype.</summary>
public sealed record LayerWeights(
    MatrixView Q, MatrixView K, MatrixView V, MatrixView O,
    MatrixView Gate, MatrixView Up, MatrixView Down,
    StoredTensor InputNorm, StoredTensor PostAttentionNorm,
    StoredTensor? PreFeedforwardNorm, StoredTensor? PostFeedforwardNorm,
    StoredTensor? QNorm, StoredTensor? KNorm);

/// <summary>
/// A model folder in Hugging Face layout, opened: config.json parsed, safetensors memory-mapped and every tensor
/// the config implies checked for presence and shape, tokenizer loaded when the folder has one.
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
        long d = c.HiddenSize, I = c.IntermediateSize, q = c.QDim, kv = c.KvDim, D = c.HeadDim;
        Embedding = store.Get("model.embed_tokens.weight", c.VocabSize, d).AsMatrix();
        LmHead = c.TieWordEmbeddings || !store.Contains("lm_head.weight")
            ? (c.TieWordEmbeddings ? Embedding : throw new LinearLensException($"tensor 'lm_head.weight' is missing from {folder} and tie_word_embeddings is false"))
            : store.Get("lm_head.weight", c.VocabSize, d).AsMatrix();
        FinalNorm = store.Get("model.norm.weight", d);
        var layers = new LayerWeights[c.NumLayers];
        for (int l = 0; l < c.NumLayers; l++)
        {
            string p = $"model.layers.{l}.";
            MatrixView M(string name, long rows, long cols) => store.Get(p + name, rows, cols).AsMatrix();
            StoredTensor Vec(string name, long len) => store.Get(p + name, len);
            layers[l] = new LayerWeights(
                M("self_attn.q_proj.weight", q, d), M("self_attn.k_proj.weight", kv, d), M("self_attn.v_proj.weight", kv, d),
                M("self_attn.o_proj.weight", d, q),
                M("mlp.gate_proj.weight", I, d), M("mlp.up_proj.weight", I, d), M("mlp.down_proj.weight", d, I),
                Vec("input_layernorm.weight", d), Vec("post_attention_layernorm.weight", d),
                c.IsGemma ? Vec("pre_feedforward_layernorm.weight", d) : null,
                c.IsGemma ? Vec("post_feedforward_layernorm.weight", d) : null,
                c.HasQkNorm ? Vec("self_attn.q_norm.weight", D) : null,
                c.HasQkNorm ? Vec("self_attn.k_norm.weight", D) : null);
        }
        Layers = layers;
    }

    /// <summary>
    /// Llama 3 RoPE scaling as a GGUF stores it (rope_freqs.weight): per rotary pair i the divisor of its angle,
    /// p · θ^(−2i/R) / divisor[i]; null for Hugging Face folders (their scaling is in config.json) and GGUFs without it.
    /// </summary>
    public double[]? RopeFrequencyDivisors { get; private init; }

    /// <summary>Opens a Hugging Face model folder, a .gguf file, or a folder holding one .gguf and no config.json.</summary>
    public static Checkpoint Open(string folder)
    {
        if (GgufModel.Locate(folder) is { } gguf) return OpenGguf(gguf);
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

    static Checkpoint OpenGguf(string path)
    {
        var model = GgufModel.Open(path);
        TextTokenizer? tok = null;
        try
        {
            var config = model.ParseConfig();
            if (model.RopeFrequencyDivisors is { } div && div.Any(x => x != 1))
                throw new LinearLensException($"{path} stores Llama 3 RoPE scaling as rope_freqs.weight ({div.Length} divisors), which the forward pass does not apply yet; use the Hugging Face folder of this model");
            var store = TensorStore.FromTensors(path, model.Tensors.Values, model);
            tok = GgufTokenizer.TryLoad(model.File, config.VocabSize);
            return new Checkpoint(path, config, store, tok) { RopeFrequencyDivisors = model.RopeFrequencyDivisors };
        }
        catch { model.Dispose(); tok?.Dispose(); throw; }
    }

    /// <summary>The tokenizer, or a clear error when the folder has none.</summary>
    public TextTokenizer RequireTokenizer() => Tokenizer
        ?? throw new LinearLensException($"no tokenizer.json in {Folder}; pass --token-ids instead of --text");

    public void Dispose()
    {
        _store.Dispose();
        Tokenizer?.Dispose();
    }
}
