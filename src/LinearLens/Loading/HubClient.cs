using System.Net;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace LinearLens.Loading;

/// <summary>
/// Resolves a --model argument: an existing file or folder is used as is; an ORG/NAME Hub id is found in the
/// Hugging Face cache or downloaded into it by huggingface_hub's protocol — per file a HEAD of
/// ENDPOINT/ORG/NAME/resolve/REV/FILE without following redirects (a relative redirect, a renamed repo, is followed;
/// an absolute one, the CDN of a large LFS file, is where the bytes are fetched), the commit from X-Repo-Commit,
/// the etag from X-Linked-Etag over ETag, the size from X-Linked-Size over Content-Length; then a GET into
/// blobs/ETAG.incomplete that resumes with Range, a sha256 check for LFS files (their etag is the sha256), and
/// the rename into place and the snapshot symlink.
/// </summary>
public sealed partial class HubClient : IDisposable
{
    /// <summary>Optional files of a model, fetched when the repo has them.</summary>
    static readonly string[] OptionalFiles = ["generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"];

    const int MaxRedirects = 10;
    const int AttemptsPerFile = 3;

    readonly HubOptions _options;
    readonly Action<HubProgress>? _progress;
    readonly HttpClient _http;

    public HubClient(HubOptions options, Action<HubProgress>? progress = null)
    {
        _options = options;
        _progress = progress;
        _http = new HttpClient(new SocketsHttpHandler
        {
            AllowAutoRedirect = false,
            AutomaticDecompression = DecompressionMethods.None,
            ConnectTimeout = options.EtagTimeout,
        })
        { Timeout = Timeout.InfiniteTimeSpan };   // each request has its own limit until its headers, each body read another
        _http.DefaultRequestHeaders.UserAgent.ParseAdd("LinearLens/1.0");
    }

    public void Dispose() => _http.Dispose();

    /// <summary>
    /// Whether a --model argument has the ORG/NAME form of a Hub model id (the Hub's naming rules). A name ending in
    /// a model file's extension (x/model.gguf) is taken for a mistyped path, not sent to the Hub.
    /// </summary>
    public static bool IsHubId(string s) =>
        HubIdPattern().IsMatch(s) && !s.Contains("--") && !s.Contains("..") && s.Length <= 96 * 2 + 1
        && !new[] { ".gguf", ".safetensors", ".json", ".bin" }.Any(ext => s.EndsWith(ext, StringComparison.OrdinalIgnoreCase));

    /// <summary>
    /// The local path for --model: an existing file or folder unchanged; an ORG/NAME id through the cache or the Hub;
    /// anything else unchanged (Checkpoint.Open then says what is missing). revision is null unless --revision was given.
    /// </summary>
    public static ResolvedModel Resolve(string model, string? revision, HubOptions options, Action<HubProgress>? progress = null) =>
        Resolve(model, revision, () => options, progress);

    /// <summary>As above, with the options built only when the argument is a Hub id (a bad HF_* variable does not stop a local run).</summary>
    public static ResolvedModel Resolve(string model, string? revision, Func<HubOptions> options, Action<HubProgress>? progress = null)
    {
        bool exists = File.Exists(model) || Directory.Exists(model);
        var hubFile = exists ? null : HubFile(model);
        var tagged = exists ? null : HubTag(model);
        if (exists || !IsHubId(model) && hubFile is null && tagged is null)
        {
            if (revision is not null)
                throw new LinearLensException($"--revision applies to a Hub id (ORG/NAME), but --model '{model}' is {(exists ? "a local path" : "neither an existing path nor a Hub id")}; drop --revision");
            return new ResolvedModel(model);
        }
        using var client = new HubClient(options(), progress);
        if (tagged is { } t) return client.FetchFile(t.Repo, client.GgufFileOf(t.Repo, t.Tag, revision ?? "main"), revision ?? "main");
        return hubFile is { } f ? client.FetchFile(f.Repo, f.File, revision ?? "main") : client.Fetch(model, revision ?? "main");
    }

    /// <summary>ORG/NAME:TAG, llama.cpp's `-hf` form: the repo's one GGUF file whose name ends in the tag (e.g. Q4_K_M).</summary>
    public static (string Repo, string Tag)? HubTag(string s)
    {
        int colon = s.LastIndexOf(':');
        if (colon < 0) return null;
        string repo = s[..colon], tag = s[(colon + 1)..];
        return IsHubId(repo) && TagPattern().IsMatch(tag) ? (repo, tag) : null;
    }

    /// <summary>The GGUF file of repoId at revision that a tag names (listed by the Hub's API, or in the cached snapshot).</summary>
    string GgufFileOf(string repoId, string tag, string revision)
    {
        CheckRevision(revision);
        var cache = new HubCache(_options.CacheDir, repoId);
        string[]? files = null;
        string? why = null;
        if (_options.Offline) why = "HF_HUB_OFFLINE is set";
        else
        {
            try { files = ListFiles(repoId, revision); }
            catch (HubUnreachableException e) { why = $"cannot reach {_options.Endpoint} ({e.Message})"; }
            catch (HubRefusedException e) { why = $"the Hub refused the file list ({e.Message})"; }
        }
        if (files is null)
        {
            // the cached snapshot of that revision answers: its GGUF files are the ones downloaded before
            string? commit = cache.CommitOf(revision);
            string snapshot = commit is null ? "" : cache.SnapshotFolder(commit);
            files = Directory.Exists(snapshot) ? Directory.EnumerateFiles(snapshot, "*.gguf", SearchOption.AllDirectories)
                .Select(f => Path.GetRelativePath(snapshot, f).Replace('\\', '/')).ToArray() : [];
            if (files.Length == 0)
                throw new LinearLensException($"{why} and no GGUF file of {repoId} (revision {revision}) is in the Hugging Face cache {_options.CacheDir}; {(_options.Offline ? "unset HF_HUB_OFFLINE to" : "connect to the network to")} look the tag up, or name the file: --model {repoId}/FILE.gguf");
        }
        var ggufs = Ggufs(files);
        var matches = ggufs.Where(f => EndsInTag(f, tag)).ToArray();
        return matches.Length switch
        {
            1 => matches[0],
            0 when ggufs.Length == 0 => throw new LinearLensException($"{repoId} (revision {revision}) has no GGUF file; --model {repoId}:{tag} names one of a repo's GGUF files"),
            0 => throw new LinearLensException($"no GGUF file of {repoId} (revision {revision}) ends in '{tag}'; it has {Listed(ggufs)}: give one of their tags, or --model {repoId}/FILE.gguf"),
            _ => throw new LinearLensException($"'{tag}' names {matches.Length} GGUF files of {repoId} ({Listed(matches)}); name one: --model {repoId}/FILE.gguf" +
                (matches.Any(m => SplitPattern().IsMatch(m)) ? " (split GGUF files, FILE-0000k-of-0000n.gguf, are not read: merge them with llama-gguf-split --merge)" : "")),
        };
    }

    /// <summary>The GGUF files among a repo's files, in name order.</summary>
    static string[] Ggufs(IEnumerable<string> files) =>
        files.Where(f => f.EndsWith(".gguf", StringComparison.OrdinalIgnoreCase)).Order(StringComparer.Ordinal).ToArray();

    /// <summary>File names for a message: the first 12, and how many there are in all beyond that.</summary>
    static string Listed(string[] names) => string.Join(", ", names.Take(12)) + (names.Length > 12 ? $", … ({names.Length} in all)" : "");

    /// <summary>Whether a file name, without .gguf (and a split's -0000k-of-0000n), ends in the tag after a separator (Qwen3-0.6B-Q4_K_M.gguf ends in Q4_K_M), in any case.</summary>
    static bool EndsInTag(string file, string tag)
    {
        string fileName = file.Split('/')[^1];
        string name = SplitPattern().IsMatch(fileName) ? SplitPattern().Replace(fileName, "") : Path.GetFileNameWithoutExtension(fileName);
        return name.Length > tag.Length && name.EndsWith(tag, StringComparison.OrdinalIgnoreCase) && name[^(tag.Length + 1)] is '-' or '_' or '.';
    }

    /// <summary>The files of repoId at revision, from the Hub's model API (GET api/models/ORG/NAME/revision/REV: its siblings).</summary>
    string[] ListFiles(string repoId, string revision)
    {
        var url = new Uri($"{_options.Endpoint}/api/models/{repoId}/revision/{Uri.EscapeDataString(revision)}");
        using var response = Send(HttpMethod.Get, url, rangeFrom: 0);
        int status = (int)response.StatusCode;
        if (status is < 200 or >= 300)
        {
            var refused = Failure(response, url, repoId, revision);
            throw refused.CacheMayAnswer ? refused : new LinearLensException(refused.Message);
        }
        // the list is small (a few KB); a body past 16 MB is no file list
        const int MaxList = 16 << 20;
        var json = new MemoryStream();
        using (var body = response.Content.ReadAsStream())
        {
            var chunk = new byte[81920];
            for (int n; (n = body.Read(chunk)) > 0;)
            {
                json.Write(chunk, 0, n);
                if (json.Length > MaxList) throw new LinearLensException($"{Short(url)} answered more than 16 MB of file list; name the file: --model {repoId}/FILE.gguf");
            }
        }
        try
        {
            using var doc = JsonDocument.Parse(json.GetBuffer().AsMemory(0, (int)json.Length));
            if (!doc.RootElement.TryGetProperty("siblings", out var siblings) || siblings.ValueKind != JsonValueKind.Array)
                throw new LinearLensException($"{Short(url)} answered no 'siblings' list; is HF_ENDPOINT ({_options.Endpoint}) a Hugging Face Hub?");
            return siblings.EnumerateArray()
                .Select(e => e.ValueKind == JsonValueKind.Object && e.TryGetProperty("rfilename", out var f) && f.ValueKind == JsonValueKind.String ? f.GetString() : null)
                .OfType<string>().ToArray();
        }
        catch (JsonException e)
        {
            throw new LinearLensException($"{Short(url)} answered a file list that is not JSON ({e.Message}); is HF_ENDPOINT ({_options.Endpoint}) a Hugging Face Hub?");
        }
    }

    /// <summary>
    /// ORG/NAME/FILE.gguf that is no local path: one GGUF file of a Hub repo, as `hf download ORG/NAME FILE.gguf` names
    /// it (the GGUF repos that quantizations are downloaded from hold many files and no config.json).
    /// </summary>
    public static (string Repo, string File)? HubFile(string s)
    {
        var parts = s.Split('/');
        if (parts.Length < 3 || !s.EndsWith(".gguf", StringComparison.OrdinalIgnoreCase)) return null;
        string repo = parts[0] + "/" + parts[1];
        if (!IsHubId(repo) || parts.Skip(2).Any(p => p is "" or "." or ".." || p.Contains('\\'))) return null;
        return (repo, string.Join('/', parts.Skip(2)));
    }

    /// <summary>One file of repoId at revision (a GGUF checkpoint), downloaded into the cache's snapshot unless it is there.</summary>
    public ResolvedModel FetchFile(string repoId, string file, string revision)
    {
        CheckRevision(revision);
        var cache = new HubCache(_options.CacheDir, repoId);
        string where = $"{file} of {repoId} (revision {revision})";
        ResolvedModel Cached(string? note, string notCached)
        {
            string? commit = cache.CommitOf(revision);
            string? path = commit is null ? null : Path.Combine(cache.SnapshotFolder(commit), file);
            if (path is null || !File.Exists(path)) throw new LinearLensException(notCached);
            return new ResolvedModel(path, repoId, revision, commit, note is null ? null : $"using the cached {file} of {repoId} ({commit![..12]}): {note}");
        }
        if (_options.Offline)
            return Cached(null, $"HF_HUB_OFFLINE is set and {where} is not in the Hugging Face cache {_options.CacheDir} (nor is {repoId}/{file} a local file); unset HF_HUB_OFFLINE to download it, or pass --model a local .gguf file");
        if (HubCache.IsCommitHash(revision) && File.Exists(Path.Combine(cache.SnapshotFolder(revision), file)))
            return new ResolvedModel(Path.Combine(cache.SnapshotFolder(revision), file), repoId, revision, revision);
        FileMeta meta;
        try { meta = Head(repoId, revision, file) ?? throw new LinearLensException($"{repoId} (revision {revision}) has no file {file}, and {repoId}/{file} is no local file either; check the name"); }
        catch (HubUnreachableException e)
        {
            return Cached($"cannot reach {_options.Endpoint} ({e.Message})",
                $"cannot reach {_options.Endpoint} ({e.Message}) and {where} is not in the Hugging Face cache {_options.CacheDir} (nor is {repoId}/{file} a local file); connect to the network, or set HF_ENDPOINT to a reachable Hub");
        }
        catch (HubRefusedException e)
        {
            if (!e.CacheMayAnswer) throw new LinearLensException(e.Message);
            return Cached($"the Hub refused: {e.Message}", e.Message);
        }
        try
        {
            cache.WriteRef(revision, meta.Commit);
            if (!File.Exists(Path.Combine(cache.SnapshotFolder(meta.Commit), file))) Download(cache, meta.Commit, file, meta);
        }
        catch (HubUnreachableException e)
        {
            throw new LinearLensException($"lost the connection to {_options.Endpoint} while downloading {where} ({e.Message}); run the command again to resume");
        }
        catch (HubRefusedException e) { throw new LinearLensException(e.Message); }
        return new ResolvedModel(Path.Combine(cache.SnapshotFolder(meta.Commit), file), repoId, revision, meta.Commit);
    }

    static void CheckRevision(string revision)
    {
        if (!RevisionPattern().IsMatch(revision) || revision.Contains("..") || revision.EndsWith('/'))
            throw new LinearLensException($"--revision '{HubCache.Shorten(revision)}' is not a branch, tag or commit name");
    }

    /// <summary>The snapshot folder of repoId at revision, downloaded into the cache where it is not complete there.</summary>
    public ResolvedModel Fetch(string repoId, string revision)
    {
        CheckRevision(revision);
        var cache = new HubCache(_options.CacheDir, repoId);
        string where = $"{repoId} (revision {revision})";

        if (_options.Offline)
            return FromCache(cache, revision, null, $"HF_HUB_OFFLINE is set and {where} is not in the Hugging Face cache {_options.CacheDir} (nor a local folder); unset HF_HUB_OFFLINE to download it, or pass --model a local folder");
        // A commit never changes: when its snapshot is complete, the network has nothing to add (as huggingface_hub).
        if (HubCache.IsCommitHash(revision) && HubCache.MissingFile(cache.SnapshotFolder(revision)) is null)
            return new ResolvedModel(cache.SnapshotFolder(revision), repoId, revision, revision);

        // As huggingface_hub: when the Hub cannot be asked, or refuses for a reason other than an unknown revision
        // (a token missing, the server down), a complete cached snapshot is used, with a note that says why.
        FileMeta config;
        try
        {
            if (Head(repoId, revision, "config.json") is not { } c)
            {
                // no Hugging Face checkpoint: a repo of GGUF files is read when it holds one, and named when it holds several
                var ggufs = Ggufs(ListFiles(repoId, revision));
                if (ggufs.Length == 1) return FetchFile(repoId, ggufs[0], revision);
                throw new LinearLensException(ggufs.Length == 0
                    ? $"{repoId} (revision {revision}) has no config.json and no GGUF file; it is not a model checkpoint LinearLens reads"
                    : $"{repoId} (revision {revision}) holds {ggufs.Length} GGUF files and no config.json ({Listed(ggufs)}); choose one: --model {repoId}:TAG (e.g. :Q4_K_M) or --model {repoId}/FILE.gguf");
            }
            config = c;
        }
        catch (HubUnreachableException e)
        {
            return FromCache(cache, revision, $"cannot reach {_options.Endpoint} ({e.Message})",
                $"cannot reach {_options.Endpoint} ({e.Message}) and {where} is not in the Hugging Face cache {_options.CacheDir}; connect to the network, or set HF_ENDPOINT to a reachable Hub");
        }
        catch (HubRefusedException e)
        {
            if (!e.CacheMayAnswer || cache.CommitOf(revision) is not { } cached || HubCache.MissingFile(cache.SnapshotFolder(cached)) is not null)
                throw new LinearLensException(e.Message);
            return FromCache(cache, revision, $"the Hub refused: {e.Message}", e.Message);
        }
        string commit = config.Commit;
        try
        {
            cache.WriteRef(revision, commit);
            // Every further file is asked for at the commit, so that all of them come from one version of the repo.
            Download(cache, commit, "config.json", config);
            foreach (string file in OptionalFiles) FetchIfPresent(cache, repoId, commit, file);
            if (!FetchIfPresent(cache, repoId, commit, "model.safetensors"))
            {
                if (!FetchIfPresent(cache, repoId, commit, SafetensorsWriter.IndexFileName))
                    throw new LinearLensException($"{repoId} (revision {revision}) has neither model.safetensors nor {SafetensorsWriter.IndexFileName}; LinearLens reads safetensors checkpoints");
                foreach (string shard in TensorStore.ShardNames(Path.Combine(cache.SnapshotFolder(commit), SafetensorsWriter.IndexFileName)))
                    if (!FetchIfPresent(cache, repoId, commit, shard))
                        throw NotAModel(repoId, revision, shard + $" (named by {SafetensorsWriter.IndexFileName})");
            }
        }
        catch (HubUnreachableException e)
        {
            throw new LinearLensException($"lost the connection to {_options.Endpoint} while downloading {repoId} ({e.Message}); run the command again to resume");
        }
        catch (HubRefusedException e) { throw new LinearLensException(e.Message); }
        return new ResolvedModel(cache.SnapshotFolder(commit), repoId, revision, commit);
    }

    ResolvedModel FromCache(HubCache cache, string revision, string? note, string notCached)
    {
        string? commit = cache.CommitOf(revision);
        if (commit is null) throw new LinearLensException(notCached);
        string snapshot = cache.SnapshotFolder(commit);
        string? cachedNote = note is null ? null : $"using the cached snapshot {commit[..12]} of {cache.RepoId}: {note}";
        // a GGUF repo's snapshot (no config.json) with one GGUF file in it is that file, as online
        if (!File.Exists(Path.Combine(snapshot, "config.json")) && Directory.Exists(snapshot)
            && Directory.GetFiles(snapshot, "*.gguf", SearchOption.AllDirectories) is [var gguf])
            return new ResolvedModel(gguf, cache.RepoId, revision, commit, cachedNote);
        if (HubCache.MissingFile(snapshot) is { } missing)
            throw new LinearLensException($"{notCached} (its snapshot {commit[..12]} lacks {missing})");
        return new ResolvedModel(snapshot, cache.RepoId, revision, commit, cachedNote);
    }

    static LinearLensException NotAModel(string repoId, string revision, string file) =>
        new($"{repoId} (revision {revision}) has no {file}; it is not a model checkpoint LinearLens reads");

    /// <summary>Fetches FILE at the commit unless the repo lacks it (then marks it in .no_exist and answers false).</summary>
    bool FetchIfPresent(HubCache cache, string repoId, string commit, string file)
    {
        string pointer = Path.Combine(cache.SnapshotFolder(commit), file);
        if (File.Exists(pointer)) return true;                    // the commit's file is already there
        if (cache.IsMarkedMissing(commit, file)) return false;    // and so is the knowledge that it does not exist
        var meta = Head(repoId, commit, file);
        if (meta is null) { cache.MarkMissing(commit, file); return false; }
        Download(cache, commit, file, meta);
        return true;
    }

    /// <summary>What a HEAD of resolve/REV/FILE says about a file; Location is where its bytes are.</summary>
    sealed record FileMeta(string Commit, string Etag, long Size, Uri Location);

    Uri ResolveUrl(string repoId, string revision, string file) =>
        new($"{_options.Endpoint}/{repoId}/resolve/{Uri.EscapeDataString(revision)}/{string.Join('/', file.Split('/').Select(Uri.EscapeDataString))}");

    /// <summary>HEAD of a file, following relative redirects only; null when the repo has no such file.</summary>
    FileMeta? Head(string repoId, string revision, string file)
    {
        Uri url = ResolveUrl(repoId, revision, file);
        for (int hop = 0; ; hop++)
        {
            using var response = Send(HttpMethod.Head, url, rangeFrom: 0);
            int status = (int)response.StatusCode;
            if (status is >= 300 and < 400)
            {
                var location = response.Headers.Location ?? throw new LinearLensException($"{url} answered HTTP {status} without a Location header");
                if (!location.IsAbsoluteUri || location.OriginalString.StartsWith('/'))
                {
                    // Relative: the repo was renamed; ask again at its new address.
                    if (hop >= MaxRedirects) throw new LinearLensException($"more than {MaxRedirects} redirects from {ResolveUrl(repoId, revision, file)}");
                    url = new Uri(url, location.OriginalString);
                    continue;
                }
                return Meta(response, url, location);   // absolute: the CDN holding a large file
            }
            if (status is >= 200 and < 300) return Meta(response, url, url);
            if (IsEntryNotFound(response)) return null;
            throw Failure(response, url, repoId, revision);
        }
    }

    FileMeta Meta(HttpResponseMessage r, Uri url, Uri location)
    {
        string? Header(string name) => r.Headers.TryGetValues(name, out var v) ? v.FirstOrDefault()
            : r.Content.Headers.TryGetValues(name, out var c) ? c.FirstOrDefault() : null;
        string? commit = Header("X-Repo-Commit");
        if (commit is null || !HubCache.IsCommitHash(commit))
            throw new LinearLensException($"{url} answered without a valid X-Repo-Commit header ('{HubCache.Shorten(commit ?? "")}'); is HF_ENDPOINT ({_options.Endpoint}) a Hugging Face Hub?");
        string? rawEtag = Header("X-Linked-Etag") ?? Header("ETag");
        string etag = NormalizeEtag(rawEtag ?? "");
        if (!EtagPattern().IsMatch(etag))
            throw new LinearLensException($"{url} answered without a usable ETag ('{HubCache.Shorten(rawEtag ?? "")}'); is HF_ENDPOINT ({_options.Endpoint}) a Hugging Face Hub?");
        string? sizeText = Header("X-Linked-Size") ?? Header("Content-Length");
        if (!long.TryParse(sizeText, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out long size))
            throw new LinearLensException($"{url} answered without a file size (X-Linked-Size or Content-Length: '{HubCache.Shorten(sizeText ?? "")}')");
        return new FileMeta(commit, etag, size, location);
    }

    /// <summary>huggingface_hub's etag normalisation: a weak-validator "W/" prefix and the quotes dropped.</summary>
    public static string NormalizeEtag(string etag)
    {
        string e = etag.Trim();
        if (e.StartsWith("W/", StringComparison.Ordinal)) e = e[2..];
        return e.Trim('"');
    }

    /// <summary>Downloads FILE's bytes into blobs/ETAG (unless that blob exists) and links the snapshot to it.</summary>
    void Download(HubCache cache, string commit, string file, FileMeta meta)
    {
        string blob = cache.BlobPath(meta.Etag);
        if (!File.Exists(blob))
        {
            using var held = Lock(cache.LockPath(meta.Etag), file);
            if (!File.Exists(blob)) FetchBlob(blob, file, meta);
        }
        cache.Link(commit, file, meta.Etag);
    }

    /// <summary>The blob's lock file, held exclusively (flock, the lock Python's filelock takes), waited for up to 10 minutes.</summary>
    static FileStream Lock(string path, string file)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        var deadline = DateTime.UtcNow + TimeSpan.FromMinutes(10);
        while (true)
        {
            try { return new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None); }
            catch (IOException) when (DateTime.UtcNow < deadline) { Thread.Sleep(250); }
            catch (IOException)
            {
                throw new LinearLensException($"{file}: another process has held {path} for 10 minutes; wait for its download to finish, or delete the lock if no download is running");
            }
        }
    }

    void FetchBlob(string blob, string file, FileMeta meta)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(blob)!);
        string partial = blob + ".incomplete";
        for (int attempt = 1; ; attempt++)
        {
            long have = File.Exists(partial) ? new FileInfo(partial).Length : 0;
            if (have > meta.Size) { File.Delete(partial); have = 0; }
            if (have == meta.Size && File.Exists(partial)) break;
            try
            {
                GetInto(partial, have, file, meta);
                break;
            }
            catch (Exception e) when (e is IOException or HttpRequestException or HubUnreachableException or OperationCanceledException)
            {
                long now = File.Exists(partial) ? new FileInfo(partial).Length : 0;
                if (attempt < AttemptsPerFile) continue;   // resume with Range from what arrived
                throw new LinearLensException($"download of {file} from {Short(meta.Location)} broke off at {now} of {meta.Size} bytes after {attempt} tries ({e.Message}); run the command again to resume from {partial}");
            }
        }
        long length = new FileInfo(partial).Length;
        if (length != meta.Size)
            throw new LinearLensException($"{file}: {length} bytes arrived but the Hub announced {meta.Size}; run again (the partial file {partial} is kept)");
        if (Sha256Pattern().IsMatch(meta.Etag))
        {
            string sha;
            using (var f = File.OpenRead(partial)) sha = Convert.ToHexStringLower(SHA256.HashData(f));
            if (sha != meta.Etag)
            {
                File.Delete(partial);
                throw new LinearLensException($"{file}: the downloaded bytes have sha256 {sha}, the Hub's etag is {meta.Etag}; the corrupt download was deleted, run the command again");
            }
        }
        File.Move(partial, blob, overwrite: true);
    }

    /// <summary>One GET of the file's bytes from offset `have` on, appended to the .incomplete file.</summary>
    void GetInto(string partial, long have, string file, FileMeta meta)
    {
        using var response = Send(HttpMethod.Get, meta.Location, have);
        int status = (int)response.StatusCode;
        if (status == 416) { File.Delete(partial); throw new IOException("the server refused the resume offset; starting over"); }
        if (status is < 200 or >= 300) throw Failure(response, meta.Location, null, null);
        long from = 0;
        if (status == 206)
        {
            var range = response.Content.Headers.ContentRange;
            if (range?.From is not long start || start > have)
            {
                File.Delete(partial);
                throw new IOException($"the server answered a range that does not continue the partial file ({range})");
            }
            from = start;
        }
        using var output = new FileStream(partial, FileMode.OpenOrCreate, FileAccess.Write, FileShare.None);
        output.SetLength(from);
        output.Position = from;
        using var body = response.Content.ReadAsStream();
        var buffer = new byte[1 << 20];
        long done = from;
        _progress?.Invoke(new HubProgress(file, done, meta.Size));
        while (true)
        {
            int n;
            using (var idle = new CancellationTokenSource(_options.DownloadTimeout))
            {
                try { n = body.ReadAsync(buffer, idle.Token).AsTask().GetAwaiter().GetResult(); }
                catch (OperationCanceledException) { throw new IOException($"no data for {_options.DownloadTimeout.TotalSeconds:0.#} s (HF_HUB_DOWNLOAD_TIMEOUT)"); }
            }
            if (n == 0) break;
            if (done + n > meta.Size) throw new IOException($"the server sent more than the announced {meta.Size} bytes");
            output.Write(buffer, 0, n);
            done += n;
            _progress?.Invoke(new HubProgress(file, done, meta.Size));
        }
        output.Flush(flushToDisk: true);
        if (done != meta.Size) throw new IOException($"the connection closed at {done} of {meta.Size} bytes");
    }

    /// <summary>One request. The token goes only to the endpoint's own host (never to a CDN on another host).</summary>
    HttpResponseMessage Send(HttpMethod method, Uri url, long rangeFrom)
    {
        var request = new HttpRequestMessage(method, url);
        request.Headers.AcceptEncoding.Add(new StringWithQualityHeaderValue("identity"));
        if (rangeFrom > 0) request.Headers.Range = new RangeHeaderValue(rangeFrom, null);
        var endpoint = new Uri(_options.Endpoint);
        if (_options.Token is { } token && url.Scheme == endpoint.Scheme && url.Authority == endpoint.Authority)
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        // The metadata limit (HF_HUB_ETAG_TIMEOUT) for a HEAD, the download limit for a GET's headers; a body read
        // is limited separately (GetInto). The token source is disposed once the headers are in.
        var limit = method == HttpMethod.Head ? _options.EtagTimeout : _options.DownloadTimeout;
        using var timeout = new CancellationTokenSource(limit);
        try { return _http.Send(request, HttpCompletionOption.ResponseHeadersRead, timeout.Token); }
        catch (HttpRequestException e) when (e.StatusCode is null)
        {
            throw new HubUnreachableException(e.InnerException?.Message ?? e.Message);
        }
        catch (OperationCanceledException)
        {
            throw new HubUnreachableException($"no answer within {limit.TotalSeconds:0.#} s ({(method == HttpMethod.Head ? "HF_HUB_ETAG_TIMEOUT" : "HF_HUB_DOWNLOAD_TIMEOUT")})");
        }
    }

    /// <summary>A URL without its query: a CDN's signed query is long and of no use in a message.</summary>
    static string Short(Uri url) => url.GetLeftPart(UriPartial.Path);

    static string? ErrorCode(HttpResponseMessage r) => r.Headers.TryGetValues("X-Error-Code", out var v) ? v.FirstOrDefault() : null;

    static bool IsEntryNotFound(HttpResponseMessage r) =>
        ErrorCode(r) == "EntryNotFound" || ((int)r.StatusCode == 404 && ErrorCode(r) is null);

    /// <summary>
    /// The one line a refused request becomes (the Hub tells the cases apart by X-Error-Code), and whether a cached
    /// snapshot may stand in: for anything but an unknown revision, as huggingface_hub.
    /// </summary>
    HubRefusedException Failure(HttpResponseMessage r, Uri url, string? repoId, string? revision)
    {
        string? code = ErrorCode(r);
        return new HubRefusedException(FailureMessage(r, url, repoId, revision), code != "RevisionNotFound");
    }

    string FailureMessage(HttpResponseMessage r, Uri url, string? repoId, string? revision)
    {
        int status = (int)r.StatusCode;
        string? code = ErrorCode(r);
        string what = repoId ?? Short(url);
        string? hubMessage = r.Headers.TryGetValues("X-Error-Message", out var m) ? m.FirstOrDefault() : null;
        string detail = $"HTTP {status}{(code is null ? "" : " " + code)}{(hubMessage is null ? "" : ": " + HubCache.Shorten(hubMessage))}";
        if (code == "RevisionNotFound")
            return $"revision '{revision}' not found in {what} on {_options.Endpoint} ({detail}); check --revision";
        if (code == "GatedRepo" || status == 403)
            return _options.Token is null
                ? $"{what} is gated or private and HF_TOKEN is not set ({detail}); request access on its Hub page, then set HF_TOKEN to a token of that account"
                : $"{what} is gated or private and the token in HF_TOKEN has no access to it ({detail}); request access on its Hub page or set HF_TOKEN to a token of an account that has it";
        if (status == 401)
            return _options.Token is null
                ? $"{what} is no local folder and was not found on {_options.Endpoint} or is private ({detail}); check the id, or set HF_TOKEN to a token with access"
                : $"the token in HF_TOKEN was refused for {what} ({detail}); check HF_TOKEN";
        if (code == "RepoNotFound" || status == 404)
            return $"{what} is no local folder and no model on {_options.Endpoint} ({detail}); check the path or the Hub id";
        return $"{Short(url)} answered {detail}; try again later";
    }

    /// <summary>The Hub could not be reached at all (no connection, no name resolution, no answer).</summary>
    sealed class HubUnreachableException(string message) : Exception(message);

    /// <summary>The Hub answered with a refusal; CacheMayAnswer when a cached snapshot may be used instead.</summary>
    sealed class HubRefusedException(string message, bool cacheMayAnswer) : Exception(message)
    {
        public bool CacheMayAnswer { get; } = cacheMayAnswer;
    }

    [GeneratedRegex(@"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")]
    private static partial Regex TagPattern();

    [GeneratedRegex(@"-\d{5}-of-\d{5}\.gguf$", RegexOptions.IgnoreCase)]
    private static partial Regex SplitPattern();

    [GeneratedRegex(@"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")]
    private static partial Regex HubIdPattern();

    [GeneratedRegex(@"^[A-Za-z0-9._][A-Za-z0-9._/-]*$")]
    private static partial Regex RevisionPattern();

    [GeneratedRegex(@"^[A-Za-z0-9][A-Za-z0-9._-]{0,255}$")]
    private static partial Regex EtagPattern();

    [GeneratedRegex("^[0-9a-f]{64}$")]
    private static partial Regex Sha256Pattern();
}
