using System.Text.Json;
using System.Text.Json.Nodes;
using LinearLens.Models;
using LinearLens.Reporting;
using LinearLens.Tests.Support;
using Xunit.Abstractions;

namespace LinearLens.Tests.Reporting;

/// <summary>report.html opened in a real headless Chromium: self-contained, every token and the prediction visible, the attribution adding up.</summary>
public sealed class ReportTests(ITestOutputHelper output) : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("ll-report").FullName;

    public void Dispose() => Directory.Delete(dir, true);

    /// <summary>stories260K with a text full of characters HTML must escape when ../shared has it; a tiny random checkpoint otherwise.</summary>
    string[] ModelAndInput()
    {
        if (File.Exists(Path.Combine(SharedData.Stories260K, "model.safetensors")))
            return ["--model", SharedData.Stories260K, "--text", "Lily said \"<b>hi</b>\" & 'bye' to the “big” dog.\nThe end"];
        string model = Path.Combine(dir, "model");
        RandomCheckpoint.Write(model, RandomCheckpointSpec.Preset("tiny-llama"), seed: 5, keepValues: false);
        return ["--model", model, "--token-ids", "1,5,9,22,7,3,50,11"];
    }

    /// <summary>Checks in the page itself (one script, not one call per token): each element rendered with a non-empty box and not hidden.</summary>
    const string AllVisibleScript = """
        sel => Array.from(document.querySelectorAll(sel)).map(e => {
          const r = e.getBoundingClientRect(), s = getComputedStyle(e);
          return { text: e.textContent, visible: r.width > 0 && r.height > 0 && s.visibility !== 'hidden' && s.display !== 'none' && e.checkVisibility(),
                   title: e.getAttribute('title'), c: e.getAttribute('data-contribution') };
        })
        """;

    sealed class TokenBox { public string text { get; set; } = ""; public bool visible { get; set; } public string? title { get; set; } public string? c { get; set; } }

    static async Task<TokenBox[]> Boxes(Microsoft.Playwright.IPage page, string selector) =>
        (await page.EvaluateAsync<TokenBox[]>(AllVisibleScript, selector))!;

    static async Task AssertReport(Browser.LoadedPage loaded, JsonObject a)
    {
        var page = loaded.Page;
        var tokens = a["tokens"]!.AsArray().Select(t => t!.GetValue<string>()).ToArray();
        // every input token of the predicted logit's strip is there, in order, visible, with its exact value on hover
        var boxes = await Boxes(page, ".attribution:first-of-type .strip .tok[data-index]");
        Assert.Equal(tokens.Length, boxes.Length);
        var contributions = a["attribution"]![0]!["contributions"]!.AsArray().Select(c => c!.GetValue<double>()).ToArray();
        for (int i = 0; i < tokens.Length; i++)
        {
            Assert.True(boxes[i].visible, $"token {i} {JsonSerializer.Serialize(tokens[i])} is not visible");
            Assert.Equal(Html.Visible(tokens[i]), boxes[i].text);
            Assert.Contains(Html.Visible(tokens[i]), boxes[i].title);
            Assert.Equal(contributions[i], double.Parse(boxes[i].c!, System.Globalization.CultureInfo.InvariantCulture));
        }
        // the values shown sum to the logit shown
        double sum = boxes.Sum(b => double.Parse(b.c!, System.Globalization.CultureInfo.InvariantCulture));
        // a model with biases has one more entry, the constant term's
        if (await page.EvaluateAsync<string?>("() => document.querySelector('.attribution:first-of-type .strip .bias')?.getAttribute('data-bias') ?? null") is { } bias)
            sum += double.Parse(bias, System.Globalization.CultureInfo.InvariantCulture);
        else Assert.Equal(0, a["attribution"]![0]!["bias"]?.GetValue<double>() ?? 0);
        double logit = double.Parse((await page.GetAttributeAsync(".attribution:first-of-type .logit", "data-value"))!, System.Globalization.CultureInfo.InvariantCulture);
        Assert.True(Math.Abs(sum - logit) <= 1e-9 * Math.Max(1, Math.Abs(logit)), $"Σ shown {sum} vs logit shown {logit}");
        Assert.Equal(a["attribution"]![0]!["logit"]!.GetValue<double>(), logit);
        // the prediction
        var predicted = page.Locator("#predicted");
        Assert.True(await predicted.IsVisibleAsync());
        Assert.Equal(Html.Visible(a["predicted_token"]!.GetValue<string>()), await predicted.TextContentAsync());
        Assert.Empty(loaded.Errors);
        Assert.All(loaded.Requests, u => Assert.True(u.StartsWith("data:") || u.StartsWith("about:"), $"the page requested {u}"));
    }

    [BrowserFact]
    public async Task AnalyzeWritesAReportThatChromiumShowsCompletely()
    {
        string outDir = Path.Combine(dir, "out");
        var r = CliRunner.Run(["analyze", .. ModelAndInput(), "--out", outDir]);
        Assert.True(r.ExitCode == 0, r.Stderr);
        string html = File.ReadAllText(Path.Combine(outDir, "report.html"));
        var a = JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, "analysis.json")))!.AsObject();
        // `report DIR` rebuilds the same page from analysis.json and the PNGs
        File.Delete(Path.Combine(outDir, "report.html"));
        var rebuilt = CliRunner.Run("report", outDir);
        Assert.True(rebuilt.ExitCode == 0, rebuilt.Stderr);
        Assert.Equal(html, File.ReadAllText(Path.Combine(outDir, "report.html")));
        Assert.DoesNotContain("src=\"http", html);
        Assert.DoesNotContain("href=\"http", html);

        await using var browser = await Browser.Launch();
        var loaded = await browser.Open(html);
        await AssertReport(loaded, a);
        // every figure is inline, and decoded
        int images = await loaded.Page.Locator("figure img").CountAsync();
        Assert.Equal(Directory.GetFiles(outDir, "*.png").Length, images);
        Assert.True(await loaded.Page.EvaluateAsync<bool>("() => Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"));
        Assert.Equal(2, await loaded.Page.Locator("#layer-sweep svg").CountAsync());   // stable rank and path, drawn from the JSON
        string shot = await Browser.Screenshot(loaded.Page, "report");
        output.WriteLine($"screenshot: {shot}");
        Console.WriteLine($"report screenshot: {shot}");
    }

    [BrowserFact]
    public async Task AReportOfTwoThousandTokensStaysReadable()
    {
        // A real analysis of 2,000 tokens takes minutes (its attribution is O(n²·d)); the page is a function of the JSON alone.
        var report = SyntheticReport.Make(2000);
        string outDir = Path.Combine(dir, "long");
        AnalysisFolder.Write(report, outDir, figures: false);
        var a = JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, "analysis.json")))!.AsObject();
        await using var browser = await Browser.Launch();
        var loaded = await browser.Open(File.ReadAllText(Path.Combine(outDir, "report.html")));
        await AssertReport(loaded, a);
        // the strip wraps inside the page instead of running off it
        double pageWidth = await loaded.Page.EvaluateAsync<double>("() => document.documentElement.clientWidth");
        double stripRight = await loaded.Page.EvaluateAsync<double>("() => Math.max(...Array.from(document.querySelectorAll('.strip .tok')).map(e => e.getBoundingClientRect().right))");
        Assert.True(stripRight <= pageWidth, $"the strip runs to x = {stripRight} past the page's {pageWidth}");
        // per-token details come in collapsed pages of 50, only the first open
        Assert.Equal(40, await loaded.Page.Locator("details.page").CountAsync());
        Assert.Equal(1, await loaded.Page.Locator("details.page[open]").CountAsync());
        output.WriteLine($"screenshot: {await Browser.Screenshot(loaded.Page, "report-2000-tokens")}");
    }

    [BrowserFact]
    public async Task ArbitraryTokenTextsAreShownEscapedAndNeverRunAsMarkup()
    {
        string[] weird = ["<script>window.pwned=1</script>", "<img src=x onerror=\"window.pwned=2\">", "a&amp;b", "\"quoted\" 'single'", "\n", "\t\u0001\u007f\u009f",
                          "\ud800lone", "tail\udc00", "😀 \u201cok\u201d", "", " ", "]]></title><b>"];
        var a = new JsonObject
        {
            ["model_type"] = "llama", ["model_path"] = "/models/<x>&\"y\"", ["hub_id"] = "Org/<Model>", ["hub_revision"] = "main", ["dtype"] = "float64", ["input_ids"] = new JsonArray(weird.Select((_, i) => (JsonNode)i).ToArray()),
            ["tokens"] = new JsonArray(weird.Select(t => (JsonNode)t).ToArray()), ["predicted_id"] = 3, ["predicted_token"] = "<b>\"x\"</b>&",
            ["hidden_size"] = 4, ["num_layers"] = 1, ["method"] = "full", ["method_reason"] = "requested",
            ["reconstruction"] = new JsonObject { ["relative_error"] = 1e-16, ["max_abs_error"] = 1e-16, ["ordinary_relative_error"] = null },
            ["attribution"] = new JsonArray(new JsonObject
            {
                ["token_id"] = 3, ["token"] = "<b>\"x\"</b>&", ["contributions"] = new JsonArray(weird.Select((_, i) => (JsonNode)(i - 5.5)).ToArray()),
                ["sum"] = weird.Select((_, i) => i - 5.5).Sum(), ["logit"] = weird.Select((_, i) => i - 5.5).Sum(), ["sum_error"] = 0.0,
            }),
            ["per_token"] = new JsonArray(weird.Select(t => (JsonNode)new JsonObject
            {
                ["singular_values"] = new JsonArray(2.0, 1.0), ["stable_rank"] = 1.5,
                ["components"] = new JsonArray(new JsonObject
                {
                    ["index"] = 0, ["sigma"] = 2.0,
                    ["left_tokens"] = new JsonArray(new JsonObject { ["id"] = 1, ["token"] = t, ["score"] = 1.0 }),
                    ["right_tokens"] = new JsonArray(new JsonObject { ["id"] = 2, ["token"] = t, ["score"] = 0.5 }),
                }),
            }).ToArray()),
        };
        string html = HtmlReport.Build(a, []);
        await using var browser = await Browser.Launch();
        var loaded = await browser.Open(html);
        await AssertReport(loaded, a);
        Assert.Null(await loaded.Page.EvaluateAsync<int?>("() => window.pwned ?? null"));
        Assert.Equal(0, await loaded.Page.Locator("img").CountAsync());
        Assert.Equal(0, await loaded.Page.Locator("b b, .strip b").CountAsync());
        Assert.Equal("/models/<x>&\"y\"", await loaded.Page.Locator("#model-path").TextContentAsync());
        Assert.Equal("Org/<Model>", await loaded.Page.Locator("#hub-id").TextContentAsync());
        // the lone surrogates and control characters have a visible escaped form
        var boxes = await Boxes(loaded.Page, ".attribution:first-of-type .strip .tok[data-index]");
        Assert.Equal("\\uD800lone", boxes[6].text);
        Assert.Equal("tail\\uDC00", boxes[7].text);
        Assert.Equal("\\t\\u0001\\u007F\\u009F", boxes[5].text);
        Assert.Equal("\\n", boxes[4].text);
        output.WriteLine($"screenshot: {await Browser.Screenshot(loaded.Page, "report-escaping")}");
    }

    [Fact]
    public void VisibleFormEscapesControlsAndLoneSurrogatesOnly()
    {
        Assert.Equal("a b\\n\\t\\r\\u0000\\u007F", Html.Visible("a b\n\t\r\0\u007f"));
        Assert.Equal("😀“", Html.Visible("😀“"));
        Assert.Equal("\\uD83D", Html.Visible("\ud83d"));
        Assert.Equal("&lt;a href=&quot;x&quot;&gt;&amp;&#39;", Html.Text("<a href=\"x\">&'"));
    }

    [Fact]
    public void ReportOfAFolderWithoutAnalysisIsOneClearError()
    {
        var r = CliRunner.Run("report", dir);
        Assert.Equal(2, r.ExitCode);
        Assert.StartsWith("error: ", r.Stderr);
        Assert.Contains("analysis.json", r.Stderr);
        File.WriteAllText(Path.Combine(dir, "analysis.json"), "{not json");
        r = CliRunner.Run("report", dir);
        Assert.Equal(2, r.ExitCode);
        Assert.Contains("not an analysis.json", r.Stderr);
    }
}
