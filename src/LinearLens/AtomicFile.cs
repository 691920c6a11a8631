namespace LinearLens;

/// <summary>
/// Output files are complete or absent: each is written under a temporary name in its own folder and renamed over
/// the final name once complete (a rename within one folder is atomic), so a run killed mid-write leaves no half file.
/// </summary>
public static class AtomicFile
{
    /// <summary>Writes a file through `write`, which receives the temporary path (same folder, same extension).</summary>
    public static void Write(string path, Action<string> write)
    {
        string full = Path.GetFullPath(path);
        string folder = Path.GetDirectoryName(full)!;
        Directory.CreateDirectory(folder);
        string temp = Path.Combine(folder, $".{Path.GetFileNameWithoutExtension(full)}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp{Path.GetExtension(full)}");
        try
        {
            write(temp);
            File.Move(temp, full, overwrite: true);
        }
        finally
        {
            if (File.Exists(temp)) File.Delete(temp);
        }
    }

    public static void WriteAllText(string path, string text) => Write(path, t => File.WriteAllText(t, text));

    public static void WriteAllBytes(string path, byte[] bytes) => Write(path, t => File.WriteAllBytes(t, bytes));
}
