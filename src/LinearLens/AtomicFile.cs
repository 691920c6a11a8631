namespace LinearLens;

/// <summary>
/// Output files are complete or absent. Each file is written under a temporary name in its own folder
/// (".name.tmp-XXXXXXXX.ext", so that a writer keyed on the extension still works) and renamed over the final name
/// only when the writer has returned and the file is closed; an exception (disk full, a bug) deletes the temporary
/// file and leaves any earlier file of that name as it was. On Ctrl-C the CLI calls <see cref="DeletePending"/>.
/// </summary>
public static class AtomicFile
{
    static readonly HashSet<string> pending = [];
    static bool closing;

    /// <summary>Writes <paramref name="path"/> through a stream.</summary>
    public static void Write(string path, Action<Stream> write) => Publish(path, temp =>
    {
        using var fs = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20);
        write(fs);
    });

    public static void WriteAllText(string path, string text) => Publish(path, temp => File.WriteAllText(temp, text));

    public static void WriteAllBytes(string path, byte[] bytes) => Publish(path, temp => File.WriteAllBytes(temp, bytes));

    /// <summary>Lets a writer that takes a file name (a plotting library) write the temporary file, then renames it.</summary>
    public static void Publish(string path, Action<string> writeTo)
    {
        string full = Path.GetFullPath(path);
        string temp = Path.Combine(Path.GetDirectoryName(full)!,
            $".{Path.GetFileNameWithoutExtension(full)}.tmp-{Random.Shared.Next():x8}{Path.GetExtension(full)}");
        lock (pending)
        {
            if (closing) throw new OperationCanceledException("interrupted");
            pending.Add(temp);
        }
        try
        {
            writeTo(temp);
            lock (pending)
            {
                if (closing) throw new OperationCanceledException("interrupted");
                File.Move(temp, full, overwrite: true);
                pending.Remove(temp);
            }
        }
        catch (Exception e)
        {
            lock (pending) pending.Remove(temp);
            try { File.Delete(temp); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            // the file system's refusals (disk full, file too large, permission) are the user's to fix: one line
            if (e is IOException or UnauthorizedAccessException || e is ArgumentOutOfRangeException && e.TargetSite?.DeclaringType?.Namespace?.StartsWith("System.IO") == true)
                throw new LinearLensException($"could not write {full}: {e.Message.TrimEnd('.')}; nothing was left under that name (free disk space or write elsewhere)");
            throw;
        }
    }

    /// <summary>
    /// Deletes every temporary file still being written and refuses new ones: the process is about to exit
    /// (Ctrl-C), and the files it had not finished must not be left behind.
    /// </summary>
    public static void DeletePending()
    {
        lock (pending)
        {
            closing = true;
            foreach (var f in pending)
                try { File.Delete(f); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            pending.Clear();
        }
    }
}
