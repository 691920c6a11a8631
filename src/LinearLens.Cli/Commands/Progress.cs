using System.Diagnostics;
using Spectre.Console;

namespace LinearLens.Cli.Commands;

/// <summary>
/// Progress of a long computation on stderr: a Spectre.Console bar when stderr is a terminal; otherwise, once the
/// work has taken more than a second, a plain line every tenth.
/// </summary>
static class Progress
{
    public static TResult Run<TResult>(TextWriter stderr, string what, Func<Action<double>, TResult> work) =>
        RunStages(stderr, what, report => work(f => report(what, f)));

    /// <summary>Like <see cref="Run{TResult}"/> for work in named stages, each reporting its own fraction 0…1.</summary>
    public static TResult RunStages<TResult>(TextWriter stderr, string what, Func<Action<string, double>, TResult> work)
    {
        bool terminal = ReferenceEquals(stderr, Console.Error) && !Console.IsErrorRedirected;
        if (terminal)
        {
            var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
            TResult result = default!;
            console.Progress().AutoClear(true).HideCompleted(true).Start(ctx =>
            {
                var tasks = new Dictionary<string, ProgressTask>();
                result = work((stage, f) =>
                {
                    if (!tasks.TryGetValue(stage, out var task)) tasks[stage] = task = ctx.AddTask(stage, maxValue: 1.0);
                    task.Value = f;
                });
            });
            return result;
        }
        var sw = Stopwatch.StartNew();
        string lastStage = "";
        int lastTenth = 0;
        return work((stage, f) =>
        {
            if (stage != lastStage) { lastStage = stage; lastTenth = 0; }
            int tenth = (int)(f * 10);
            if (sw.Elapsed.TotalSeconds > 1 && tenth > lastTenth) { lastTenth = tenth; stderr.WriteLine($"{what}: {stage} {tenth * 10}%"); }
        });
    }
}
