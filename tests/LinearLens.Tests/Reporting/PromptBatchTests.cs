using System.Text.Json.Nodes;
using LinearLens.Analysis;
using LinearLens.Loading;
using LinearLens.Models;
using LinearLens.Reporting;
using LinearLens.Tests.Support;
using Xunit.Abstractions;

namespace LinearLens.Tests.Reporting;

/// <summary>`analyze --prompts`: one model load, a folder per prompt, a summary equal to separate runs, and a run that resumes.</summary>
public sealed class PromptBatchTests(ITestOutputHelper output) : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("ll-prompts").FullName;

    public void Dispose() => Directory.Delete(dir, true);

    static readonly string[] Stories =
    [
        "Lily went to the park. She saw a big",
        "Once upon a time, there was a little",
        "Tom had a red ball. He liked to",
        "The sun was hot and the",
        "Mom said \"no\" & Ben was sad <3",
        "One day, a cat and a dog",
    ];

    static JsonObject Json(string path) => JsonNode.Parse(File.ReadAllText(path))!.AsObject();

    [SharedFact("models", "stories260K", "hf", "model.safetensors")]
    public void PromptsEqualSeparateRunsAndAnInterruptedRunDoesOnlyTheRest()
    {
        string file = Path.Combine(dir, "prompts.txt"), outDir = Path.Combine(dir, "out");
        File.WriteAllText(file, string.Join("\n", Stories.Take(3)) + "\n\n   \n" + string.Join("\r\n", Stories.Skip(3)) + "\n");
        string[] analysisOptions = ["--layers", "2,5", "--components", "4"];

        // Interrupted after two prompts: two complete folders, nothing of the others, no summary.
        using (var ckpt = Checkpoint.Open(SharedData.Stories260K))
        {
            var model = new Transformer<double>(ckpt);
            using var cancel = new CancellationTokenSource();
            var options = new AnalysisOptions { Layers = [2, 5], Components = 4 };
            Assert.Throws<OperationCanceledException>(() => PromptBatch.Run(model, PromptFile.Read(file), outDir, options, figures: false,
                p => { if (p.Done == 2) cancel.Cancel(); }, cancel.Token));
        }
        Assert.True(File.Exists(Path.Combine(outDir, "prompt-0001", "analysis.json")));
        Assert.True(File.Exists(Path.Combine(outDir, "prompt-0002", "analysis.json")));
        Assert.False(Directory.Exists(Path.Combine(outDir, "prompt-0003")));
        Assert.False(File.Exists(Path.Combine(outDir, "summary.json")));
        Assert.Empty(Directory.EnumerateFiles(outDir, "*.tmp*", SearchOption.AllDirectories));
        string first = File.ReadAllText(Path.Combine(outDir, "prompt-0001", "analysis.json"));

        // Started again: the other four only.
        var r = CliRunner.Run(["analyze", "--model", SharedData.Stories260K, "--prompts", file, "--out", outDir, .. analysisOptions]);
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Contains("6 prompts: 4 analysed, 2 already done", r.Stdout);
        Assert.Contains("prompt 1/6 (line 1, ", r.Stderr);
        Assert.Contains("already done", r.Stderr);
        Assert.Contains("ETA", r.Stderr);
        Assert.Equal(first, File.ReadAllText(Path.Combine(outDir, "prompt-0001", "analysis.json")));   // not redone (its timings would differ)
        for (int i = 1; i <= 6; i++) Assert.True(File.Exists(Path.Combine(outDir, $"prompt-{i:D4}", "report.html")));
        Assert.Empty(Directory.EnumerateFiles(outDir, "prompt-0003/*.png"));   // figures only with --figures

        // The summary's per-prompt values are those of six separate `analyze` runs.
        var summary = Json(Path.Combine(outDir, "summary.json"));
        Assert.Equal(6, summary["count"]!.GetValue<int>());
        var prompts = summary["prompts"]!.AsArray();
        Assert.Equal(new[] { 1, 2, 3, 6, 7, 8 }, prompts.Select(p => p!["line"]!.GetValue<int>()));
        for (int i = 0; i < 6; i++)
        {
            string single = Path.Combine(dir, $"single-{i}");
            var s = CliRunner.Run(["analyze", "--model", SharedData.Stories260K, "--text", Stories[i], "--out", single, .. analysisOptions]);
            Assert.True(s.ExitCode == 0, s.Stderr);
            var a = Json(Path.Combine(single, "analysis.json"));
            var p = prompts[i]!;
            Assert.Equal(Stories[i], p["text"]!.GetValue<string>());
            Assert.Equal(a["predicted_id"]!.GetValue<int>(), p["predicted_id"]!.GetValue<int>());
            Assert.Equal(a["predicted_token"]!.GetValue<string>(), p["predicted_token"]!.GetValue<string>());
            Assert.Equal(a["reconstruction"]!["relative_error"]!.GetValue<double>(), p["relative_error"]!.GetValue<double>());
            Assert.Equal(a["reconstruction"]!["ordinary_relative_error"]!.GetValue<double>(), p["ordinary_relative_error"]!.GetValue<double>());
            var sweep = a["layer_sweep"]!.AsArray();
            var sr = p["stable_rank"]!.AsArray();
            Assert.Equal(sweep.Count, sr.Count);
            Assert.Equal(2 * 3 * 2, sr.Count);
            for (int j = 0; j < sweep.Count; j++)
            {
                Assert.Equal(sweep[j]!["layer"]!.GetValue<int>(), sr[j]!["layer"]!.GetValue<int>());
                Assert.Equal(sweep[j]!["key"]!.GetValue<string>(), sr[j]!["key"]!.GetValue<string>());
                Assert.Equal(sweep[j]!["stable_rank"]!.GetValue<double>(), sr[j]!["stable_rank"]!.GetValue<double>());
            }
        }
        // Across prompts: median and quartiles of each matrix's stable rank.
        var dist = summary["distribution"]!.AsArray().Select(d => d!).ToArray();
        Assert.Equal(12, dist.Length);
        var residual5 = dist.Single(d => d["mode"]!.GetValue<string>() == "cumulative" && d["key"]!.GetValue<string>() == "layer" && d["layer"]!.GetValue<int>() == 5);
        var values = prompts.Select(p => p!["stable_rank"]!.AsArray().Single(x => x!["mode"]!.GetValue<string>() == "cumulative" && x["key"]!.GetValue<string>() == "layer" && x["layer"]!.GetValue<int>() == 5)!["stable_rank"]!.GetValue<double>()).Order().ToArray();
        Assert.Equal((values[2] + values[3]) / 2, residual5["stable_rank"]!["median"]!.GetValue<double>(), 1e-12);
        Assert.Equal(values[1] + 0.25 * (values[2] - values[1]), residual5["stable_rank"]!["q1"]!.GetValue<double>(), 1e-12);
        Assert.Equal(values[0], residual5["stable_rank"]!["min"]!.GetValue<double>());
        Assert.Equal(1 / values[5], residual5["sigma1_share"]!["min"]!.GetValue<double>(), 1e-12);
        Assert.True(File.Exists(Path.Combine(outDir, "summary.html")));

        // Once more with the same options: nothing to do, the same summary.
        r = CliRunner.Run(["analyze", "--model", SharedData.Stories260K, "--prompts", file, "--out", outDir, .. analysisOptions]);
        Assert.Contains("6 prompts: 0 analysed, 6 already done", r.Stdout);
        Assert.Equal(summary.ToJsonString(), Json(Path.Combine(outDir, "summary.json")).ToJsonString());
    }

    [Fact]
    public void QuantilesInterpolateBetweenOrderStatistics()
    {
        Assert.Equal(2.5, BatchSummary.Quantile([1, 2, 3, 4], 0.5));
        Assert.Equal(1.75, BatchSummary.Quantile([1, 2, 3, 4], 0.25));
        Assert.Equal(7, BatchSummary.Quantile([7], 0.75));
    }

    [Fact]
    public void PromptFilesAreTextLinesOrJsonLines()
    {
        string txt = Path.Combine(dir, "p.txt");
        File.WriteAllText(txt, "\uFEFFfirst prompt\r\n\r\n  \nsecond {not json}\n");
        Assert.Equal([new Prompt(1, "first prompt"), new Prompt(4, "second {not json}")], PromptFile.Read(txt));
        string jsonl = Path.Combine(dir, "p.jsonl");
        File.WriteAllText(jsonl, "{\"text\": \"a \\\"quoted\\\" one\", \"id\": 7}\n\n{\"text\":\"b\"}\n");
        Assert.Equal([new Prompt(1, "a \"quoted\" one"), new Prompt(3, "b")], PromptFile.Read(jsonl));
    }

    [Theory]
    [InlineData("{\"text\": \"ok\"}\n{\"text\": 3}\n", "line 2: no string \"text\" field")]
    [InlineData("{\"text\": \"ok\"}\n\n{\"text\": \"ok\"\n", "line 3: not valid JSON")]
    [InlineData("{\"text\": \"\"}\n", "line 1: \"text\" is empty")]
    [InlineData("\n \n", "has no prompts")]
    public void ABadPromptsLineIsOneErrorNamingTheLine(string content, string message)
    {
        string file = Path.Combine(dir, "bad.jsonl");
        File.WriteAllText(file, content);
        string model = Path.Combine(dir, "model");
        RandomCheckpoint.Write(model, RandomCheckpointSpec.Preset("tiny-llama"), seed: 1, keepValues: false);
        var r = CliRunner.Run("analyze", "--model", model, "--prompts", file, "--out", Path.Combine(dir, "out"));
        Assert.Equal(2, r.ExitCode);
        var lines = r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Single(lines);
        Assert.StartsWith("error: ", lines[0]);
        Assert.Contains(message, lines[0]);
        Assert.False(Directory.Exists(Path.Combine(dir, "out")));
    }

    [Fact]
    public void InvalidUtf8IsAnErrorNamingTheLine()
    {
        string file = Path.Combine(dir, "bad.txt");
        File.WriteAllBytes(file, [.. "good\n"u8.ToArray(), 0xC3, 0x28, (byte)'\n']);
        var e = Assert.Throws<LinearLensException>(() => PromptFile.Read(file));
        Assert.Contains("line 2: not valid UTF-8", e.Message);
    }

    [Fact]
    public void PromptsNeedOutAndExcludeText()
    {
        string file = Path.Combine(dir, "p.txt");
        File.WriteAllText(file, "a\n");
        string model = Path.Combine(dir, "model");
        RandomCheckpoint.Write(model, RandomCheckpointSpec.Preset("tiny-llama"), seed: 1, keepValues: false);
        var r = CliRunner.Run("analyze", "--model", model, "--prompts", file);
        Assert.Equal(2, r.ExitCode);
        Assert.Contains("--prompts needs --out", r.Stderr);
        r = CliRunner.Run("analyze", "--model", model, "--prompts", file, "--text", "x", "--out", dir);
        Assert.Equal(2, r.ExitCode);
        Assert.Contains("not both", r.Stderr);
    }

    [BrowserFact]
    public async Task SummaryHtmlShowsEveryPromptOffline()
    {
        var reports = Enumerable.Range(0, 6).Select(i => SyntheticReport.Make(5 + 3 * i, seed: i + 1) with { InputText = Stories[i] }).ToArray();
        var analyses = reports.Select(r => JsonNode.Parse(AnalysisJson.Write(r))!.AsObject()).ToArray();
        var prompts = Stories.Select((s, i) => new Prompt(i + 1, s)).ToArray();
        var summary = BatchSummary.Build(analyses, prompts, Enumerable.Range(0, 6).Select(PromptBatch.FolderName).ToArray());
        string html = BatchSummary.Html(summary);
        await using var browser = await Browser.Launch();
        var loaded = await browser.Open(html);
        Assert.Empty(loaded.Errors);
        Assert.All(loaded.Requests, u => Assert.True(u.StartsWith("data:") || u.StartsWith("about:"), $"the page requested {u}"));
        var predictions = loaded.Page.Locator(".prediction");
        Assert.Equal(6, await predictions.CountAsync());
        for (int i = 0; i < 6; i++)
        {
            Assert.True(await predictions.Nth(i).IsVisibleAsync());
            Assert.Equal(Html.Visible(reports[i].PredictedToken), await predictions.Nth(i).TextContentAsync());
        }
        Assert.Equal(2, await loaded.Page.Locator("#stable-rank svg").CountAsync());   // cumulative and layerwise, median with quartile band
        Assert.Equal(1 + 2 * 3 * 4, await loaded.Page.Locator("#distribution tr").CountAsync());
        string shot = await Browser.Screenshot(loaded.Page, "summary");
        output.WriteLine($"screenshot: {shot}");
    }
}
