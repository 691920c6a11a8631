using System.Diagnostics;
using LinearLens.Loading;
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

    /// <summary>
    /// Progress of Hub downloads: one bar per file with bytes and bytes/s on a terminal; otherwise, for a file that
    /// takes more than a second, a line every tenth (the last at 100 %).
    /// </summary>
    public static TResult Download<TResult>(TextWriter stderr, Func<Action<HubProgress>, TResult> work)
    {
        bool terminal = ReferenceEquals(stderr, Console.Error) && !Console.IsErrorRedirected;
        if (terminal)
        {
            // The bars start with the first download: a model found in the cache prints nothing. Spectre's display
            // runs on its own thread from then on; the download reports into its tasks.
            var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
            var context = new TaskCompletionSource<ProgressContext>();
            var finished = new ManualResetEventSlim();
            var tasks = new Dictionary<string, ProgressTask>();
            Task? display = null;
            try
            {
                return work(p =>
                {
                    if (display is null)
                    {
                        display = Task.Run(() => console.Progress().AutoClear(false).HideCompleted(false)
                            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(),
                                new DownloadedColumn(), new SpeedColumn())
                            .Start(ctx => { context.SetResult(ctx); finished.Wait(); }));
                        Task.WaitAny(context.Task, display);
                        if (!context.Task.IsCompleted) display.GetAwaiter().GetResult();   // the display failed: say why
                    }
                    if (!tasks.TryGetValue(p.File, out var task))
                    {
                        tasks[p.File] = task = context.Task.Result.AddTask(Markup.Escape(p.File), maxValue: Math.Max(1, p.TotalBytes));
                        task.Tag = (double)p.Bytes;   // a resumed download starts here: not part of this run's speed
                    }
                    task.Value = p.Bytes;
                });
            }
            finally
            {
                finished.Set();
                display?.Wait();
            }
        }
        string file = "";
        long startBytes = 0;
        int lastTenth = 0;
        var sw = new Stopwatch();
        return work(p =>
        {
            if (p.File != file) { file = p.File; startBytes = p.Bytes; lastTenth = (int)(10.0 * p.Bytes / Math.Max(1, p.TotalBytes)); sw.Restart(); }
            int tenth = (int)(10.0 * p.Bytes / Math.Max(1, p.TotalBytes));
            if (sw.Elapsed.TotalSeconds <= 1 || tenth <= lastTenth) return;
            lastTenth = tenth;
            double rate = (p.Bytes - startBytes) / Math.Max(1e-9, sw.Elapsed.TotalSeconds);
            stderr.WriteLine(string.Create(System.Globalization.CultureInfo.InvariantCulture,
                $"downloading {p.File}: {tenth * 10}% ({p.Bytes / Mi:F1} of {p.TotalBytes / Mi:F1} MiB, {Rate(rate)})"));
        });
    }

    const double Mi = 1 << 20;

    static string Rate(double bytesPerSecond) => bytesPerSecond >= Mi
        ? string.Create(System.Globalization.CultureInfo.InvariantCulture, $"{bytesPerSecond / Mi:F1} MiB/s")
        : string.Create(System.Globalization.CultureInfo.InvariantCulture, $"{bytesPerSecond / 1024:F1} KiB/s");

    /// <summary>
    /// Bytes/s of this run and the time left. Spectre's own speed column counts a resumed file's first jump (the bytes
    /// already on disk) as if it had just arrived; this one measures from the task's start value (its Tag).
    /// </summary>
    sealed class SpeedColumn : ProgressColumn
    {
        public override Spectre.Console.Rendering.IRenderable Render(Spectre.Console.Rendering.RenderOptions options, ProgressTask task, TimeSpan deltaTime)
        {
            double seconds = task.ElapsedTime?.TotalSeconds ?? 0, start = task.Tag is double d ? d : 0;
            if (seconds < 0.2 || task.Value <= start) return Text.Empty;
            double rate = (task.Value - start) / seconds;
            string left = task.IsFinished ? "" : $", {TimeSpan.FromSeconds(Math.Ceiling((task.MaxValue - task.Value) / rate)):hh\\:mm\\:ss} left";
            return new Text(Rate(rate) + left, new Style(Color.Blue));
        }
    }
}
