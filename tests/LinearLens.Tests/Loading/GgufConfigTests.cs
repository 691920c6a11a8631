using LinearLens.Loading;
using LinearLens.Models;
using LinearLens.Numerics;

namespace LinearLens.Tests.Loading;

/// <summary>
/// Metadata → config.json keys and llama.cpp tensor names → Hugging Face roles, per architecture, on small GGUFs
/// written from scratch in llama.cpp's layout (names and keys as convert_hf_to_gguf.py writes them).
/// </summary>
public class GgufConfigTests
{
    static readonly string Tmp = Path.Combine(Path.GetTempPath(), "linearlens-gguf-config-tests");
    const int D = 32, H = 4, K = 2, Hd = 8, I = 48, V = 40, L = 2;

    /// <summary>A GGUF of architecture `arch` with the given per-layer tensors (name → dims) and extra keys; values random, norms near 1.</summary>
    static string Write(string arch, Func<int, (string, long[])[]> layer, IEnumerable<KeyValuePair<string, object>> extra, bool tied = false)
    {
        Directory.CreateDirectory(Tmp);
        string path = Path.Combine(Tmp, $"{arch}-{Guid.NewGuid():N}.gguf");
        var meta = new List<KeyValuePair<string, object>>
        {
            new("general.architecture", arch), new($"{arch}.block_count", (uint)L), new($"{arch}.context_length", 4096u),
            new($"{arch}.embedding_length", (uint)D), new($"{arch}.feed_forward_length", (uint)I),
            new($"{arch}.attention.head_count", (uint)H), new($"{arch}.attention.head_count_kv", (uint)K),
            new($"{arch}.attention.key_length", (uint)Hd), new($"{arch}.attention.value_length", (uint)Hd),
            new($"{arch}.rope.freq_base", 10000f), new($"{arch}.attention.layer_norm_rms_epsilon", 1e-6f),
        };
        meta.AddRange(extra);
        var entries = new List<GgufTensorEntry> { new("token_embd.weight", DType.F32, [D, V]) };
        for (int l = 0; l < L; l++) entries.AddRange(layer(l).Select(t => new GgufTensorEntry($"blk.{l}.{t.Item1}", DType.F32, t.Item2)));
        entries.Add(new("output_norm.weight", DType.F32, [D]));
        if (!tied) entries.Add(new("output.weight", DType.F32, [D, V]));
        var rng = new Random(5);
        GgufWriter.Write(path, meta, entries, (e, s) =>
        {
            long n = e.Dims.Aggregate(1L, (a, b) => a * b);
            var w = new BinaryWriter(s);
            for (long i = 0; i < n; i++) w.Write((float)(e.Dims.Length == 1 ? 1 + 0.1 * (rng.NextDouble() - 0.5) : (rng.NextDouble() - 0.5) / Math.Sqrt(e.Dims[0])));
            w.Flush();
        });
        return path;
    }

    static (string, long[])[] Attn(long qRows = H * Hd) =>
        [("attn_q.weight", [D, qRows]), ("attn_k.weight", [D, K * Hd]), ("attn_v.weight", [D, K * Hd]), ("attn_output.weight", [H * Hd, D])];
    static (string, long[])[] Mlp => [("ffn_gate.weight", [D, I]), ("ffn_up.weight", [D, I]), ("ffn_down.weight", [I, D])];

    static double[] RunsFinite(string path)
    {
        using var ckpt = Checkpoint.Open(path);
        var logits = new Transformer<double>(ckpt).Forward([1, 7, 3, 9]).Logits;
        Assert.All(logits, x => Assert.True(double.IsFinite(x)));
        return logits;
    }

    [Fact]
    public void Qwen2HasBiasesAndNoPermutation()
    {
        string path = Write("qwen2", _ => [("attn_norm.weight", [D]), .. Attn(), ("attn_q.bias", [H * Hd]), ("attn_k.bias", [K * Hd]), ("attn_v.bias", [K * Hd]),
            ("ffn_norm.weight", [D]), .. Mlp], [], tied: true);
        using (var m = GgufModel.Open(path))
        {
            Assert.Equal("qwen2", (string)m.HfConfig["model_type"]!);
            Assert.True((bool)m.HfConfig["tie_word_embeddings"]!);
            Assert.Null(m.HfConfig["attention_bias"]);   // Qwen 2's biases are implied by the family
            Assert.Contains("model.layers.1.self_attn.k_proj.bias", m.Tensors.Keys);
            unsafe { Assert.True(m.File.DataOf(m.File.Find("blk.0.attn_q.weight")!) == m.Tensors["model.layers.0.self_attn.q_proj.weight"].Data); }   // not re-laid out
        }
        using var ckpt = Checkpoint.Open(path);
        Assert.True(ckpt.Config.Biases.Q && ckpt.Config.Biases.K && ckpt.Config.Biases.V && !ckpt.Config.Biases.O);
        RunsFinite(path);
    }

    [Fact]
    public void Phi3KeepsItsFusedTensorsAndReadsPartialRotaryAndWindow()
    {
        string path = Write("phi3", _ => [("attn_norm.weight", [D]), ("attn_qkv.weight", [D, H * Hd + 2 * K * Hd]), ("attn_output.weight", [H * Hd, D]),
            ("ffn_norm.weight", [D]), ("ffn_up.weight", [D, 2 * I]), ("ffn_down.weight", [I, D])],
            [new("phi3.rope.dimension_count", 4u), new("phi3.attention.sliding_window", 3u)]);
        using (var m = GgufModel.Open(path))
        {
            Assert.Equal(0.5, (double)m.HfConfig["partial_rotary_factor"]!);
            Assert.Equal(3, (int)m.HfConfig["sliding_window"]!);
            Assert.Contains("model.layers.0.self_attn.qkv_proj.weight", m.Tensors.Keys);
            Assert.Contains("model.layers.0.mlp.gate_up_proj.weight", m.Tensors.Keys);
        }
        using var ckpt = Checkpoint.Open(path);
        Assert.Equal([3, 3], ckpt.Config.SlidingWindow);
        Assert.Equal(0.5, ckpt.Config.Rope[0].PartialRotaryFactor);
        Assert.Equal((I, D), (ckpt.Layers[0].Up.Rows, ckpt.Layers[0].Up.Cols));
        RunsFinite(path);
    }

    [Fact]
    public void Olmo2NormsArePostNormsAndQkNormsWholeWidth()
    {
        string path = Write("olmo2", _ => [.. Attn(), ("attn_q_norm.weight", [H * Hd]), ("attn_k_norm.weight", [K * Hd]), ("post_attention_norm.weight", [D]),
            .. Mlp, ("post_ffw_norm.weight", [D])], []);
        using (var m = GgufModel.Open(path))
            Assert.Equal(["model.layers.0.post_attention_layernorm.weight", "model.layers.0.post_feedforward_layernorm.weight"],
                m.Tensors.Keys.Where(k => k.StartsWith("model.layers.0.") && k.Contains("layernorm")).Order());
        using var ckpt = Checkpoint.Open(path);
        Assert.Null(ckpt.Layers[0].AttnInNorm);
        Assert.NotNull(ckpt.Layers[0].AttnOutNorm);
        Assert.Equal(H * Hd, ckpt.Layers[0].QNorm!.Value.Count);
        RunsFinite(path);
    }

    [Fact]
    public void Gemma3NormsLoseTheConvertersOneAndGlobalLayersFollowPatternSix()
    {
        const int layers = 6;
        string path = Path.Combine(Tmp, "gemma3-six.gguf");
        Directory.CreateDirectory(Tmp);
        var meta = new List<KeyValuePair<string, object>>
        {
            new("general.architecture", "gemma3"), new("gemma3.block_count", (uint)layers), new("gemma3.context_length", 4096u),
            new("gemma3.embedding_length", (uint)D), new("gemma3.feed_forward_length", (uint)I),
            new("gemma3.attention.head_count", (uint)H), new("gemma3.attention.head_count_kv", (uint)K),
            new("gemma3.attention.key_length", (uint)Hd), new("gemma3.attention.value_length", (uint)Hd),
            new("gemma3.rope.freq_base", 1e6f), new("gemma3.attention.layer_norm_rms_epsilon", 1e-6f),
            new("gemma3.attention.sliding_window", 5u), new("gemma3.rope.scaling.type", "linear"), new("gemma3.rope.scaling.factor", 8f),
        };
        var entries = new List<GgufTensorEntry> { new("token_embd.weight", DType.F32, [D, V]), new("output_norm.weight", DType.F32, [D]) };
        (string, long[])[] layerTensors = [("attn_norm.weight", [D]), .. Attn(), ("attn_q_norm.weight", [Hd]), ("attn_k_norm.weight", [Hd]),
            ("post_attention_norm.weight", [D]), ("ffn_norm.weight", [D]), .. Mlp, ("post_ffw_norm.weight", [D])];
        for (int l = 0; l < layers; l++)
            foreach (var (n, dims) in layerTensors) entries.Add(new($"blk.{l}.{n}", DType.F32, dims));
        GgufWriter.Write(path, meta, entries, (e, s) =>
        {
            long n = e.Dims.Aggregate(1L, (a, b) => a * b);
            var w = new BinaryWriter(s);
            for (long i = 0; i < n; i++) w.Write(e.Dims.Length == 1 ? 1.25f : 0.01f * (i % 7));   // stored norms 1 + w with w = 0.25
            w.Flush();
        });
        using var ckpt = Checkpoint.Open(path);
        var c = ckpt.Config;
        Assert.Equal("gemma3_text", c.ModelType);
        Assert.True(c.TieWordEmbeddings);
        Assert.Equal([5, 5, 5, 5, 5, null], c.SlidingWindow);                       // layer 6 global (pattern 6)
        Assert.Equal(("linear", 8.0, 1e6), (c.Rope[5].Type, c.Rope[5].Factor, c.Rope[5].Theta));
        Assert.Equal(("default", 10000.0), (c.Rope[0].Type, c.Rope[0].Theta));
        Assert.Equal(1 / Math.Sqrt(Hd), c.AttentionScale);
        Assert.Equal(0.25, ckpt.FinalNorm[0]);
        Assert.Equal(0.25, ckpt.Layers[3].MlpInNorm!.Value[0]);
        Assert.Equal(0.25, ckpt.Layers[3].QNorm!.Value[0]);
        RunsFinite(path);
    }

    [Fact]
    public void UnknownTensorsAndArchitecturesAreNamed()
    {
        string path = Write("llama", _ => [("attn_norm.weight", [D]), .. Attn(), ("ffn_norm.weight", [D]), .. Mlp, ("attn_rot_embd.weight", [D])], []);
        var e = Assert.Throws<LinearLensException>(() => Checkpoint.Open(path));
        Assert.Contains("'blk.0.attn_rot_embd.weight'", e.Message);
        path = Write("falcon", _ => [("attn_norm.weight", [D]), .. Attn(), .. Mlp], []);
        e = Assert.Throws<LinearLensException>(() => Checkpoint.Open(path));
        Assert.Contains("'falcon'", e.Message);
        Assert.Contains("llama, qwen3, qwen2, gemma3, phi3, olmo2", e.Message);
    }

    [Fact]
    public void APartOfASplitGgufIsNamedAsSuch()
    {
        var e = Assert.Throws<LinearLensException>(() => Checkpoint.Open(Write("llama", _ => [("attn_norm.weight", [D]), .. Attn(), ("ffn_norm.weight", [D]), .. Mlp],
            [new("split.no", (ushort)1), new("split.count", (ushort)3), new("split.tensors.count", 30)])));
        Assert.True(e.Message.Contains("is part 2 of a GGUF split into 3 files") && e.Message.Contains("llama-gguf-split --merge"), e.Message);
        using var whole = Checkpoint.Open(Write("llama", _ => [("attn_norm.weight", [D]), .. Attn(), ("ffn_norm.weight", [D]), .. Mlp],
            [new("split.no", (ushort)0), new("split.count", (ushort)1)]));   // a "split" of one file is the whole model
        Assert.Equal(L, whole.Config.NumLayers);
    }

    [Fact]
    public void AMetadataValueOfTheWrongTypeIsNamedWithGgufTypeNames()
    {
        // the message names GGUF's types (string, float32, array of 2 int32), not .NET's (String, Single, Int32[])
        var e = Assert.Throws<LinearLensException>(() => Checkpoint.Open(Write("llama", _ => [("attn_norm.weight", [D]), .. Attn(), ("ffn_norm.weight", [D]), .. Mlp],
            [new("tokenizer.ggml.bos_token_id", "one")])));
        Assert.True(e.Message.Contains("'tokenizer.ggml.bos_token_id' = one of type string where an integer was expected"), e.Message);
        e = Assert.Throws<LinearLensException>(() => Checkpoint.Open(Write("llama", _ => [("attn_norm.weight", [D]), .. Attn(), ("ffn_norm.weight", [D]), .. Mlp],
            [new("general.alignment", 1.5f)])));
        Assert.True(e.Message.Contains("float32") && !e.Message.Contains("Single"), e.Message);
    }

    /// <summary>--model a folder: the one .gguf in it (no config.json); two are one error line naming both.</summary>
    [Fact]
    public void AFolderWithOneGgufIsTheModelAndTwoAreAnError()
    {
        string dir = Path.Combine(Tmp, "folder-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        string first = Write("llama", _ => [("attn_norm.weight", [D]), .. Attn(), ("ffn_norm.weight", [D]), .. Mlp], []);
        File.Copy(first, Path.Combine(dir, "a.gguf"));
        var r = Support.CliRunner.Run("generate", "--model", dir, "--token-ids", "1,2", "--max-new-tokens", "2");
        Assert.Equal(0, r.ExitCode);
        File.Copy(first, Path.Combine(dir, "b.gguf"));
        r = Support.CliRunner.Run("generate", "--model", dir, "--token-ids", "1,2", "--max-new-tokens", "2");
        Assert.Equal(2, r.ExitCode);
        Assert.Contains("a.gguf, b.gguf", r.Stderr);
    }
}
