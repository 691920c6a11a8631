using LinearLens.Tests.Support;

namespace LinearLens.Tests.Cli;

public class HelpTests
{
    [Theory]
    [InlineData(new string[0], "linearlens [command] [options]")]
    [InlineData(new[] { "analyze" }, "linearlens analyze [options]")]
    [InlineData(new[] { "report" }, "linearlens report <DIR> [options]")]
    public void HelpNamesTheToolLinearlens(string[] command, string usage)
    {
        var r = CliRunner.Run([.. command, "--help"]);
        Assert.Equal(0, r.ExitCode);
        Assert.Contains(usage, r.Stdout);
        Assert.DoesNotContain("LinearLens.Cli", r.Stdout);
        Assert.DoesNotContain("testhost", r.Stdout);
    }
}
