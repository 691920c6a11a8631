using System.Text.RegularExpressions;

namespace LinearLens.Loading;

/// <summary>
/// One model repo in the Hugging Face cache, laid out exactly as huggingface_hub lays it out, so that Python tools
/// and LinearLens share it:
/// <code>
/// CACHE/models--ORG--NAME/
///   refs/REV                      the commit hash REV pointed at when last resolved (no newline)
///   blobs/ETAG                    one file per content, named by its etag (git sha1, or the sha256 of an LFS file)
///   snapshots/COMMIT/FILE         relative symlink → ../../blobs/ETAG
///   .no_exist/COMMIT/FILE         empty marker: FILE does not exist at COMMIT
/// CACHE/.locks/models--ORG--NAME/ETAG.lock   held while ETAG is downloaded (flock, as Python's filelock)
/// </code>
/// </summary>
public sealed partial class HubCache(string cacheDir, string repoId)
{
    public string CacheDir { get; } = cacheDir;
    public string RepoId { get; } = repoId;
    public string RepoFolder { get; } = Path.Combine(cacheDir, FolderName(repoId));

    /// <summary>"ORG/NAME" → "models--ORG--NAME" (huggingface_hub's repo_folder_name for a model repo).</summary>
    public static string FolderName(string repoId) => "models--" + repoId.Replace("/", "--");

    public static bool IsCommitHash(string s) => CommitPattern().IsMatch(s);

    public string BlobPath(string etag) => Path.Combine(RepoFolder, "blobs", etag);
    public string SnapshotFolder(string commit) => Path.Combine(RepoFolder, "snapshots", commit);
    public string RefPath(string revision) => Path.Combine(RepoFolder, "refs", revision);
    public string LockPath(string etag) => Path.Combine(CacheDir, ".locks", FolderName(RepoId), etag + ".lock");
    string NoExistPath(string commit, string file) => Path.Combine(RepoFolder, ".no_exist", commit, file);

    /// <summary>The commit a revision names in this cache: a commit hash is itself; a branch or tag is read from refs/.</summary>
    public string? CommitOf(string revision)
    {
        if (IsCommitHash(revision)) return revision;
        string path = RefPath(revision);
        if (!File.Exists(path)) return null;
        string commit = File.ReadAllText(path).Trim();
        if (!IsCommitHash(commit))
            throw new LinearLensException($"{path} should hold a 40-hex commit hash but holds '{Shorten(commit)}'; delete that file and run again");
        return commit;
    }

    /// <summary>Records which commit a branch or tag names (huggingface_hub writes no ref for a commit hash).</summary>
    public void WriteRef(string revision, string commit)
    {
        if (revision == commit) return;
        string path = RefPath(revision);
        if (File.Exists(path) && File.ReadAllText(path) == commit) return;
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        string temp = path + ".tmp-" + Environment.ProcessId;
        File.WriteAllText(temp, commit);
        File.Move(temp, path, overwrite: true);
    }

    /// <summary>Points snapshots/COMMIT/FILE at blobs/ETAG with a relative symlink (a copy where symlinks fail).</summary>
    public void Link(string commit, string file, string etag)
    {
        string pointer = Path.Combine(SnapshotFolder(commit), file), blob = BlobPath(etag);
        string folder = Path.GetDirectoryName(pointer)!;
        Directory.CreateDirectory(folder);
        string target = Path.GetRelativePath(folder, blob);
        var existing = new FileInfo(pointer);
        if (existing.LinkTarget == target) return;
        string temp = pointer + ".tmp-" + Environment.ProcessId;
        if (File.Exists(temp) || new FileInfo(temp).LinkTarget is not null) File.Delete(temp);
        try { File.CreateSymbolicLink(temp, target); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { File.Copy(blob, temp); }
        File.Move(temp, pointer, overwrite: true);   // rename(2): replaces the link itself, never its target
    }

    public void MarkMissing(string commit, string file)
    {
        string path = NoExistPath(commit, file);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        if (!File.Exists(path)) File.WriteAllBytes(path, []);
    }

    public bool IsMarkedMissing(string commit, string file) => File.Exists(NoExistPath(commit, file));

    /// <summary>
    /// The first file a model needs that the snapshot folder lacks (config.json, then model.safetensors or the index
    /// and every shard it names), or null when the snapshot can be opened.
    /// </summary>
    public static string? MissingFile(string snapshot)
    {
        if (!File.Exists(Path.Combine(snapshot, "config.json"))) return "config.json";
        if (File.Exists(Path.Combine(snapshot, "model.safetensors"))) return null;
        string index = Path.Combine(snapshot, SafetensorsWriter.IndexFileName);
        if (!File.Exists(index)) return "model.safetensors";
        foreach (string shard in TensorStore.ShardNames(index))
            if (!File.Exists(Path.Combine(snapshot, shard))) return shard;
        return null;
    }

    internal static string Shorten(string s) => s.Length <= 80 ? s : s[..77] + "…";

    [GeneratedRegex("^[0-9a-f]{40}$")]
    private static partial Regex CommitPattern();

}
