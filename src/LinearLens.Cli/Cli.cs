using System.CommandLine;
using LinearLens.Cli.Commands;

namespace LinearLens.Cli;

/// <summary>
/// The `linearlens` command line. Results go to stdout, progress and errors to stderr. A problem with the input
/// is one line on stderr and exit code 2 — never a stack trace.
/// </summary>
public static class Cli
{
    public static int Run(string[] args, TextWriter stdout, TextWriter stderr)
    {
        // A plain command named for the tool (a RootCommand takes the executable's name, "LinearLens.Cli" under dotnet run)
        // with the help and version options a RootCommand would add.
        var root = new Command("linearlens", "LinearLens: an exactly equivalent linear system of a decoder LLM for one input text")
        {
            new System.CommandLine.Help.HelpOption(),
            new VersionOption(),
            GenerateCommand.Create(stdout, stderr),
            JacobianCommand.Create(stdout, stderr),
            AnalyzeCommand.Create(stdout, stderr),
            ReportCommand.Create(stdout, stderr),
            BenchCommand.Create(stdout, stderr),
            RandomCheckpointCommand.Create(stdout, stderr),
            SteerCommand.Create(stdout, stderr),
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
