using System.Text.RegularExpressions;
using LinearLens.Models;
using LinearLens.Tests.Support;

namespace LinearLens.Tests.Cli;

/// <summary>
/// README.md is what newcomers copy: every command line it shows (code blocks and inline `…` spans, the command table
/// included) may only use options that command's --help lists, and the presets it names must exist.
/// </summary>
public class ReadmeTests
{
    static readonly string Readme = File.ReadAllText(Path.Combine(SharedData.RepoRoot, "README.md"));

    static readonly Regex Command = new(@"(?<![\w-])(bench gemm|bench forward|random-checkpoint|generate|jacobian|analyze|report|steer)(?=\s)(?<rest>.*)", RegexOptions.Singleline);

    static IEnumerable<string> CommandTexts()
    {
        var blocks = Regex.Matches(Readme, @"^```\n(.*?)^```", RegexOptions.Multiline | RegexOptions.Singleline);
        foreach (Match b in blocks) foreach (var line in b.Groups[1].Value.Split('\n')) yield return line;
        string prose = Regex.Replace(Readme, @"^```\n.*?^```", "", RegexOptions.Multiline | RegexOptions.Singleline);
        foreach (Match m in Regex.Matches(prose, @"`([^`\n]+)`")) yield return m.Groups[1].Value;
    }

    [Fact]
    public void EveryOptionTheReadmeShowsIsInThatCommandsHelp()
    {
        var help = new Dictionary<string, string>();
        var checkedCommands = new HashSet<string>();
        var unknown = new List<string>();
        foreach (var text in CommandTexts())
        {
            var m = Command.Match(text);
            if (!m.Success) continue;
            string command = m.Groups[1].Value;
            if (!help.TryGetValue(command, out var h))
            {
                var r = CliRunner.Run([.. command.Split(' '), "--help"]);
                Assert.Equal(0, r.ExitCode);
                help[command] = h = r.Stdout;
            }
            foreach (Match o in Regex.Matches(m.Groups["rest"].Value, @"(?<![\w-])--[a-z][a-z0-9-]*"))
            {
                checkedCommands.Add(command);
                if (!Regex.IsMatch(h, $@"(?m)^\s+(-\S+, )?{Regex.Escape(o.Value)}\s"))
                    unknown.Add($"{command} {o.Value}   (in: {text.Trim()})");
            }
        }
        Assert.Empty(unknown);
        // the parse found the commands (a README rewrite that hides them from it should fail here, not pass silently)
        Assert.Superset(new HashSet<string> { "generate", "jacobian", "analyze", "steer", "bench gemm", "bench forward", "random-checkpoint" }, checkedCommands);
    }

    [Theory]
    [InlineData("generate")]
    [InlineData("jacobian")]
    [InlineData("analyze")]
    [InlineData("steer")]
    [InlineData("random-checkpoint")]
    [InlineData("bench gemm")]
    [InlineData("bench forward")]
    public void EveryOptionOfTheCommandIsInTheReadme(string command)
    {
        var r = CliRunner.Run([.. command.Split(' '), "--help"]);
        Assert.Equal(0, r.ExitCode);
        var options = Regex.Matches(r.Stdout, @"(?m)^\s+(?:-\S+, )*(--[a-z][a-z0-9-]*)").Select(m => m.Groups[1].Value).Where(o => o != "--help").ToArray();
        Assert.NotEmpty(options);
        Assert.Empty(options.Where(o => !Regex.IsMatch(Readme, $@"(?<![\w-]){Regex.Escape(o)}(?![\w-])")));
    }

    [Fact]
    public void EveryPresetTheReadmeNamesExists()
    {
        var named = Regex.Matches(Readme, @"--preset ([a-z0-9.-]+)").Select(m => m.Groups[1].Value)
            .Concat(Regex.Match(Readme, @"named real shape \(([^)]*)\)").Groups[1].Value.Split(',')
                .Select(p => p.Trim().Trim('`')).Where(p => p.Length > 0 && !p.Contains(' ')))
            .Distinct().ToArray();
        Assert.Contains("qwen3-14b", named);
        foreach (var preset in named) RandomCheckpointSpec.Preset(preset);   // throws for an unknown name
    }
}
