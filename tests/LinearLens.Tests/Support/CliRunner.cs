namespace LinearLens.Tests.Support;

/// <summary>Runs the linearlens command line in-process and captures what it prints.</summary>
public static class CliRunner
{
    public sealed record Result(int ExitCode, string Stdout, string Stderr);

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
