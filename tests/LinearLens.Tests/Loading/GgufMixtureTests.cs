using System.Text.Json;
using LinearLens.Loading;
using LinearLens.Numerics;
using LinearLens.Tests.Support;

namespace LinearLens.Tests.Loading;

/// <summary>random-checkpoint --quant q4_k_m picks each matrix's type as llama.cpp's Q4_K_M does (the fixtures were made by llama-quantize).</summary>
public class GgufMixtureTests
{
    [SharedTheory("models", "gguf-fixtures", "llama-q-Q4_K_M.expected.json")]
    [InlineData("llama-q-Q4_K_M", false)]
    [InlineData("qwen3-q-Q4_K_M", true)]
    public void Q4KMediumTypesAreLlamaQuantizesOnTheFixtures(string fixture, bool tied)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(SharedData.Path_("models", "gguf-fixtures", fixture + ".expected.json")));
        int checkedMatrices = 0;
        foreach (var t in doc.RootElement.GetProperty("tensor_types").EnumerateObject())
        {
            string type = t.Value.GetString()!;
            if (type == "F32") continue;   // norms and rope_freqs
            Assert.Equal(type, GgufExport.Q4KMedium(t.Name, layers: 2, tied).Name());
            checkedMatrices++;
        }
        Assert.True(checkedMatrices >= 14);
    }

    [Fact]
    public void Q4KMediumGivesMoreBitsToTheFirstAndLastEighthAndEveryThirdLayer()
    {
        // 40 layers (Qwen3-14B): 0–4 and 35–39, and (i − 5) mod 3 = 2 between
        var more = Enumerable.Range(0, 40).Where(i => GgufExport.Q4KMedium($"blk.{i}.ffn_down.weight", 40, tied: false) == LinearLens.Numerics.DType.Q6_K).ToArray();
        Assert.Equal([0, 1, 2, 3, 4, 7, 10, 13, 16, 19, 22, 25, 28, 31, 34, 35, 36, 37, 38, 39], more);
        Assert.Equal(LinearLens.Numerics.DType.Q4_K, GgufExport.Q4KMedium("blk.7.attn_q.weight", 40, tied: false));
    }
}

/// <summary>A quantized random GGUF written straight from the spec equals the one converted from the written Hugging Face checkpoint.</summary>
public class GgufFromRandomTests
{
    [Theory]
    [InlineData("Q4_K")]
    [InlineData("Q4_K_M")]
    public void StraightFromTheSpecEqualsTheConversionByteForByte(string quant)
    {
        using var tmp = new ScratchFolder("gguf-random");
        var spec = new LinearLens.Models.RandomCheckpointSpec("qwen3", Hidden: 256, Intermediate: 512, Layers: 3, Heads: 4, KvHeads: 2, HeadDim: 64,
            Vocab: 300, MaxPos: 4096, Tie: true, DType: DType.BF16, RopeTheta: 1e6, RmsNormEps: 1e-6);
        Func<string, int, DType>? mixture = quant == "Q4_K_M" ? (gg, layers) => GgufExport.Q4KMedium(gg, layers, spec.Tie) : null;
        DType? type = quant == "Q4_K_M" ? null : DType.Q4_K;
        string hf = tmp.Sub("hf"), converted = Path.Combine(tmp.Path, "a.gguf"), straight = Path.Combine(tmp.Path, "b.gguf");
        LinearLens.Models.RandomCheckpoint.Write(hf, spec, 7, keepValues: false);
        GgufExport.FromHuggingFace(hf, converted, type, 7, "random", mixture);
        GgufExport.FromRandom(spec, 7, straight, type, "random", mixture);
        Assert.Equal(File.ReadAllBytes(converted), File.ReadAllBytes(straight));
        using var ckpt = Checkpoint.Open(straight);
        Assert.Equal(3, ckpt.Config.NumLayers);
    }
}
