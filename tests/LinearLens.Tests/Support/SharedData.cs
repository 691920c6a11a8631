namespace LinearLens.Tests.Support;

/// <summary>
/// The read-only test data in ../shared beside the repository (models, tokenizers). A user's clone has no
/// ../shared: tests that need it are skipped with the reason, never failed.
/// </summary>
public static class SharedData
{
    public static string RepoRoot { get; } = FindRepoRoot();

    public static string Root => Path.GetFullPath(Path.Combine(RepoRoot, "..", "shared"));

    public static string Path_(params string[] parts) => Path.Combine([Root, .. parts]);

    public static string Stories260K => Path_("models", "stories260K", "hf");
    public static string Stories260KExpected => Path_("models", "stories260K", "expected");
    public static string Tokenizer(string family) => Path_("tokenizers", family);

    static string FindRepoRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "LinearLens.sln"))) dir = dir.Parent;
        return dir?.FullName ?? throw new InvalidOperationException("LinearLens.sln not found above the test binaries");
    }
}

/// <summary>A fact that needs a path under ../shared; skipped (with the reason) when it is absent.</summary>
public sealed class SharedFactAttribute : FactAttribute
{
    public SharedFactAttribute(params string[] relativePath)
    {
        var p = SharedData.Path_(relativePath);
        if (!File.Exists(p) && !Directory.Exists(p)) Skip = $"needs ../shared/{string.Join('/', relativePath)} (test data beside the repository), absent here";
    }
}

/// <summary>A theory that needs a path under ../shared; skipped (with the reason) when it is absent.</summary>
public sealed class SharedTheoryAttribute : TheoryAttribute
{
    public SharedTheoryAttribute(params string[] relativePath)
    {
        var p = SharedData.Path_(relativePath);
        if (!File.Exists(p) && !Directory.Exists(p)) Skip = $"needs ../shared/{string.Join('/', relativePath)} (test data beside the repository), absent here";
    }
}
