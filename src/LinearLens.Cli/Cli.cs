using System.CommandLine;
using System.CommandLine.Parsing;
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
        // A plain command named for the tool (a RootCommand takes the executable's name, "LinearLens.Cli" under dotnet run)
        // with the help and version options a RootCommand would add.
        var root = new Command("linearlens", "LinearLens: an exactly equivalent linear system of a decoder LLM for one input text")
        {
            new System.CommandLine.Help.HelpOption(),
            new VersionOption(),
            GenerateCommand.Create(stdout, stderr, hub),
            JacobianCommand.Create(stdout, stderr, hub),
            AnalyzeCommand.Create(stdout, stderr, hub),
            ReportCommand.Create(stdout, stderr),
            BenchCommand.Create(stdout, stderr, hub),
            RandomCheckpointCommand.Create(stdout, stderr),
            SteerCommand.Create(stdout, stderr, hub),
        };
        var parse = root.Parse(args);
        if (parse.Errors.Count > 0)
        {
            string command = parse.CommandResult.Command == root ? "" : " " + CommandPath(parse.CommandResult);
            stderr.WriteLine($"error: {ParseErrorMessage(root, parse)} (see 'linearlens{command} --help')");
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
        catch (AggregateException e) when (e.Flatten().InnerExceptions.OfType<LinearLensException>().FirstOrDefault() is { } inner)
        {
            // raised inside a Parallel.For: the same one line
            stderr.WriteLine($"error: {inner.Message}");
            return 2;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            stderr.WriteLine($"error: {e.Message}");
            return 2;
        }
        catch (OutOfMemoryException)
        {
            stderr.WriteLine("error: out of memory; use fewer tokens, --dtype float32 or --method matrix-free");
            return 2;
        }
        catch (Exception e) when (Environment.GetEnvironmentVariable("LINEARLENS_DEBUG") is null)
        {
            // A bug, not bad input: still one line (set LINEARLENS_DEBUG=1 for the stack trace), and exit code 1.
            stderr.WriteLine($"error: internal error ({e.GetType().Name}: {e.Message.Split('\n')[0]}); please report it with the command line (LINEARLENS_DEBUG=1 shows the stack trace)");
            return 1;
        }
    }

    /// <summary>The command's path below the root ("bench gemm"): the root is the one command result without a parent.</summary>
    static string CommandPath(CommandResult r) =>
        r.Parent is CommandResult { Parent: not null } parent ? CommandPath(parent) + " " + r.Command.Name : r.Command.Name;

    /// <summary>
    /// System.CommandLine's parse errors in our words: an unknown command names the commands there are, a value that
    /// does not convert names the option and the kind of value it takes (not a .NET type name).
    /// </summary>
    static string ParseErrorMessage(Command root, ParseResult parse)
    {
        var command = parse.CommandResult.Command;
        if (command.Subcommands.Count > 0 && parse.UnmatchedTokens.Count > 0)
            return $"'{parse.UnmatchedTokens[0]}' is not a command of linearlens{(command == root ? "" : " " + command.Name)}; use one of {string.Join(", ", command.Subcommands.Select(c => c.Name))}";
        if (command.Subcommands.Count == 0 && parse.UnmatchedTokens.Count > 0)
            return $"'{parse.UnmatchedTokens[0]}' is not an option of linearlens {CommandPath(parse.CommandResult)}";
        if (command.Subcommands.Count > 0)
            return $"no command given; use one of {string.Join(", ", command.Subcommands.Select(c => c.Name))}";
        foreach (var e in parse.Errors)
        {
            for (var r = e.SymbolResult; r is not null; r = r.Parent)
                if (r is OptionResult o && e.Message.StartsWith("Cannot parse argument", StringComparison.Ordinal))
                {
                    var type = Nullable.GetUnderlyingType(o.Option.ValueType) ?? o.Option.ValueType;
                    string what = type == typeof(int) ? $"a whole number (at most {int.MaxValue})"
                        : type == typeof(long) ? "a whole number"
                        : type == typeof(double) || type == typeof(float) ? "a number (e.g. 0.5 or 1e-8)"
                        : type == typeof(bool) ? "true or false"
                        : "a " + type.Name.ToLowerInvariant();
                    string value = o.Tokens.Count > 0 ? o.Tokens[^1].Value : "";
                    return $"{o.Option.Name} '{value}' is not {what}";
                }
            if (e.SymbolResult is OptionResult missing && missing.Tokens.Count == 0 && e.Message.StartsWith("Required argument missing", StringComparison.Ordinal))
                return $"{missing.Option.Name} needs a value";
        }
        return parse.Errors[0].Message.TrimEnd('.');
    }
}
