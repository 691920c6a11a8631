namespace LinearLens.Numerics;

/// <summary>
/// A small pool of persistent worker threads for <see cref="Gemm"/>: the caller runs tasks too, every task index runs exactly once.
/// Which thread runs a task does not matter for the result (tasks write disjoint parts of C). Concurrent products from
/// several callers fall back to <see cref="Parallel.For(int, int, ParallelOptions, Action{int})"/>.
/// </summary>
internal static class GemmParallel
{
    sealed class Job(int count, Action<int> body)
    {
        readonly int _count = count;
        int _next, _remaining = count;
        Exception? _error;
        public readonly ManualResetEventSlim Done = new(false, 1000);

        public void Work()
        {
            int i;
            while ((i = Interlocked.Increment(ref _next) - 1) < _count)
            {
                try { body(i); }
                catch (Exception e) { Interlocked.CompareExchange(ref _error, e, null); }
                if (Interlocked.Decrement(ref _remaining) == 0) Done.Set();
            }
        }

        public void Rethrow()
        {
            if (_error != null) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(_error).Throw();
        }
    }

    static readonly object s_lock = new();
    static readonly SemaphoreSlim s_wake = new(0);
    static volatile Job? s_job;
    static int s_workers;

    /// <summary>Runs body(0..count-1) on up to <paramref name="count"/> threads (the caller included) and waits for all.</summary>
    public static void For(int count, Action<int> body)
    {
        if (count <= 1) { if (count == 1) body(0); return; }
        if (!Monitor.TryEnter(s_lock))
        {
            Parallel.For(0, count, new ParallelOptions { MaxDegreeOfParallelism = count }, body);
            return;
        }
        try
        {
            while (s_workers < count - 1)
            {
                var t = new Thread(WorkerLoop) { IsBackground = true, Name = $"LinearLens GEMM {s_workers + 1}" };
                t.Start();
                s_workers++;
            }
            var job = new Job(count, body);
            s_job = job;
            s_wake.Release(count - 1);
            job.Work();
            job.Done.Wait();
            s_job = null;
            job.Done.Dispose();
            job.Rethrow();
        }
        finally { Monitor.Exit(s_lock); }
    }

    static void WorkerLoop()
    {
        while (true)
        {
            s_wake.Wait();
            s_job?.Work();
        }
    }
}
