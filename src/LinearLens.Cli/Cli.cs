using System.CommandLine;
using LinearLens.Cli.Commands;
using LinearLens.Loading;

namespace LinearLens.Cli;

/// <summary>
/// The `linearlens` command line. Results go to stdout, progress and errors to stderr. A problem with the input
/// is one line on stderr and exit code 2 — never a stack trace.
/// </summary>
public static class Cli
{
    /// <summary>Runs with the Hub options of this process's environment (HF_ENDPOINT, HF_HUB_CACHE, HF_TOKEN, HF_HUB_OFFLINE, …).</summary>
    public static int Run(string[] args, TextWriter stdout, TextWriter stderr) => Run(args, stdout, stderr, HubOptions.FromProcess);

    /// <summary>Runs with the given Hub options (tests: a loopback endpoint, a temporary cache) instead of the environment's.</summary>
    public static int Run(string[] args, TextWriter stdout, TextWriter stderr, HubOptions hub) => Run(args, stdout, stderr, () => hub);

    static int Run(string[] args, TextWriter stdout, TextWriter stderr, Func<HubOptions> hub)
    {
        var root = new RootCommand("LinearLens: an exactly equivalent linear system of a decoder LLM for one input text")
        {
            GenerateCommand.Create(stdout, stderr, hub),
            JacobianCommand.Create(stdout, stderr, hub),
            AnalyzeCommand.Create(stdout, stderr, hub),
            BenchCommand.Create(stdout, stderr, hub),
            RandomCheckpointCommand.Create(stdout, stderr),
            SteerCommand.Create(stdout, stderr, hub),
        };
        var parse = root.Parse(args);
        if (parse.Errors.Count > 0)
        {
            stderr.WriteLine($"error: {parse.Errors[0].Message} (see 'linearlens {string.Join(' ', parse.CommandResult.Command.Name == root.Name ? "" : parse.CommandResult.Command.Name)} --help')".Replace("  ", " "));
            return 2;
        }
        try
        {
            return parse.Invoke(new InvocationConfiguration { Output = stdout, Error = stderr, EnableDefaultExceptionHandler = false });
        }
        catch (LinearLensException e)
        {
            stderr.WriteLine($"error: {e.Message}");
            return 2;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            stderr.WriteLine($"error: {e.Message}");
            return 2;
        }
    }
}
