namespace LinearLens.Loading;

/// <summary>
/// Where and how models named by Hub id are fetched: the Hub endpoint, the shared cache folder, the token, and
/// whether the network may be used at all. Built from the environment in one place (<see cref="FromEnvironment"/>),
/// by the same rules as huggingface_hub, so that tests pass their own object instead of mutating the process.
/// </summary>
public sealed record HubOptions(string Endpoint, string CacheDir, string? Token, bool Offline)
{
    public const string DefaultEndpoint = "https://huggingface.co";

    /// <summary>Limit for a metadata (HEAD) request and for connecting: HF_HUB_ETAG_TIMEOUT, default 10 s.</summary>
    public TimeSpan EtagTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>Limit for a download's answer and for each wait for its next bytes: HF_HUB_DOWNLOAD_TIMEOUT, default 10 s.</summary>
    public TimeSpan DownloadTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>The options of this process: its environment variables and the user's home folder.</summary>
    public static HubOptions FromProcess() =>
        FromEnvironment(Environment.GetEnvironmentVariable, Environment.GetFolderPath(Environment.SpecialFolder.UserProfile));

    /// <summary>
    /// huggingface_hub's rules. Cache: HF_HUB_CACHE, else HF_HOME/hub, else XDG_CACHE_HOME/huggingface/hub, else
    /// ~/.cache/huggingface/hub. Endpoint: HF_ENDPOINT (trailing '/' dropped). Token: HF_TOKEN, else the legacy
    /// HUGGING_FACE_HUB_TOKEN, else the file written by `hf auth login` (HF_TOKEN_PATH, else HF_HOME/token).
    /// Offline: HF_HUB_OFFLINE is 1, ON, YES or TRUE (any case). Timeouts: HF_HUB_ETAG_TIMEOUT, HF_HUB_DOWNLOAD_TIMEOUT
    /// (seconds).
    /// </summary>
    public static HubOptions FromEnvironment(Func<string, string?> env, string userHome)
    {
        string? Var(string name) => env(name) is { Length: > 0 } v ? v : null;
        string Expand(string p) => p == "~" ? userHome : p.StartsWith("~/", StringComparison.Ordinal) ? Path.Combine(userHome, p[2..]) : p;

        string hfHome = Expand(Var("HF_HOME") ?? Path.Combine(Var("XDG_CACHE_HOME") ?? Path.Combine(userHome, ".cache"), "huggingface"));
        string cache = Expand(Var("HF_HUB_CACHE") ?? Path.Combine(hfHome, "hub"));
        string endpoint = (Var("HF_ENDPOINT") ?? DefaultEndpoint).TrimEnd('/');
        if (!Uri.TryCreate(endpoint, UriKind.Absolute, out var endpointUri) || endpointUri.Scheme is not ("http" or "https"))
            throw new LinearLensException($"HF_ENDPOINT='{HubCache.Shorten(endpoint)}' is not an http or https URL; set it to e.g. {DefaultEndpoint} or unset it");
        string? token = Var("HF_TOKEN") ?? Var("HUGGING_FACE_HUB_TOKEN");
        if (token is null)
        {
            string tokenFile = Expand(Var("HF_TOKEN_PATH") ?? Path.Combine(hfHome, "token"));
            if (File.Exists(tokenFile) && File.ReadAllText(tokenFile).Trim() is { Length: > 0 } t) token = t;
        }
        bool offline = Var("HF_HUB_OFFLINE")?.Trim().ToUpperInvariant() is "1" or "ON" or "YES" or "TRUE";
        TimeSpan Seconds(string name)
        {
            string? v = Var(name);
            if (v is null) return TimeSpan.FromSeconds(10);
            if (!double.TryParse(v, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double s)
                || !(s > 0 && s <= 86400))
                throw new LinearLensException($"{name}='{HubCache.Shorten(v)}' is not a number of seconds (0 < s ≤ 86400); set it to e.g. 30 or unset it");
            return TimeSpan.FromSeconds(s);
        }
        return new HubOptions(endpoint, cache, token?.Trim(), offline)
        {
            EtagTimeout = Seconds("HF_HUB_ETAG_TIMEOUT"),
            DownloadTimeout = Seconds("HF_HUB_DOWNLOAD_TIMEOUT"),
        };
    }
}

/// <summary>
/// What a --model argument resolved to: the local folder or file handed to <see cref="Checkpoint.Open"/>, and for a
/// Hub id the id, the revision asked for and the commit it named. Note is a line for the user when the Hub could not
/// be reached and the cached snapshot was used.
/// </summary>
public sealed record ResolvedModel(string LocalPath, string? HubId = null, string? Revision = null, string? Commit = null, string? Note = null)
{
    public bool IsFromHub => HubId is not null;
}

/// <summary>Progress of one file being downloaded: bytes so far (including a resumed part) of its total size.</summary>
public readonly record struct HubProgress(string File, long Bytes, long TotalBytes);
