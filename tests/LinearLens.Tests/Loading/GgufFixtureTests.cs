using System.Text.Json;
using LinearLens.Loading;
using LinearLens.Models;
using LinearLens.Tests.Support;

namespace LinearLens.Tests.Loading;

/// <summary>
/// The GGUF fixtures of ../shared/models/gguf-fixtures (llama.cpp's converter layout and quantizer, README there)
/// and the real stories260K GGUF, against their externally computed expectations.
/// </summary>
public class GgufFixtureTests
{
    static string Fixtures => SharedData.Path_("models", "gguf-fixtures");
    static string StoriesGguf => SharedData.Path_("models", "stories260K", "gguf", "stories260K.gguf");

    static readonly string[] Plain = ["F32", "F16", "BF16"], Quantized = ["Q8_0", "Q4_0", "Q4_K_M", "Q5_K_M", "Q6_K", "Q3_K_M", "IQ4_XS"];

    static TheoryData<string> Names(IEnumerable<string> types)
    {
        var data = new TheoryData<string>();
        foreach (var arch in new[] { "llama-q", "qwen3-q" })
            foreach (var type in types) data.Add($"{arch}-{type}");
        return data;
    }

    public static TheoryData<string> Files() => Names(Plain.Concat(Quantized));

    static JsonElement Expected(string name) =>
        JsonDocument.Parse(File.ReadAllText(Path.Combine(Fixtures, name + ".expected.json"))).RootElement;

    static int[] Ints(JsonElement a) => a.EnumerateArray().Select(x => x.GetInt32()).ToArray();

    /// <summary>The file's tokenizer turns the prompt into prompt_ids, and its metadata into the expected config.</summary>
    [SharedTheory("models", "gguf-fixtures", "README.md")]
    [MemberData(nameof(Files))]
    public void PromptEncodesAndConfigMatches(string name)
    {
        var exp = Expected(name);
        using var model = GgufModel.Open(Path.Combine(Fixtures, name + ".gguf"));
        foreach (var p in exp.GetProperty("config").EnumerateObject().Where(p => p.Name is not ("architectures" or "torch_dtype")))
            if (p.Value.ValueKind == JsonValueKind.Number) Assert.Equal(p.Value.GetDouble(), double.Parse(model.HfConfig[p.Name]!.ToJsonString(), System.Globalization.CultureInfo.InvariantCulture));
            else Assert.Equal(p.Value.GetRawText(), model.HfConfig[p.Name]!.ToJsonString());
        var cfg = model.ParseConfig();
        using var tok = GgufTokenizer.TryLoad(model.File, cfg.VocabSize)!;
        Assert.Equal(Ints(exp.GetProperty("prompt_ids")), tok.Encode(exp.GetProperty("prompt").GetString()!));
        if (exp.GetProperty("rope_freq_factors").ValueKind == JsonValueKind.Array)
            Assert.Equal(exp.GetProperty("rope_freq_factors").EnumerateArray().Select(x => x.GetDouble()), model.RopeFrequencyDivisors!);
        else Assert.Null(model.RopeFrequencyDivisors);
    }

    /// <summary>Float64 greedy decoding (whole sequence recomputed each step) and the prompt's top-5 logits.</summary>
    [SharedTheory("models", "gguf-fixtures", "README.md")]
    [MemberData(nameof(Files))]
    public void Float64GreedyMatchesReference(string name)
    {
        var exp = Expected(name);
        var reference = exp.GetProperty("reference_float64");
        string path = Path.Combine(Fixtures, name + ".gguf");
        using var ckpt = Checkpoint.Open(path);
        var model = new Transformer<double>(ckpt);
        var ids = Ints(exp.GetProperty("prompt_ids")).ToList();
        var first = model.Forward(ids.ToArray());
        foreach (var pair in reference.GetProperty("prompt_last_top5").EnumerateArray())
        {
            double want = pair[1].GetDouble(), got = first.Logits[pair[0].GetInt32()];
            Assert.True(Math.Abs(want - got) <= 1e-9, $"logit of id {pair[0]}: {got}, expected {want}");
        }
        var greedy = new List<int>();
        for (int step = 0; step < exp.GetProperty("steps").GetInt32(); step++)
        {
            var logits = step == 0 ? first.Logits : model.Forward(ids.ToArray()).Logits;
            int best = 0;
            for (int v = 1; v < logits.Length; v++) if (logits[v] > logits[best]) best = v;
            greedy.Add(best);
            ids.Add(best);
        }
        Assert.Equal(Ints(reference.GetProperty("greedy_ids")), greedy);
    }

    [SharedTheory("models", "stories260K", "gguf", "stories260K.gguf")]
    [InlineData("float64")]
    [InlineData("float32")]
    public void Stories260KGreedy200TokensFromBosMatchLlama2c(string dtype)
    {
        var r = CliRunner.Run("generate", "--model", StoriesGguf, "--token-ids", "1", "--max-new-tokens", "200", "--dtype", dtype);
        Assert.Equal(0, r.ExitCode);
        string expected = File.ReadAllText(Path.Combine(SharedData.Stories260KExpected, "greedy_from_bos_200_tokens.txt"));
        Assert.Equal(expected.TrimEnd('\n'), r.Stdout.TrimEnd('\n'));
    }

    [SharedFact("models", "stories260K", "gguf", "stories260K.gguf")]
    public void Stories260KTokenizerEncodesEveryCase()
    {
        using var ckpt = Checkpoint.Open(StoriesGguf);
        foreach (var line in File.ReadAllLines(Path.Combine(SharedData.Stories260KExpected, "encode_cases.tsv")))
        {
            if (line.Length == 0) continue;
            var parts = line.Split('\t');
            Assert.Equal(parts[1], string.Join(",", ckpt.RequireTokenizer().Encode(parts[0])));
        }
    }

    /// <summary>The GGUF's tensors, un-permuted, are exactly the weights of the Hugging Face folder of the same model.</summary>
    [SharedFact("models", "stories260K", "hf", "model.safetensors")]
    public void Stories260KTensorsEqualTheHuggingFaceFolder()
    {
        using var gguf = Checkpoint.Open(StoriesGguf);
        using var hf = Checkpoint.Open(SharedData.Stories260K);
        // The GGUF stores its own copy of the output matrix (untied) and a context length of 2048.
        static ModelConfig Key(ModelConfig c) => c with { MaxPositions = 0, RmsNormEps = 0, TieWordEmbeddings = false };
        Assert.Equal(Key(hf.Config), Key(gguf.Config), new ConfigComparer());
        Assert.Equal((double)1e-5f, gguf.Config.RmsNormEps);
        void Same(LinearLens.Numerics.MatrixView a, LinearLens.Numerics.MatrixView b)
        {
            Assert.Equal((a.Rows, a.Cols), (b.Rows, b.Cols));
            for (int r = 0; r < a.Rows; r++) for (int c = 0; c < a.Cols; c++) Assert.Equal(a[r, c], b[r, c]);
        }
        Same(hf.Embedding, gguf.Embedding);
        Same(hf.LmHead, gguf.LmHead);
        for (int l = 0; l < hf.Layers.Count; l++)
        {
            Same(hf.Layers[l].Q, gguf.Layers[l].Q); Same(hf.Layers[l].K, gguf.Layers[l].K); Same(hf.Layers[l].V, gguf.Layers[l].V);
            Same(hf.Layers[l].O, gguf.Layers[l].O); Same(hf.Layers[l].Gate, gguf.Layers[l].Gate); Same(hf.Layers[l].Down, gguf.Layers[l].Down);
        }
    }

    /// <summary>Compares configs by value (arrays element-wise).</summary>
    sealed class ConfigComparer : IEqualityComparer<ModelConfig>
    {
        public bool Equals(ModelConfig? a, ModelConfig? b) =>
            JsonSerializer.Serialize(a with { StoredDType = null }) == JsonSerializer.Serialize(b! with { StoredDType = null });
        public int GetHashCode(ModelConfig c) => 0;
    }
}
