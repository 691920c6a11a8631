using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;

namespace LinearLens.Tests.Loading;

/// <summary>
/// A small Hugging Face Hub on 127.0.0.1 (random free port) for the tests, speaking huggingface.co's file protocol:
/// HEAD/GET ORG/NAME/resolve/REV/FILE answers X-Repo-Commit and, for a small (git) file, ETag = its git blob sha1
/// and the bytes; for a large (LFS, *.safetensors) file a 302 to an absolute URL on this server (/cdn/SHA256) with
/// X-Linked-Etag = its sha256 and X-Linked-Size, and an ETag of the pointer file that must lose. Refusals carry the
/// Hub's X-Error-Code (RepoNotFound, RevisionNotFound, EntryNotFound, GatedRepo). A renamed repo answers a relative
/// 307 to its new name. /cdn honours Range. One request per connection; every request is logged. The server stops
/// when disposed, after MaxRequests, or after Lifetime, whichever comes first.
/// </summary>
public sealed class HubTestServer : IDisposable
{
    public sealed class Repo
    {
        public required string Commit { get; init; }
        public required Dictionary<string, byte[]> Files { get; init; }
        /// <summary>When set, the repo is gated: no token → 401 GatedRepo, another token → 403 GatedRepo.</summary>
        public string? Token { get; init; }
    }

    public sealed record Request(string Method, string Path, string? Range, string? Authorization);

    const int MaxRequests = 2000;
    static readonly TimeSpan Lifetime = TimeSpan.FromMinutes(3);

    readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    readonly CancellationTokenSource _stop = new(Lifetime);
    readonly Task _loop;
    readonly ConcurrentDictionary<string, Repo> _repos = new();
    readonly ConcurrentDictionary<string, string> _renamed = new();
    readonly ConcurrentDictionary<string, byte[]> _lfs = new();
    int _requests;

    public ConcurrentQueue<Request> Log { get; } = new();

    /// <summary>When set, every /cdn body is cut off after this many bytes (the connection is reset).</summary>
    public volatile int DropLfsAfterBytes;

    /// <summary>When set, resolve/ requests get no answer until the server stops.</summary>
    public volatile bool StallResolve;

    /// <summary>When set, /cdn bodies stop after 1000 bytes (the connection stays open, silent) until the server stops.</summary>
    public volatile bool StallLfs;

    /// <summary>When set, every resolve/ request is answered with this status (a Hub that is down: 503).</summary>
    public volatile int ForceStatus;

    /// <summary>When set, /cdn serves bytes whose sha256 is not the etag (one byte flipped).</summary>
    public volatile bool CorruptLfs;

    public int Port { get; }
    public string Endpoint => $"http://127.0.0.1:{Port}";

    public HubTestServer()
    {
        _listener.Start();
        Port = ((IPEndPoint)_listener.LocalEndpoint).Port;
        _loop = Task.Run(AcceptLoop);
    }

    public static string GitSha1(byte[] content)
    {
        var header = Encoding.ASCII.GetBytes($"blob {content.Length}\0");
        return Convert.ToHexStringLower(SHA1.HashData([.. header, .. content]));
    }

    public static string Sha256(byte[] content) => Convert.ToHexStringLower(SHA256.HashData(content));

    public static bool IsLfs(string file) => file.EndsWith(".safetensors", StringComparison.Ordinal) || file.EndsWith(".gguf", StringComparison.Ordinal);

    /// <summary>Serves every file of a folder as repo ORG/NAME at a commit derived from the id; returns that commit.</summary>
    public string AddRepo(string repoId, string folder, string? token = null)
    {
        var files = Directory.EnumerateFiles(folder).ToDictionary(Path.GetFileName, File.ReadAllBytes)!;
        string commit = Convert.ToHexStringLower(SHA1.HashData(Encoding.UTF8.GetBytes(repoId)));
        _repos[repoId] = new Repo { Commit = commit, Files = files!, Token = token };
        foreach (var (name, bytes) in files) if (IsLfs(name!)) _lfs[Sha256(bytes)] = bytes;
        return commit;
    }

    public void Rename(string oldId, string newId) => _renamed[oldId] = newId;

    async Task AcceptLoop()
    {
        try
        {
            while (!_stop.IsCancellationRequested && Interlocked.Increment(ref _requests) <= MaxRequests)
            {
                var client = await _listener.AcceptTcpClientAsync(_stop.Token);
                _ = Task.Run(() => Serve(client));
            }
        }
        catch (Exception) when (_stop.IsCancellationRequested || !_listener.Server.IsBound) { }
        catch (ObjectDisposedException) { }
        catch (SocketException) { }
        finally { _listener.Stop(); }
    }

    async Task Serve(TcpClient client)
    {
        using (client)
        {
            try
            {
                client.ReceiveTimeout = 10_000;
                var stream = client.GetStream();
                var (method, target, headers) = ReadRequest(stream);
                headers.TryGetValue("range", out var range);
                headers.TryGetValue("authorization", out var auth);
                string path = target.Split('?')[0];
                Log.Enqueue(new Request(method, path, range, auth));
                await Respond(client, stream, method, path, range, auth);
            }
            catch (IOException) { }
            catch (SocketException) { }
        }
    }

    static (string Method, string Target, Dictionary<string, string> Headers) ReadRequest(NetworkStream stream)
    {
        var bytes = new List<byte>();
        while (bytes.Count < 64 * 1024)
        {
            int b = stream.ReadByte();
            if (b < 0) throw new IOException("request ended early");
            bytes.Add((byte)b);
            int n = bytes.Count;
            if (n >= 4 && bytes[n - 4] == '\r' && bytes[n - 3] == '\n' && bytes[n - 2] == '\r' && bytes[n - 1] == '\n') break;
        }
        var lines = Encoding.ASCII.GetString(bytes.ToArray()).Split("\r\n");
        var first = lines[0].Split(' ');
        var headers = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        foreach (var line in lines.Skip(1))
            if (line.IndexOf(':') is int i and > 0) headers[line[..i].Trim().ToLowerInvariant()] = line[(i + 1)..].Trim();
        return (first[0], first[1], headers);
    }

    async Task Respond(TcpClient client, NetworkStream stream, string method, string path, string? range, string? auth)
    {
        var h = new List<(string, string)>();
        if (path.StartsWith("/cdn/", StringComparison.Ordinal))
        {
            if (!_lfs.TryGetValue(path[5..], out var blob)) { await Write(stream, 404, h); return; }
            if (CorruptLfs) { blob = (byte[])blob.Clone(); blob[^1] ^= 0xFF; }
            long from = 0;
            if (range is not null && range.StartsWith("bytes=") && range.EndsWith('-')) from = long.Parse(range[6..^1]);
            if (from >= blob.Length) { await Write(stream, 416, h); return; }
            var body = blob.AsMemory((int)from);
            if (from > 0) h.Add(("Content-Range", $"bytes {from}-{blob.Length - 1}/{blob.Length}"));
            int status = from > 0 ? 206 : 200;
            if (method == "GET" && StallLfs)
            {
                await WriteHead(stream, status, h, body.Length);
                await stream.WriteAsync(body[..Math.Min(1000, body.Length)]);
                await stream.FlushAsync();
                await WaitUntilStopped();
                return;
            }
            if (method == "GET" && DropLfsAfterBytes is int drop and > 0 && drop < body.Length)
            {
                await WriteHead(stream, status, h, body.Length);
                await stream.WriteAsync(body[..drop]);
                await stream.FlushAsync();
                client.Client.Shutdown(SocketShutdown.Both);   // the body ends before its Content-Length
                client.Client.Close();
                return;
            }
            await Write(stream, status, h, body, method != "HEAD");
            return;
        }

        // /api/models/ORG/NAME/revision/REV: the model's metadata, of which LinearLens reads the file list (siblings)
        if (path.StartsWith("/api/models/", StringComparison.Ordinal))
        {
            var api = path["/api/models/".Length..].Split('/');
            if (api.Length == 4 && api[2] == "revision" && _repos.TryGetValue(api[0] + "/" + api[1], out var listed) && listed.Token is null)
            {
                var siblings = string.Join(",", listed.Files.Keys.Order(StringComparer.Ordinal).Select(f => $"{{\"rfilename\":\"{f}\"}}"));
                await Write(stream, 200, h, System.Text.Encoding.UTF8.GetBytes($"{{\"id\":\"{api[0]}/{api[1]}\",\"sha\":\"{listed.Commit}\",\"siblings\":[{siblings}]}}"), method != "HEAD");
            }
            else
            {
                h.Add(("X-Error-Code", "RepoNotFound"));
                await Write(stream, auth is null ? 401 : 404, h);
            }
            return;
        }

        // /ORG/NAME/resolve/REV/FILE
        var parts = path.TrimStart('/').Split('/', 5);
        if (parts.Length < 5 || parts[2] != "resolve") { await Write(stream, 404, h); return; }
        string repoId = parts[0] + "/" + parts[1], revision = Uri.UnescapeDataString(parts[3]), file = Uri.UnescapeDataString(parts[4]);
        if (StallResolve) { await WaitUntilStopped(); return; }
        if (ForceStatus != 0) { await Write(stream, ForceStatus, h); return; }
        if (_renamed.TryGetValue(repoId, out var newId))
        {
            h.Add(("Location", $"/{newId}/resolve/{parts[3]}/{parts[4]}"));
            await Write(stream, 307, h);
            return;
        }
        if (!_repos.TryGetValue(repoId, out var repo))
        {
            // As huggingface.co: without a token an unknown repo is a 401 (it might be private), with one a 404.
            h.Add(("X-Error-Code", "RepoNotFound"));
            h.Add(("X-Error-Message", "Repository not found"));
            await Write(stream, auth is null ? 401 : 404, h);
            return;
        }
        if (repo.Token is not null && auth != "Bearer " + repo.Token)
        {
            h.Add(("X-Error-Code", "GatedRepo"));
            h.Add(("X-Error-Message", $"Access to model {repoId} is restricted."));
            await Write(stream, auth is null ? 401 : 403, h);
            return;
        }
        if (revision != "main" && revision != repo.Commit)
        {
            h.Add(("X-Error-Code", "RevisionNotFound"));
            await Write(stream, 404, h);
            return;
        }
        h.Add(("X-Repo-Commit", repo.Commit));
        if (!repo.Files.TryGetValue(file, out var content))
        {
            h.Add(("X-Error-Code", "EntryNotFound"));
            await Write(stream, 404, h);
            return;
        }
        if (IsLfs(file))
        {
            string sha = Sha256(content);
            h.Add(("ETag", $"\"{GitSha1(Encoding.ASCII.GetBytes($"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {content.Length}\n"))}\""));
            h.Add(("X-Linked-Etag", $"\"{sha}\""));
            h.Add(("X-Linked-Size", content.Length.ToString()));
            h.Add(("Location", $"{Endpoint}/cdn/{sha}"));
            await Write(stream, 302, h);
            return;
        }
        h.Add(("ETag", $"\"{GitSha1(content)}\""));
        await Write(stream, 200, h, content, method != "HEAD");
    }

    async Task WaitUntilStopped()
    {
        try { await Task.Delay(Timeout.Infinite, _stop.Token); } catch (OperationCanceledException) { }
    }

    static async Task WriteHead(NetworkStream s, int status, List<(string, string)> headers, long length)
    {
        var sb = new StringBuilder($"HTTP/1.1 {status} {(HttpStatusCode)status}\r\n");
        foreach (var (k, v) in headers) sb.Append($"{k}: {v}\r\n");
        sb.Append($"Content-Length: {length}\r\nConnection: close\r\n\r\n");
        await s.WriteAsync(Encoding.ASCII.GetBytes(sb.ToString()));
    }

    /// <summary>A whole response; for HEAD (sendBody false) the headers announce the body's length without it.</summary>
    static async Task Write(NetworkStream s, int status, List<(string, string)> headers, ReadOnlyMemory<byte> body = default, bool sendBody = true)
    {
        await WriteHead(s, status, headers, body.Length);
        if (sendBody) await s.WriteAsync(body);
        await s.FlushAsync();
    }

    int _disposed;

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 1) return;
        _stop.Cancel();
        _listener.Stop();
        try { _loop.Wait(TimeSpan.FromSeconds(5)); } catch (AggregateException) { }
        _stop.Dispose();
    }
}
