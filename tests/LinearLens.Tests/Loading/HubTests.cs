using LinearLens.Numerics;
using System.Security.Cryptography;
using LinearLens.Loading;
using LinearLens.Models;
using LinearLens.Tests.Support;
using static LinearLens.Tests.Support.CliRunner;

namespace LinearLens.Tests.Loading;

/// <summary>
/// Models by Hub id against a real HTTP server on loopback (<see cref="HubTestServer"/>): the cache layout written is
/// huggingface_hub's, file by file; gated repos, the LFS redirect, a dropped connection resumed with Range, sharded
/// checkpoints, unknown repos/files/revisions; then offline and server-less runs from that cache, and a cache laid out
/// by hand as huggingface_hub does.
/// </summary>
public sealed class HubTests : IDisposable
{
    readonly string root = Directory.CreateTempSubdirectory("ll-hub").FullName;
    readonly HubTestServer server = new();

    string Cache => Path.Combine(root, "cache");
    HubOptions Online(string? token = null) => new(server.Endpoint, Cache, token, Offline: false);
    HubOptions OfflineOptions => new(server.Endpoint, Cache, null, Offline: true);

    public void Dispose()
    {
        server.Dispose();
        Directory.Delete(root, true);
    }

    string Checkpoint(string name, int shards = 1)
    {
        string folder = Path.Combine(root, name);
        RandomCheckpoint.Write(folder, RandomCheckpointSpec.Preset("tiny-llama") with { Shards = shards }, seed: 11, keepValues: false);
        File.WriteAllText(Path.Combine(folder, "generation_config.json"), """{"bos_token_id": 1, "eos_token_id": 2}""");
        File.WriteAllText(Path.Combine(folder, "README.md"), "not a file a model needs");
        return folder;
    }

    /// <summary>A folder of tiny-llama GGUF files (the same weights stored in each type), as a repo of quantizations holds them.</summary>
    string GgufRepo(params (string File, DType Type)[] files)
    {
        string origin = Path.Combine(root, "gguf-repo");
        Directory.CreateDirectory(origin);
        foreach (var (file, type) in files) GgufExport.FromRandom(RandomCheckpointSpec.Preset("tiny-llama"), 11, Path.Combine(origin, file), type, "tiny");
        return origin;
    }

    static CliRunner.Result Generate(HubOptions hub, string model, params string[] extra) =>
        CliRunner.RunWith(hub, ["generate", "--model", model, "--token-ids", "1,5,9", "--max-new-tokens", "4", "--json", .. extra]);

    static string RelativeLink(string path) => new FileInfo(path).LinkTarget ?? throw new Xunit.Sdk.XunitException($"{path} is not a symlink");

    [Fact]
    public void EnvironmentFollowsHuggingFaceHubRules()
    {
        string home = Path.Combine(root, "home");
        HubOptions From(params (string, string)[] vars)
        {
            var d = vars.ToDictionary(v => v.Item1, v => v.Item2);
            return HubOptions.FromEnvironment(k => d.GetValueOrDefault(k), home);
        }
        var none = From();
        Assert.Equal(Path.Combine(home, ".cache", "huggingface", "hub"), none.CacheDir);
        Assert.Equal("https://huggingface.co", none.Endpoint);
        Assert.Null(none.Token);
        Assert.False(none.Offline);

        Assert.Equal(Path.Combine("/x", "huggingface", "hub"), From(("XDG_CACHE_HOME", "/x")).CacheDir);
        Assert.Equal(Path.Combine("/h", "hub"), From(("XDG_CACHE_HOME", "/x"), ("HF_HOME", "/h")).CacheDir);
        Assert.Equal("/c", From(("HF_HOME", "/h"), ("HF_HUB_CACHE", "/c")).CacheDir);
        Assert.Equal(Path.Combine(home, "hf", "hub"), From(("HF_HOME", "~/hf")).CacheDir);
        Assert.Equal("http://127.0.0.1:9", From(("HF_ENDPOINT", "http://127.0.0.1:9/")).Endpoint);
        foreach (var on in new[] { "1", "ON", "yes", "True" }) Assert.True(From(("HF_HUB_OFFLINE", on)).Offline);
        foreach (var off in new[] { "0", "", "false", "no" }) Assert.False(From(("HF_HUB_OFFLINE", off)).Offline);

        Assert.Equal("hf_env", From(("HF_TOKEN", "hf_env"), ("HUGGING_FACE_HUB_TOKEN", "hf_old")).Token);
        Assert.Equal("hf_old", From(("HUGGING_FACE_HUB_TOKEN", "hf_old")).Token);
        string hfHome = Path.Combine(root, "hfhome");
        Directory.CreateDirectory(hfHome);
        File.WriteAllText(Path.Combine(hfHome, "token"), "hf_saved\n");
        Assert.Equal("hf_saved", From(("HF_HOME", hfHome)).Token);
        Assert.Equal("hf_env", From(("HF_HOME", hfHome), ("HF_TOKEN", "hf_env")).Token);

        Assert.Equal(TimeSpan.FromSeconds(10), none.EtagTimeout);
        Assert.Equal(TimeSpan.FromSeconds(10), none.DownloadTimeout);
        Assert.Equal(TimeSpan.FromSeconds(2.5), From(("HF_HUB_ETAG_TIMEOUT", "2.5")).EtagTimeout);
        Assert.Equal(TimeSpan.FromSeconds(60), From(("HF_HUB_DOWNLOAD_TIMEOUT", "60")).DownloadTimeout);
        var bad = Assert.Throws<LinearLensException>(() => From(("HF_HUB_DOWNLOAD_TIMEOUT", "soon")));
        Assert.Contains("HF_HUB_DOWNLOAD_TIMEOUT='soon' is not a number of seconds", bad.Message);
    }

    [Fact]
    public void AGgufFileOfAHubRepoIsDownloadedAloneAndRunsOffline()
    {
        // a repo of GGUF quantizations (no config.json): --model ORG/NAME/FILE.gguf fetches that one file, as
        // `hf download ORG/NAME FILE.gguf` does, into the same cache layout
        string origin = GgufRepo(("tiny-Q8_0.gguf", DType.Q8_0), ("tiny-Q4_0.gguf", DType.Q4_0));
        File.WriteAllText(Path.Combine(origin, "README.md"), "GGUF files only");
        string commit = server.AddRepo("org/tiny-GGUF", origin);
        var expected = Generate(Online(), Path.Combine(origin, "tiny-Q8_0.gguf"));
        Assert.True(expected.ExitCode == 0, expected.Stderr);

        var first = Generate(Online(), "org/tiny-GGUF/tiny-Q8_0.gguf");
        Assert.True(first.ExitCode == 0, first.Stderr);
        Assert.Equal(expected.Stdout, first.Stdout);
        string repo = Path.Combine(Cache, "models--org--tiny-GGUF"), snapshot = Path.Combine(repo, "snapshots", commit);
        Assert.Equal(commit, File.ReadAllText(Path.Combine(repo, "refs", "main")));
        Assert.Equal(["tiny-Q8_0.gguf"], Directory.GetFileSystemEntries(snapshot).Select(Path.GetFileName));   // the named file only
        string etag = HubTestServer.Sha256(File.ReadAllBytes(Path.Combine(origin, "tiny-Q8_0.gguf")));
        Assert.Equal(Path.Combine("..", "..", "blobs", etag), RelativeLink(Path.Combine(snapshot, "tiny-Q8_0.gguf")));

        // from the cache, with the Hub unreachable too
        Assert.Equal(expected.Stdout, Generate(OfflineOptions, "org/tiny-GGUF/tiny-Q8_0.gguf").Stdout);
        server.Dispose();
        var cached = Generate(Online(), "org/tiny-GGUF/tiny-Q8_0.gguf");
        Assert.True(cached.ExitCode == 0, cached.Stderr);
        Assert.Equal(expected.Stdout, cached.Stdout);
        Assert.Contains("using the cached tiny-Q8_0.gguf of org/tiny-GGUF", cached.Stderr);

        // one line each: a file the cache lacks offline, and (with the Hub up) a file the repo lacks, the repo without a file name
        AssertOneLineError(Generate(OfflineOptions, "org/tiny-GGUF/tiny-Q4_0.gguf"), "HF_HUB_OFFLINE is set and tiny-Q4_0.gguf of org/tiny-GGUF");
        Assert.Equal((null as (string, string)?), HubClient.HubFile("org/tiny-GGUF/../x.gguf"));
        Assert.Equal(("org/tiny-GGUF", "sub/x.gguf"), HubClient.HubFile("org/tiny-GGUF/sub/x.gguf"));
    }

    [Fact]
    public void AQuantizationTagPicksTheRepoFileEndingInIt()
    {
        // ORG/NAME:TAG as llama.cpp's -hf takes it: the one GGUF file whose name ends in the tag, any case
        string origin = GgufRepo(("Tiny-Q8_0.gguf", DType.Q8_0), ("Tiny-Q4_0.gguf", DType.Q4_0));
        File.WriteAllBytes(Path.Combine(origin, "Tiny-IQ4_0.gguf"), File.ReadAllBytes(Path.Combine(origin, "Tiny-Q4_0.gguf")));
        string commit = server.AddRepo("org/tiny-GGUF", origin);
        var expected = Generate(Online(), Path.Combine(origin, "Tiny-Q8_0.gguf"));
        var tagged = Generate(Online(), "org/tiny-GGUF:q8_0");
        Assert.True(tagged.ExitCode == 0, tagged.Stderr);
        Assert.Equal(expected.Stdout, tagged.Stdout);
        Assert.Equal(["Tiny-Q8_0.gguf"], Directory.GetFileSystemEntries(Path.Combine(Cache, "models--org--tiny-GGUF", "snapshots", commit)).Select(Path.GetFileName));
        // Q4_0 is not IQ4_0's tag (a separator must come before it)
        Assert.Equal(0, Generate(Online(), "org/tiny-GGUF:Q4_0").ExitCode);
        AssertOneLineError(Generate(Online(), "org/tiny-GGUF:Q6_K"), "no GGUF file of org/tiny-GGUF", "ends in 'Q6_K'", "Tiny-IQ4_0.gguf, Tiny-Q4_0.gguf, Tiny-Q8_0.gguf");
        // offline, the cached snapshot's files answer
        Assert.Equal(expected.Stdout, Generate(OfflineOptions, "org/tiny-GGUF:Q8_0").Stdout);
        AssertOneLineError(Generate(OfflineOptions, "org/tiny-GGUF:IQ4_0"), "ends in 'IQ4_0'");
        Assert.Equal(("org/x", "Q4_K_M"), HubClient.HubTag("org/x:Q4_K_M"));
        Assert.Null(HubClient.HubTag("org/x:"));
        Assert.Null(HubClient.HubTag("x:Q4_K_M"));
    }

    [Fact]
    public void ATagNamingTheFilesOfASplitGgufSaysToMergeThem()
    {
        string origin = Path.Combine(root, "split-repo");
        Directory.CreateDirectory(origin);
        foreach (string part in new[] { "Big-Q4_K_M-00001-of-00002.gguf", "Big-Q4_K_M-00002-of-00002.gguf" }) File.WriteAllBytes(Path.Combine(origin, part), [1, 2, 3]);
        server.AddRepo("org/big-GGUF", origin);
        AssertOneLineError(Generate(Online(), "org/big-GGUF:Q4_K_M"), "'Q4_K_M' names 2 GGUF files", "llama-gguf-split --merge");
    }

    [Fact]
    public void AGgufRepoWithOneFileIsThatFileAndOtherwiseNamesItsFiles()
    {
        string origin = GgufRepo(("tiny-Q8_0.gguf", DType.Q8_0));
        server.AddRepo("org/tiny-GGUF", origin);
        // one GGUF file and no config.json: that file is the model; several are named
        var single = Generate(Online(), "org/tiny-GGUF");
        Assert.True(single.ExitCode == 0, single.Stderr);
        Assert.Equal(Generate(Online(), Path.Combine(origin, "tiny-Q8_0.gguf")).Stdout, single.Stdout);
        Assert.Equal(single.Stdout, Generate(OfflineOptions, "org/tiny-GGUF").Stdout);   // and offline, from the cache
        File.Copy(Path.Combine(origin, "tiny-Q8_0.gguf"), Path.Combine(origin, "tiny-F16.gguf"));
        server.AddRepo("org/two-GGUF", origin);
        AssertOneLineError(Generate(Online(), "org/two-GGUF"), "holds 2 GGUF files and no config.json (tiny-F16.gguf, tiny-Q8_0.gguf)", "--model org/two-GGUF:TAG");
        AssertOneLineError(Generate(Online(), "org/two-GGUF/tiny-Q4_K_M.gguf"), "has no file tiny-Q4_K_M.gguf");
        Assert.False(Directory.Exists(Path.Combine(Cache, "models--org--two-GGUF", "snapshots")));
    }

    [Fact]
    public void DownloadWritesTheHuggingFaceLayoutAndRunsOfflineWithTheServerStopped()
    {
        string origin = Checkpoint("origin");
        string commit = server.AddRepo("org/tiny", origin);
        var expected = Generate(Online(), origin);
        Assert.Equal(0, expected.ExitCode);

        var first = Generate(Online(), "org/tiny");
        Assert.True(first.ExitCode == 0, first.Stderr);
        Assert.Equal(expected.Stdout, first.Stdout);

        // The layout, file by file.
        string repo = Path.Combine(Cache, "models--org--tiny");
        Assert.Equal(commit, File.ReadAllText(Path.Combine(repo, "refs", "main")));
        Assert.Equal(["main"], Directory.GetFiles(Path.Combine(repo, "refs")).Select(Path.GetFileName));
        var wanted = new Dictionary<string, string>
        {
            ["config.json"] = HubTestServer.GitSha1(File.ReadAllBytes(Path.Combine(origin, "config.json"))),
            ["generation_config.json"] = HubTestServer.GitSha1(File.ReadAllBytes(Path.Combine(origin, "generation_config.json"))),
            ["model.safetensors"] = HubTestServer.Sha256(File.ReadAllBytes(Path.Combine(origin, "model.safetensors"))),
        };
        Assert.Equal(wanted.Values.Order(), Directory.GetFiles(Path.Combine(repo, "blobs")).Select(Path.GetFileName).Order());
        string snapshot = Path.Combine(repo, "snapshots", commit);
        Assert.Equal(wanted.Keys.Order(), Directory.GetFileSystemEntries(snapshot).Select(Path.GetFileName).Order());
        foreach (var (file, etag) in wanted)
        {
            Assert.Equal(Path.Combine("..", "..", "blobs", etag), RelativeLink(Path.Combine(snapshot, file)));
            Assert.Equal(File.ReadAllBytes(Path.Combine(origin, file)), File.ReadAllBytes(Path.Combine(snapshot, file)));
        }
        Assert.Equal([commit], Directory.GetDirectories(Path.Combine(repo, "snapshots")).Select(Path.GetFileName));
        Assert.Equal([".no_exist", "blobs", "refs", "snapshots"], Directory.GetFileSystemEntries(repo).Select(Path.GetFileName).Order(StringComparer.Ordinal));
        Assert.Equal(["special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"],
            Directory.GetFiles(Path.Combine(repo, ".no_exist", commit)).Select(Path.GetFileName).Order());
        Assert.Empty(Directory.GetFiles(Cache, "*.incomplete", SearchOption.AllDirectories));
        Assert.True(File.Exists(Path.Combine(Cache, ".locks", "models--org--tiny", wanted["model.safetensors"] + ".lock")));

        // The protocol: HEADs at main then at the commit, the large file's bytes fetched from its redirect target.
        var log = server.Log.ToArray();
        Assert.Equal(new HubTestServer.Request("HEAD", "/org/tiny/resolve/main/config.json", null, null), log[0]);
        Assert.Contains(log, r => r is { Method: "GET", Path: var p } && p == $"/cdn/{wanted["model.safetensors"]}");
        Assert.DoesNotContain(log, r => r.Method == "GET" && r.Path.EndsWith("model.safetensors"));
        Assert.DoesNotContain(log, r => r.Path.EndsWith("README.md"));
        Assert.All(log.Skip(1), r => Assert.True(r.Path.StartsWith("/cdn/") || r.Path.StartsWith($"/org/tiny/resolve/{commit}/")
            || r is { Method: "GET", Path: "/org/tiny/resolve/main/config.json" }, r.Path));

        // A second online run finds every file of the commit in place: one HEAD, no download.
        int before = server.Log.Count;
        Assert.Equal(expected.Stdout, Generate(Online(), "org/tiny").Stdout);
        Assert.Equal([new HubTestServer.Request("HEAD", "/org/tiny/resolve/main/config.json", null, null)], server.Log.Skip(before));

        // Offline, and with no server at all: the same output, no request.
        server.Dispose();
        int after = server.Log.Count;
        var offline = Generate(OfflineOptions, "org/tiny");
        Assert.True(offline.ExitCode == 0, offline.Stderr);
        Assert.Equal(expected.Stdout, offline.Stdout);
        Assert.Equal("", offline.Stderr);
        var byCommit = Generate(OfflineOptions, "org/tiny", "--revision", commit);
        Assert.Equal(expected.Stdout, byCommit.Stdout);
        Assert.Equal(after, server.Log.Count);

        // Online but unreachable: the cached snapshot, with a note saying so.
        var unreachable = Generate(Online(), "org/tiny");
        Assert.Equal(0, unreachable.ExitCode);
        Assert.Equal(expected.Stdout, unreachable.Stdout);
        Assert.Equal($"note: using the cached snapshot {commit[..12]} of org/tiny: cannot reach {server.Endpoint}",
            unreachable.Stderr[..unreachable.Stderr.IndexOf(" (", StringComparison.Ordinal)]);
    }

    [Fact]
    public void ShardedCheckpointDownloadsEveryShard()
    {
        string origin = Checkpoint("sharded", shards: 3);
        File.WriteAllBytes(Path.Combine(origin, "special_tokens_map.json"), []);   // an empty file is a blob too
        string commit = server.AddRepo("org/sharded", origin);
        var expected = Generate(Online(), origin);
        var r = Generate(Online(), "org/sharded");
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Equal(expected.Stdout, r.Stdout);

        string repo = Path.Combine(Cache, "models--org--sharded"), snapshot = Path.Combine(repo, "snapshots", commit);
        var shards = Directory.GetFiles(origin, "model-*.safetensors").Select(Path.GetFileName).Order().ToArray();
        Assert.Equal(3, shards.Length);
        Assert.Equal(shards, TensorStore.ShardNames(Path.Combine(snapshot, SafetensorsWriter.IndexFileName)).Order());
        foreach (var shard in shards)
        {
            string sha = HubTestServer.Sha256(File.ReadAllBytes(Path.Combine(origin, shard!)));
            Assert.Equal(Path.Combine("..", "..", "blobs", sha), RelativeLink(Path.Combine(snapshot, shard!)));
        }
        Assert.Equal(Path.Combine("..", "..", "blobs", HubTestServer.GitSha1(File.ReadAllBytes(Path.Combine(origin, SafetensorsWriter.IndexFileName)))),
            RelativeLink(Path.Combine(snapshot, SafetensorsWriter.IndexFileName)));
        Assert.True(File.Exists(Path.Combine(repo, ".no_exist", commit, "model.safetensors")));
        Assert.Equal(Path.Combine("..", "..", "blobs", "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"), RelativeLink(Path.Combine(snapshot, "special_tokens_map.json")));
        Assert.Equal(0, new FileInfo(Path.Combine(repo, "blobs", "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391")).Length);

        server.Dispose();
        Assert.Equal(expected.Stdout, Generate(OfflineOptions, "org/sharded").Stdout);
    }

    /// <summary>The real stories260K with its tokenizer: --text through a Hub id gives what the folder gives.</summary>
    [SharedFact("models", "stories260K", "hf")]
    public void RealModelWithTokenizerRunsByHubId()
    {
        string commit = server.AddRepo("karpathy/stories260K", SharedData.Stories260K);
        string[] args = ["--text", "Lily went to the park", "--max-new-tokens", "8", "--json"];
        var expected = CliRunner.RunWith(Online(), ["generate", "--model", SharedData.Stories260K, .. args]);
        Assert.Equal(0, expected.ExitCode);
        var r = CliRunner.RunWith(Online(), ["generate", "--model", "karpathy/stories260K", .. args]);
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Equal(expected.Stdout, r.Stdout);
        string snapshot = Path.Combine(Cache, "models--karpathy--stories260K", "snapshots", commit);
        Assert.Equal(Directory.GetFiles(SharedData.Stories260K).Select(Path.GetFileName).Order(), Directory.GetFileSystemEntries(snapshot).Select(Path.GetFileName).Order());
    }

    [Fact]
    public void GatedRepoNeedsTheRightToken()
    {
        string origin = Checkpoint("gated");
        server.AddRepo("org/gated", origin, token: "hf_right");
        AssertOneLineError(Generate(Online(), "org/gated"), "org/gated is gated or private", "HF_TOKEN is not set", "HTTP 401 GatedRepo");
        AssertOneLineError(Generate(Online("hf_wrong"), "org/gated"), "HF_TOKEN has no access", "HTTP 403 GatedRepo");
        Assert.False(Directory.Exists(Path.Combine(Cache, "models--org--gated", "snapshots")));

        var ok = Generate(Online("hf_right"), "org/gated");
        Assert.True(ok.ExitCode == 0, ok.Stderr);
        Assert.Equal(Generate(Online(), origin).Stdout, ok.Stdout);
        Assert.Contains(server.Log, r => r.Authorization == "Bearer hf_right");
    }

    /// <summary>As huggingface_hub: a refusal other than an unknown revision falls back to a complete cached snapshot.</summary>
    [Fact]
    public void RefusalsFallBackToTheCachedSnapshot()
    {
        string origin = Checkpoint("gated");
        string commit = server.AddRepo("org/gated", origin, token: "hf_right");
        var expected = Generate(Online("hf_right"), "org/gated");
        Assert.True(expected.ExitCode == 0, expected.Stderr);

        var noToken = Generate(Online(), "org/gated");
        Assert.Equal(expected.Stdout, noToken.Stdout);
        Assert.StartsWith($"note: using the cached snapshot {commit[..12]} of org/gated: the Hub refused: org/gated is gated or private and HF_TOKEN is not set", noToken.Stderr);

        server.ForceStatus = 503;
        var down = Generate(Online("hf_right"), "org/gated");
        Assert.Equal(expected.Stdout, down.Stdout);
        Assert.Contains("answered HTTP 503", down.Stderr);
        server.AddRepo("org/other", origin);
        AssertOneLineError(Generate(Online(), "org/other"), "/org/other/resolve/main/config.json answered HTTP 503; try again later");
    }

    /// <summary>A Hub that stops answering: the metadata and download limits end the wait (no hang), the cache answers.</summary>
    [Fact]
    public void StalledHubTimesOut()
    {
        string origin = Checkpoint("stall");
        server.AddRepo("org/stall", origin);
        // limits short enough for a quick test, long enough that a loaded CI machine still answers the requests that do not stall
        var fast = Online() with { EtagTimeout = TimeSpan.FromSeconds(10), DownloadTimeout = TimeSpan.FromSeconds(1) };

        // A body that stops: each try waits the download limit, then resumes; the run gives up after three.
        server.StallLfs = true;
        AssertOneLineError(Generate(fast, "org/stall"), "broke off at 3000 of", "after 3 tries (no data for 1 s (HF_HUB_DOWNLOAD_TIMEOUT))");
        server.StallLfs = false;
        Assert.Equal(0, Generate(fast, "org/stall").ExitCode);

        // Metadata that never comes: the cached snapshot answers; without one, the error says why.
        server.StallResolve = true;
        var stalled = fast with { EtagTimeout = TimeSpan.FromSeconds(1) };
        var cached = Generate(stalled, "org/stall");
        Assert.Equal(0, cached.ExitCode);
        Assert.Contains("no answer within 1 s (HF_HUB_ETAG_TIMEOUT)", cached.Stderr);
        AssertOneLineError(Generate(stalled, "org/elsewhere"), "cannot reach", "no answer within 1 s (HF_HUB_ETAG_TIMEOUT)", "not in the Hugging Face cache");
    }

    [Fact]
    public void DroppedConnectionResumesWithRangeAndTheBlobIsRight()
    {
        string origin = Checkpoint("flaky");
        string commit = server.AddRepo("org/flaky", origin);
        byte[] weights = File.ReadAllBytes(Path.Combine(origin, "model.safetensors"));
        string sha = HubTestServer.Sha256(weights);
        string blob = Path.Combine(Cache, "models--org--flaky", "blobs", sha);

        // Every connection breaks after 1000 bytes: the run retries with Range, gives up, and keeps what arrived.
        server.DropLfsAfterBytes = 1000;
        AssertOneLineError(Generate(Online(), "org/flaky"), "download of model.safetensors", "broke off at 3000 of", "run the command again to resume");
        Assert.Equal(3000, new FileInfo(blob + ".incomplete").Length);
        Assert.False(File.Exists(blob));
        var gets = server.Log.Where(r => r.Method == "GET" && r.Path == $"/cdn/{sha}").Select(r => r.Range).ToArray();
        Assert.Equal([null, "bytes=1000-", "bytes=2000-"], gets);

        // The next run asks for the rest only.
        server.DropLfsAfterBytes = 0;
        int before = server.Log.Count;
        var r = Generate(Online(), "org/flaky");
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Equal(["bytes=3000-"], server.Log.Skip(before).Where(q => q.Path == $"/cdn/{sha}").Select(q => q.Range));
        Assert.Equal(sha, Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(blob))));
        Assert.False(File.Exists(blob + ".incomplete"));
        Assert.Equal(Generate(Online(), origin).Stdout, r.Stdout);
        Assert.Equal(Path.Combine("..", "..", "blobs", sha), RelativeLink(Path.Combine(Cache, "models--org--flaky", "snapshots", commit, "model.safetensors")));
    }

    /// <summary>The blob lock is an flock on .locks/models--ORG--NAME/ETAG.lock, the one Python's filelock takes.</summary>
    [Fact]
    public void ADownloadWaitsForTheBlobLockAnotherDownloaderHolds()
    {
        string origin = Checkpoint("locked");
        string commit = server.AddRepo("org/locked", origin);
        string sha = HubTestServer.Sha256(File.ReadAllBytes(Path.Combine(origin, "model.safetensors")));
        string lockPath = new HubCache(Cache, "org/locked").LockPath(sha);
        Directory.CreateDirectory(Path.GetDirectoryName(lockPath)!);
        var held = new FileStream(lockPath, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
        var run = Task.Run(() => HubClient.Resolve("org/locked", null, Online()));
        Thread.Sleep(750);
        Assert.False(run.IsCompleted);
        Assert.DoesNotContain(server.Log, r => r.Path == $"/cdn/{sha}");
        held.Dispose();
        Assert.True(run.Wait(TimeSpan.FromSeconds(30)));
        Assert.Equal(commit, run.Result.Commit);
        Assert.Contains(server.Log, r => r.Path == $"/cdn/{sha}");
    }

    [Fact]
    public void CorruptDownloadIsRejectedByItsSha256()
    {
        server.AddRepo("org/corrupt", Checkpoint("corrupt"));
        server.CorruptLfs = true;
        AssertOneLineError(Generate(Online(), "org/corrupt"), "model.safetensors: the downloaded bytes have sha256", "deleted");
        Assert.Empty(Directory.GetFiles(Path.Combine(Cache, "models--org--corrupt", "blobs"), "*.incomplete"));
        server.CorruptLfs = false;
        Assert.Equal(0, Generate(Online(), "org/corrupt").ExitCode);
    }

    [Fact]
    public void UnknownRepoRevisionAndFilesAreOneLine()
    {
        AssertOneLineError(Generate(Online(), "org/nothing"), "org/nothing is no local folder and was not found on", "HF_TOKEN");
        AssertOneLineError(Generate(Online("hf_any"), "org/nothing"), "org/nothing is no local folder and no model on", "HTTP 404 RepoNotFound");

        server.AddRepo("org/tiny", Checkpoint("origin"));
        AssertOneLineError(Generate(Online(), "org/tiny", "--revision", "v9"), "revision 'v9' not found in org/tiny", "RevisionNotFound");

        string noWeights = Path.Combine(root, "noweights");
        Directory.CreateDirectory(noWeights);
        File.Copy(Path.Combine(root, "origin", "config.json"), Path.Combine(noWeights, "config.json"));
        server.AddRepo("org/noweights", noWeights);
        AssertOneLineError(Generate(Online(), "org/noweights"), "has neither model.safetensors nor model.safetensors.index.json");

        string noConfig = Path.Combine(root, "noconfig");
        Directory.CreateDirectory(noConfig);
        File.WriteAllText(Path.Combine(noConfig, "README.md"), "hi");
        server.AddRepo("org/noconfig", noConfig);
        AssertOneLineError(Generate(Online(), "org/noconfig"), "org/noconfig (revision main) has no config.json");

        // A shard the index names but the repo lacks.
        string broken = Checkpoint("broken", shards: 2);
        File.Delete(Directory.GetFiles(broken, "model-*.safetensors").Order().Last());
        server.AddRepo("org/broken", broken);
        AssertOneLineError(Generate(Online(), "org/broken"), "has no model-00002-of-00002.safetensors (named by model.safetensors.index.json)");
    }

    [Fact]
    public void NotInTheCacheWhileOfflineOrUnreachable()
    {
        AssertOneLineError(Generate(OfflineOptions, "org/tiny"), "HF_HUB_OFFLINE is set and org/tiny (revision main) is not in the Hugging Face cache");
        Assert.Empty(server.Log);
        server.Dispose();
        AssertOneLineError(Generate(Online(), "org/tiny"), $"cannot reach {server.Endpoint}", "not in the Hugging Face cache");
    }

    [Fact]
    public void RenamedRepoFollowsTheRelativeRedirect()
    {
        string origin = Checkpoint("origin");
        string commit = server.AddRepo("org/new-name", origin);
        server.Rename("org/old-name", "org/new-name");
        var r = Generate(Online(), "org/old-name");
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Equal(Generate(Online(), origin).Stdout, r.Stdout);
        Assert.Equal(commit, File.ReadAllText(Path.Combine(Cache, "models--org--old-name", "refs", "main")));
        Assert.Contains(server.Log, q => q.Path == "/org/new-name/resolve/main/config.json");
    }

    /// <summary>A cache made the way huggingface_hub makes it: blobs by etag, relative symlinks, refs for a branch and a tag.</summary>
    [Fact]
    public void HandMadeCacheIsReadAsIs()
    {
        string origin = Checkpoint("origin");
        string commit = new string('a', 40), other = new string('b', 40);
        string repo = Path.Combine(Cache, "models--Org--Hand.Made-1");
        Directory.CreateDirectory(Path.Combine(repo, "blobs"));
        Directory.CreateDirectory(Path.Combine(repo, "refs"));
        Directory.CreateDirectory(Path.Combine(repo, "snapshots", commit));
        Directory.CreateDirectory(Path.Combine(repo, "snapshots", other));
        foreach (var file in new[] { "config.json", "model.safetensors" })
        {
            byte[] bytes = File.ReadAllBytes(Path.Combine(origin, file));
            string etag = file == "config.json" ? HubTestServer.GitSha1(bytes) : HubTestServer.Sha256(bytes);
            File.WriteAllBytes(Path.Combine(repo, "blobs", etag), bytes);
            File.CreateSymbolicLink(Path.Combine(repo, "snapshots", commit, file), $"../../blobs/{etag}");
        }
        File.WriteAllText(Path.Combine(repo, "refs", "main"), commit);
        File.WriteAllText(Path.Combine(repo, "refs", "v1.0"), commit);
        File.WriteAllText(Path.Combine(repo, "refs", "broken"), "not a commit");

        var expected = Generate(OfflineOptions, origin).Stdout;
        Assert.Equal(expected, Generate(OfflineOptions, "Org/Hand.Made-1").Stdout);
        Assert.Equal(expected, Generate(OfflineOptions, "Org/Hand.Made-1", "--revision", "v1.0").Stdout);
        Assert.Equal(expected, Generate(OfflineOptions, "Org/Hand.Made-1", "--revision", commit).Stdout);

        var resolved = HubClient.Resolve("Org/Hand.Made-1", null, OfflineOptions);
        Assert.Equal(new ResolvedModel(Path.Combine(repo, "snapshots", commit), "Org/Hand.Made-1", "main", commit), resolved);

        AssertOneLineError(Generate(OfflineOptions, "Org/Hand.Made-1", "--revision", other), "is not in the Hugging Face cache", "lacks config.json");
        AssertOneLineError(Generate(OfflineOptions, "Org/Hand.Made-1", "--revision", "broken"), "refs", "should hold a 40-hex commit hash");
        AssertOneLineError(Generate(OfflineOptions, "Org/Hand.Made-1", "--revision", "../../etc"), "is not a branch, tag or commit name");
        Assert.Empty(server.Log);
    }

    [Fact]
    public void ExistingPathsGoStraightThrough()
    {
        string origin = Checkpoint("origin");
        Assert.Equal(new ResolvedModel(origin), HubClient.Resolve(origin, null, OfflineOptions));
        // A folder whose relative path has the ORG/NAME form is still the folder.
        string top = "ll-hub-test-" + Guid.NewGuid().ToString("N")[..8];
        try
        {
            Directory.CreateDirectory(Path.Combine(top, "inner"));
            Assert.True(HubClient.IsHubId(top + "/inner"));
            Assert.Equal(new ResolvedModel(top + "/inner"), HubClient.Resolve(top + "/inner", null, OfflineOptions));
        }
        finally { Directory.Delete(top, true); }
        Assert.Equal(new ResolvedModel("no/such/folder"), HubClient.Resolve("no/such/folder", null, OfflineOptions));
        AssertOneLineError(Generate(Online(), origin, "--revision", "main"), "--revision applies to a Hub id", "drop --revision");
        Assert.True(HubClient.IsHubId("Qwen/Qwen3-0.6B"));
        Assert.False(HubClient.IsHubId("a/b/c"));
        Assert.False(HubClient.IsHubId("/abs/path"));
        Assert.False(HubClient.IsHubId("org/-name"));
        Assert.False(HubClient.IsHubId("org/na--me"));
        Assert.False(HubClient.IsHubId("models/missing.gguf"));
        Assert.True(HubClient.IsHubId("Qwen/Qwen2.5-0.5B-Instruct"));
        Assert.Empty(server.Log);
    }

    [Fact]
    public void EtagNormalisation()
    {
        Assert.Equal("abc", HubClient.NormalizeEtag("\"abc\""));
        Assert.Equal("abc", HubClient.NormalizeEtag("W/\"abc\""));
        Assert.Equal("abc", HubClient.NormalizeEtag("abc"));
    }
}
