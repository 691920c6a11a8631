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
