using LinearLens.Analysis;
using LinearLens.Loading;

namespace LinearLens.Cli.Commands;

/// <summary>Checks of options and output paths that every command makes before its work starts.</summary>
static class Checks
{
    /// <summary>
    /// An output folder: it, or the nearest folder above it that exists (where it will be created), must be a folder
    /// this process can write into — proven with a probe file — so that a file in the way or a folder without write
    /// permission is found now, not after minutes of analysis. Nothing is created here: a run that fails later
    /// leaves no empty folder behind.
    /// </summary>
    public static void OutputFolder(string? dir, string option = "--out")
    {
        if (dir is null) return;
        if (dir.Length == 0) throw new LinearLensException($"{option} is empty; give a folder to write into");
        string full = Path.GetFullPath(dir);
        var link = new FileInfo(full);
        if (link.LinkTarget is { } target && !Path.Exists(link.ResolveLinkTarget(returnFinalTarget: true)?.FullName))
            throw new LinearLensException($"{option} {dir} is a symbolic link to {target}, which does not exist; create that folder, or give another");
        if (File.Exists(full))
            throw new LinearLensException($"{option} {dir} is a file; give a folder (it is created if missing), or remove the file");
        string existing = full;
        while (!Directory.Exists(existing))
        {
            if (File.Exists(existing))
                throw new LinearLensException($"{option} {dir} cannot be created: {existing} is a file; give another folder");
            existing = Path.GetDirectoryName(existing) ?? throw new LinearLensException($"{option} {dir}: no folder of it exists");
        }
        string probe = Path.Combine(existing, $".linearlens-write-test-{Environment.ProcessId}");
        try
        {
            File.WriteAllBytes(probe, []);
            File.Delete(probe);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            string why = e is UnauthorizedAccessException ? "permission denied" : e.Message;
            throw new LinearLensException($"{option} {dir} cannot be written ({why} in {existing}); give a folder you can write to");
        }
    }

    /// <summary>
    /// --components: a d-row Jacobian (Jᵢ is d×d, the combined [J₀|…|J_{n−1}] is d×n·d) has at most d singular values,
    /// so more is rejected rather than silently clamped under a header that would still say top-k.
    /// </summary>
    public static void Components(int? k, ModelConfig c)
    {
        if (k is not int v) return;
        if (v < 1) throw new LinearLensException($"--components {v} must be at least 1");
        if (v > c.HiddenSize)
            throw new LinearLensException($"--components {v} exceeds hidden_size {c.HiddenSize}: a Jacobian with {c.HiddenSize} rows has at most {c.HiddenSize} singular values; give at most {c.HiddenSize}");
    }

    /// <summary>Stops a run whose estimated memory exceeds what this machine has (<see cref="ResourceEstimate"/>).</summary>
    public static void Memory(ModelConfig c, RunShape run) => ResourceEstimate.Check(c, run);

    /// <summary>The same check, and the estimate as one line on stderr (weights are memory-mapped and not in it).</summary>
    public static void Memory(ModelConfig c, RunShape run, TextWriter stderr)
    {
        ResourceEstimate.Check(c, run);
        var (bytes, breakdown) = ResourceEstimate.Estimate(c, run);
        stderr.WriteLine($"memory: about {ResourceEstimate.Size(bytes)} besides the mapped weights ({breakdown})");
    }
}
