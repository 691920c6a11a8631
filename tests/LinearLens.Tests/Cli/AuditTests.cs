using System.Text.Json.Nodes;
using LinearLens.Reporting;
using LinearLens.Tests.Support;

namespace LinearLens.Tests.Cli;

/// <summary>Bad input found by a black-box audit of the CLI: each is one clear line on stderr and exit code 2, or the right answer.</summary>
public sealed class AuditTests : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("ll-audit").FullName;

    public void Dispose() => Directory.Delete(dir, true);

    static void AssertOneLineError(CliRunner.Result r, string mustContain)
    {
        Assert.True(r.ExitCode == 2, $"exit code {r.ExitCode}: {r.Stderr}");
        var lines = r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Single(lines);
        Assert.StartsWith("error: ", lines[0]);
        Assert.Contains(mustContain, lines[0]);
        Assert.Equal("", r.Stdout);
    }

    /// <summary>A folder as `analyze --out` leaves it (a synthetic report, no figures), its analysis.json edited.</summary>
    string AnalysisFolderWith(Action<JsonObject> edit)
    {
        string folder = Path.Combine(dir, "analysis");
        AnalysisFolder.Write(SyntheticReport.Make(5), folder, figures: false);
        string path = Path.Combine(folder, AnalysisFolder.JsonName);
        var a = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        edit(a);
        File.WriteAllText(path, a.ToJsonString());
        return folder;
    }

    [Theory]
    [InlineData("reconstruction", "\"x\"")]
    [InlineData("reconstruction", null)]
    [InlineData("attribution", "[1]")]
    [InlineData("per_token", "[null]")]
    [InlineData("layer_sweep", "[\"layer\"]")]
    public void ReportOfAnAnalysisJsonWithAValueOfTheWrongType(string key, string? raw)
    {
        string folder = AnalysisFolderWith(a => { if (raw is null) a.Remove(key); else a[key] = JsonNode.Parse(raw); });
        AssertOneLineError(CliRunner.Run("report", folder), "is not an analysis.json written by LinearLens");
        Assert.False(File.Exists(Path.Combine(folder, HtmlReport.FileName + ".tmp")));
    }

    [Theory]
    [InlineData("{}")]
    [InlineData("{\"count\": 1, \"prompts\": [1]}")]
    [InlineData("{\"count\": 1, \"prompts\": [{}]}")]
    [InlineData("{\"count\": \"one\"}")]
    public void ReportOfASummaryJsonWithAValueOfTheWrongType(string raw)
    {
        File.WriteAllText(Path.Combine(dir, BatchSummary.JsonName), raw);
        AssertOneLineError(CliRunner.Run("report", dir), "is not a summary.json written by LinearLens");
        Assert.False(File.Exists(Path.Combine(dir, BatchSummary.HtmlName)));
    }
}
