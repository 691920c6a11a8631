using LinearLens.Tests.Support;

namespace LinearLens.Tests.Models;

/// <summary>The real trained stories260K model against llama2.c's published results.</summary>
public class Stories260KTests
{
    [SharedTheory("models", "stories260K", "hf", "model.safetensors")]
    [InlineData("float64")]
    [InlineData("float32")]
    public void Greedy200TokensFromBosMatchLlama2c(string dtype)
    {
        var r = CliRunner.Run("generate", "--model", SharedData.Stories260K, "--token-ids", "1", "--max-new-tokens", "200", "--dtype", dtype);
        Assert.Equal(0, r.ExitCode);
        string expected = File.ReadAllText(Path.Combine(SharedData.Stories260KExpected, "greedy_from_bos_200_tokens.txt"));
        Assert.Equal(expected.TrimEnd('\n'), r.Stdout.TrimEnd('\n'));
    }

    [SharedFact("models", "stories260K", "hf", "model.safetensors")]
    public void JsonOutputHasTheDocumentedFields()
    {
        var r = CliRunner.Run("generate", "--model", SharedData.Stories260K, "--text", "Lily went to the park.", "--max-new-tokens", "5", "--json");
        Assert.Equal(0, r.ExitCode);
        using var doc = System.Text.Json.JsonDocument.Parse(r.Stdout);
        var o = doc.RootElement;
        Assert.Equal("llama", o.GetProperty("model_type").GetString());
        Assert.Equal("float64", o.GetProperty("dtype").GetString());
        Assert.Equal(1, o.GetProperty("input_ids")[0].GetInt32());
        Assert.Equal(5, o.GetProperty("output_ids").GetArrayLength());
        Assert.False(string.IsNullOrEmpty(o.GetProperty("text").GetString()));
    }

    [SharedFact("models", "stories260K", "expected", "encode_cases.tsv")]
    public void EveryEncodeCaseGivesLlama2cIds()
    {
        using var ckpt = LinearLens.Loading.Checkpoint.Open(SharedData.Stories260K);
        foreach (var line in File.ReadAllLines(Path.Combine(SharedData.Stories260KExpected, "encode_cases.tsv")))
        {
            if (line.Length == 0) continue;
            var parts = line.Split('\t');
            Assert.Equal(parts[1], string.Join(",", ckpt.RequireTokenizer().Encode(parts[0])));
        }
    }
}
