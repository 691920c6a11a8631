namespace LinearLens.Tests.Support;

/// <summary>Runs the linearlens command line in-process and captures what it prints.</summary>
public static class CliRunner
{
    public sealed record Result(int ExitCode, string Stdout, string Stderr);

    /// <summary>The project's rule for bad input: exit code 2, one `error: …` line on stderr (no stack trace), nothing on stdout.</summary>
    public static void AssertOneLineError(Result r, params string[] mustContain)
    {
        Assert.True(r.ExitCode == 2, $"exit code {r.ExitCode}: {r.Stderr}");
        var lines = r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(lines.Length == 1, $"{lines.Length} lines on stderr: {r.Stderr}");
        Assert.StartsWith("error: ", lines[0]);
        foreach (var s in mustContain) Assert.Contains(s, lines[0]);
        Assert.DoesNotContain("   at ", r.Stderr);
        Assert.Equal("", r.Stdout);
    }

    public static Result Run(params string[] args)
    {
        var o = new StringWriter();
        var e = new StringWriter();
        int code = LinearLens.Cli.Cli.Run(args, o, e);
        return new Result(code, o.ToString(), e.ToString());
    }

    /// <summary>Runs with explicit Hub options (endpoint, cache, token, offline) instead of the process environment.</summary>
    public static Result RunWith(LinearLens.Loading.HubOptions hub, params string[] args)
    {
        var o = new StringWriter();
        var e = new StringWriter();
        int code = LinearLens.Cli.Cli.Run(args, o, e, hub);
        return new Result(code, o.ToString(), e.ToString());
    }
}
