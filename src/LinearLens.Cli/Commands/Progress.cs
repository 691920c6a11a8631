using System.Diagnostics;
using Spectre.Console;

namespace LinearLens.Cli.Commands;

/// <summary>
/// Progress of a long computation on stderr: a Spectre.Console bar when stderr is a terminal; otherwise, once the
/// work has taken more than a second, a plain line every tenth.
/// </summary>
static class Progress
{
    public static TResult Run<TResult>(TextWriter stderr, string what, Func<Action<double>, TResult> work)
    {
        bool terminal = ReferenceEquals(stderr, Console.Error) && !Console.IsErrorRedirected;
        if (terminal)
        {
            var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
            TResult result = default!;
            console.Progress().AutoClear(true).HideCompleted(true).Start(ctx =>
            {
                var task = ctx.AddTask(what, maxValue: 1.0);
                result = work(f => task.Value = f);
            });
            return result;
        }
        var sw = Stopwatch.StartNew();
        int lastTenth = 0;
        return work(f =>
        {
            int tenth = (int)(f * 10);
            if (sw.Elapsed.TotalSeconds > 1 && tenth > lastTenth) { lastTenth = tenth; stderr.WriteLine($"{what}: {tenth * 10}%"); }
        });
    }
}
