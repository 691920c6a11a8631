using LinearLens.Loading;
using LinearLens.Models;
using LinearLens.Numerics;
using LinearLens.Tests.Support;

namespace LinearLens.Tests.Loading;

/// <summary>
/// The GGUF writer and the Hugging Face → GGUF export: llama.cpp's own files rewritten byte for byte, and random
/// checkpoints exported in llama.cpp's layout (permuted q/k, 1 + w norms, rope_freqs) reading back to the very
/// weights and logits of the Hugging Face folder they came from.
/// </summary>
public class GgufWriterTests
{
    static readonly string Tmp = Path.Combine(Path.GetTempPath(), "linearlens-gguf-writer-tests");

    /// <summary>Reading a fixture (written by llama.cpp's gguf-py) and writing it back gives the identical file.</summary>
    [SharedTheory("models", "gguf-fixtures", "README.md")]
    [InlineData("llama-q-F32")]
    [InlineData("qwen3-q-Q4_K_M")]
    [InlineData("llama-q-IQ4_XS")]
    public void RewritingAFixtureGivesTheSameBytes(string name)
    {
        string src = SharedData.Path_("models", "gguf-fixtures", name + ".gguf");
        Directory.CreateDirectory(Tmp);
        string dst = Path.Combine(Tmp, name + ".rewritten.gguf");
        using (var f = GgufFile.Open(src))
        {
            var entries = f.Tensors.Select(t => new GgufTensorEntry(t.Name, t.Type, t.Dims)).ToList();
            GgufWriter.Write(dst, f.Metadata, entries, (e, s) => { using var d = f.OpenData(f.Find(e.Name)!); d.CopyTo(s); }, f.Version);
        }
        Assert.True(File.ReadAllBytes(src).AsSpan().SequenceEqual(File.ReadAllBytes(dst)), $"{dst} differs from {src}");
        File.Delete(dst);
    }

    public static TheoryData<string> Specs => new() { "llama", "llama-llama3", "qwen3", "gemma3", "llama-bf16", "qwen3-f16", "llama-bias", "phi3", "olmo2" };

    static RandomCheckpointSpec Spec(string name) => name switch
    {
        "llama" => RandomCheckpointSpec.Preset("tiny-llama") with { RopeScaling = null },
        "llama-llama3" => RandomCheckpointSpec.Preset("tiny-llama"),
        "qwen3" => RandomCheckpointSpec.Preset("tiny-qwen3"),
        // llama.cpp's Gemma 3: sliding pattern 6, query_pre_attn_scalar = head_dim, local base 10000.
        "gemma3" => RandomCheckpointSpec.Preset("tiny-gemma3") with { LayerTypes = null, QueryPreAttnScalar = null },
        "llama-bf16" => RandomCheckpointSpec.Preset("tiny-llama") with { RopeScaling = null, DType = DType.BF16 },
        "qwen3-f16" => RandomCheckpointSpec.Preset("tiny-qwen3") with { DType = DType.F16 },
        "llama-bias" => RandomCheckpointSpec.Preset("tiny-llama-bias") with { RopeScaling = null },   // q/k biases permuted too
        "phi3" => RandomCheckpointSpec.Preset("tiny-phi3-plain"),
        "olmo2" => RandomCheckpointSpec.Preset("tiny-olmo2"),
        _ => throw new ArgumentException(name),
    };

    /// <summary>
    /// HF folder → GGUF → Checkpoint: every weight matrix equals the folder's (the q/k permutation and the norm
    /// shift undone), and the float64 logits at every position are bit-identical — except with Llama 3 scaling, where
    /// the GGUF carries float32-rounded divisors instead of the formula, and Gemma, whose GGUF norms are float32(1 + w).
    /// </summary>
    [Theory]
    [MemberData(nameof(Specs))]
    public void ExportedRandomCheckpointReadsBackToTheSameModel(string name)
    {
        string folder = Path.Combine(Tmp, name + "-hf"), gguf = Path.Combine(Tmp, name + ".gguf");
        // GGUF stores eps as float32: a float32-exact eps keeps both models bit-identical.
        RandomCheckpoint.Write(folder, Spec(name) with { RmsNormEps = 1.0 / (1 << 20) }, seed: 7, keepValues: false);
        GgufExport.FromHuggingFace(folder, gguf, name: name);
        using var hf = Checkpoint.Open(folder);
        using var gg = Checkpoint.Open(gguf);
        Assert.Equal(hf.Config.NumLayers, gg.Config.NumLayers);
        Assert.Equal(hf.Config.RmsNormEps, gg.Config.RmsNormEps);
        static void Same(MatrixView a, MatrixView b)
        {
            Assert.Equal((a.Rows, a.Cols), (b.Rows, b.Cols));
            for (int r = 0; r < a.Rows; r++) for (int c = 0; c < a.Cols; c++) Assert.Equal(a[r, c], b[r, c]);
        }
        Same(hf.Embedding, gg.Embedding);
        Same(hf.LmHead, gg.LmHead);
        for (int l = 0; l < hf.Layers.Count; l++)
        {
            var (a, b) = (hf.Layers[l], gg.Layers[l]);
            Same(a.Q, b.Q); Same(a.K, b.K); Same(a.V, b.V); Same(a.O, b.O); Same(a.Gate, b.Gate); Same(a.Up, b.Up); Same(a.Down, b.Down);
        }

        int[] ids = [1, 5, 9, 2, 77, 3, 40];
        var want = new Transformer<double>(hf).Forward(ids, allLogits: true).Logits;
        var got = new Transformer<double>(gg).Forward(ids, allLogits: true).Logits;
        if (name is "llama-llama3" or "gemma3")
        {
            // llama3: float32 divisors for the formula; gemma3: the converter stores float32(1 + w), which rounds w.
            double num = 0, den = 0;
            for (int i = 0; i < want.Length; i++) { num += (want[i] - got[i]) * (want[i] - got[i]); den += want[i] * want[i]; }
            Assert.InRange(Math.Sqrt(num / den), 1e-13, 1e-6);   // different (not identical), and close
        }
        else Assert.Equal(want, got);
        hf.Dispose(); gg.Dispose();
        Directory.Delete(folder, true); File.Delete(gguf);
    }

    /// <summary>`random-checkpoint --format gguf --quant TYPE`: a file whose matrices are valid blocks of the type, and that runs.</summary>
    [Theory]
    [InlineData("Q8_0")]
    [InlineData("Q4_0")]
    [InlineData("IQ4_NL")]
    public void RandomQuantizedCheckpointHasFiniteBlocksOfTheType(string type)
    {
        Directory.CreateDirectory(Tmp);
        string file = Path.Combine(Tmp, $"tiny-llama-{type}.gguf");
        var r = CliRunner.Run("random-checkpoint", "--preset", "tiny-llama", "--format", "gguf", "--quant", type, "--out", file);
        Assert.Equal(0, r.ExitCode);
        using (var f = GgufFile.Open(file))
        {
            Assert.All(f.Tensors.Where(t => t.Dims.Length == 2), t => Assert.Equal(type, t.Type.Name()));
            Assert.All(f.Tensors.Where(t => t.Dims.Length == 1), t => Assert.Equal(DType.F32, t.Type));
        }
        using var ckpt = Checkpoint.Open(file);
        var q = ckpt.Layers[0].Q;
        double sum = 0;
        for (int i = 0; i < q.Rows; i++) for (int c = 0; c < q.Cols; c++) { Assert.True(double.IsFinite(q[i, c])); sum += Math.Abs(q[i, c]); }
        Assert.True(sum > 0);
        Assert.All(new Transformer<double>(ckpt).Forward([1, 2, 3]).Logits, x => Assert.True(double.IsFinite(x)));
        ckpt.Dispose();
        File.Delete(file);
    }

    [Fact]
    public void QuantizedRowsThatAreNotWholeBlocksAreOneErrorLine()
    {
        var r = CliRunner.Run("random-checkpoint", "--preset", "tiny-qwen3", "--format", "gguf", "--quant", "Q4_K", "--out", Path.Combine(Tmp, "bad.gguf"));
        Assert.Equal(2, r.ExitCode);
        Assert.Contains("not a whole number of 256-element Q4_K blocks", r.Stderr);
        Assert.DoesNotContain("   at ", r.Stderr);
    }
}
