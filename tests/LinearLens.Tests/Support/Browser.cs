using Microsoft.Playwright;

namespace LinearLens.Tests.Support;

/// <summary>
/// A real headless Chromium (Debian's `chromium` package, which .ci/run installs) driven by Microsoft.Playwright
/// through the system binary — no browser download. A page is loaded from its HTML text (the document itself is
/// about:blank), and every request it makes, every console error and every page error is recorded.
/// </summary>
public sealed class Browser : IAsyncDisposable
{
    public static string? Executable { get; } = FindChromium();

    static string? FindChromium()
    {
        if (Environment.GetEnvironmentVariable("LINEARLENS_CHROMIUM") is { Length: > 0 } env && File.Exists(env)) return env;
        foreach (var p in new[] { "/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/lib/chromium/chromium" })
            if (File.Exists(p)) return p;
        return null;
    }

    /// <summary>Where screenshots are kept: under the test output folder.</summary>
    public static string ArtifactFolder { get; } = Directory.CreateDirectory(Path.Combine(AppContext.BaseDirectory, "artifacts")).FullName;

    readonly IPlaywright playwright;
    readonly IBrowser browser;
    Browser(IPlaywright pw, IBrowser b) { playwright = pw; browser = b; }

    public static async Task<Browser> Launch()
    {
        var pw = await Playwright.CreateAsync();
        var b = await pw.Chromium.LaunchAsync(new() { ExecutablePath = Executable, Headless = true, Args = ["--no-sandbox", "--disable-gpu"] });
        return new Browser(pw, b);
    }

    public sealed record LoadedPage(IPage Page, List<string> Requests, List<string> Errors);

    /// <summary>Opens an HTML document; requests to anything but data: and about: are recorded and aborted.</summary>
    public async Task<LoadedPage> Open(string html, int width = 1280, int height = 900)
    {
        var page = await browser.NewPageAsync(new() { ViewportSize = new() { Width = width, Height = height } });
        var requests = new List<string>();
        var errors = new List<string>();
        page.Console += (_, m) => { if (m.Type == "error") lock (errors) errors.Add("console: " + m.Text); };
        page.PageError += (_, e) => { lock (errors) errors.Add("page error: " + e); };
        page.Request += (_, r) => { lock (requests) requests.Add(r.Url); };
        await page.RouteAsync("**/*", async route =>
        {
            string url = route.Request.Url;
            if (url.StartsWith("data:") || url.StartsWith("about:")) await route.ContinueAsync();
            else await route.AbortAsync();
        });
        await page.SetContentAsync(html, new() { WaitUntil = WaitUntilState.Load });
        return new LoadedPage(page, requests, errors);
    }

    /// <summary>A full-page screenshot kept as a test artifact; returns its path.</summary>
    public static async Task<string> Screenshot(IPage page, string name)
    {
        string path = Path.Combine(ArtifactFolder, name + ".png");
        await page.ScreenshotAsync(new() { Path = path, FullPage = true });
        return path;
    }

    public async ValueTask DisposeAsync()
    {
        await browser.CloseAsync();
        playwright.Dispose();
    }
}

/// <summary>A fact that needs a chromium binary; skipped with the reason when there is none (CI installs Debian's `chromium`).</summary>
public sealed class BrowserFactAttribute : FactAttribute
{
    public BrowserFactAttribute()
    {
        if (Browser.Executable is null) Skip = "needs a chromium binary (Debian package 'chromium', installed by .ci/run; or set LINEARLENS_CHROMIUM), none found";
    }
}
