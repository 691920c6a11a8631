using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;

namespace LinearLens.Numerics;

/// <summary>One timed GEMM case: C[m×n] = op(A)[m×k]·op(B)[k×n] in the compute type <see cref="Name"/> ("float64"/"float32").</summary>
/// <param name="Seconds">Best time of the repetitions.</param>
/// <param name="GFlops">2·m·n·k / <see cref="Seconds"/> / 1e9.</param>
/// <param name="BStorage">Stored type of B when it differs from the compute type (e.g. "bf16", B given as an [n×k] weight), else null.</param>
/// <param name="MedianSeconds">Median time of the repetitions.</param>
/// <param name="CpuSeconds">Least processor time (all threads) of one repetition, where measured: on a shared machine it
/// moves less than wall time, since time spent waiting for a core is not counted.</param>
public sealed record GemmBenchResult(string Name, int M, int N, int K, double Seconds, double GFlops, string? BStorage = null, double MedianSeconds = 0,
    double CpuSeconds = 0)
{
    public override string ToString()
        => string.Create(CultureInfo.InvariantCulture,
            $"{Name} {M}x{N}x{K}{(BStorage is null ? "" : $" (B {BStorage})")}: {GFlops:F1} GFLOP/s");
}

/// <summary>Times <see cref="Gemm"/> on fixed shapes (what <c>linearlens bench gemm</c> prints).</summary>
public static unsafe class GemmBenchmark
{
    /// <summary>
    /// The one shape timed when any of m/n/k is given, missing sizes filled in: 2048 each for the plain benchmark, and
    /// one row of a 4096×4096 weight for <see cref="RunWeights"/> (the command checks its memory with the same sizes).
    /// </summary>
    public static (int m, int n, int k) CustomShape(int? m, int? n, int? k, bool weights)
        => weights ? (m ?? 1, n ?? 4096, k ?? 4096) : (m ?? 2048, n ?? 2048, k ?? 2048);

    /// <summary>
    /// Default cases: 2048³ with operands of the compute type, and the engine's projection shapes
    /// 7168×3072×1024 and 7168×1024×3072 (m×n×k) with B a BF16 weight [n×k] (transB). Given any of m/n/k, only that shape
    /// (missing sizes default to 2048) is timed, with native operands and with a BF16 weight.
    /// </summary>
    /// <remarks>With <paramref name="reference"/>, each case is followed by the same product timed with it.</remarks>
    public static IReadOnlyList<GemmBenchResult> Run(DType computeType, int? m, int? n, int? k, Action<string>? progress = null,
        ReferenceBlas? reference = null)
    {
        if (computeType is not (DType.F64 or DType.F32)) throw new ArgumentException("compute type must be F64 or F32", nameof(computeType));
        var cases = new List<(int m, int n, int k, bool bf16)>();
        if (m is null && n is null && k is null)
        {
            cases.Add((2048, 2048, 2048, false));
            cases.Add((7 * 1024, 3072, 1024, true));
            cases.Add((7 * 1024, 1024, 3072, true));
        }
        else
        {
            var (mm, nn, kk) = CustomShape(m, n, k, weights: false);
            if (mm <= 0 || nn <= 0 || kk <= 0) throw new ArgumentOutOfRangeException(nameof(m), "sizes must be positive");
            cases.Add((mm, nn, kk, false));
            cases.Add((mm, nn, kk, true));
        }
        var results = new List<GemmBenchResult>();
        foreach (var (cm, cn, ck, bf16) in cases)
        {
            foreach (var r in TimeWith(computeType, cm, cn, ck, bf16, reference))
            {
                results.Add(r);
                progress?.Invoke(r.ToString());
            }
        }
        return results;
    }

    /// <summary>Times one case: a warm-up call, then repetitions until ~2 s or 10 runs (at least 3).</summary>
    public static GemmBenchResult Time(DType computeType, int m, int n, int k, bool bBf16) => TimeWith(computeType, m, n, k, bBf16, null)[0];

    /// <summary>
    /// Times one case with <see cref="Gemm"/> and, when <paramref name="reference"/> is given, the same product with it
    /// (B of the compute type holding the same values, since a reference BLAS takes no bf16 weight): two rounds, each
    /// timing one then the other, so that both see the same moments of a machine whose speed drifts.
    /// </summary>
    public static GemmBenchResult[] TimeWith(DType computeType, int m, int n, int k, bool bBf16, ReferenceBlas? reference)
    {
        bool f64 = computeType == DType.F64;
        int es = f64 ? 8 : 4;
        DType bType = bBf16 ? DType.BF16 : computeType;
        long aBytes = (long)m * k * es, bBytes = (long)k * n * bType.Size(), cBytes = (long)m * n * es;
        byte* a = (byte*)NativeMemory.AlignedAlloc((nuint)aBytes, 64);
        byte* b = (byte*)NativeMemory.AlignedAlloc((nuint)bBytes, 64);
        byte* c = (byte*)NativeMemory.AlignedAlloc((nuint)cBytes, 64);
        byte* bRef = reference is not null && bBf16 ? (byte*)NativeMemory.AlignedAlloc((nuint)((long)k * n * es), 64) : b;
        try
        {
            var rng = new Random(1234);
            Fill(a, computeType, (long)m * k, rng);
            Fill(b, bType, (long)k * n, rng);
            if (bRef != b && f64) GemmConvert.Row(b, DType.BF16, (double*)bRef, k * n);
            else if (bRef != b) GemmConvert.Row(b, DType.BF16, (float*)bRef, k * n);
            new Span<byte>(c, checked((int)Math.Min(cBytes, int.MaxValue))).Clear();
            var av = new MatrixView(a, computeType, m, k);
            // Native B is k×n (no transpose); a BF16 weight is stored [n×k] and used transposed, as the engine does.
            var bv = bBf16 ? new MatrixView(b, DType.BF16, n, k) : new MatrixView(b, computeType, k, n);
            void Managed()
            {
                if (f64) Gemm.Multiply(av, false, bv, bBf16, (double*)c, n);
                else Gemm.Multiply(av, false, bv, bBf16, (float*)c, n);
            }
            void Reference() => reference!.Multiply(f64, m, n, k, a, k, bRef, bBf16 ? k : n, bBf16, c, n);

            var managed = new List<double>();
            var refTimes = new List<double>();
            for (int round = 0; round < (reference is null ? 1 : 2); round++)
            {
                Repeat(Managed, managed);
                if (reference is not null) Repeat(Reference, refTimes);
            }
            string name = f64 ? "float64" : "float32";
            var result = Result(name, m, n, k, managed, bBf16 ? "bf16" : null);
            return reference is null ? [result] : [result, Result("openblas " + name, m, n, k, refTimes, bBf16 ? name + ", transposed" : null)];
        }
        finally
        {
            if (bRef != b) NativeMemory.AlignedFree(bRef);
            NativeMemory.AlignedFree(a); NativeMemory.AlignedFree(b); NativeMemory.AlignedFree(c);
        }
    }

    /// <summary>The projection weights [n×k] of Qwen3-0.6B and Qwen3-14B (q, gate/up, down), timed with these activation row counts.</summary>
    public static readonly (string model, string name, int n, int k)[] EngineWeights =
    [
        ("Qwen3-0.6B", "q_proj", 2048, 1024), ("Qwen3-0.6B", "gate/up", 3072, 1024), ("Qwen3-0.6B", "down", 1024, 3072),
        ("Qwen3-14B", "q_proj", 5120, 5120), ("Qwen3-14B", "gate/up", 17408, 5120), ("Qwen3-14B", "down", 5120, 17408),
    ];

    public static readonly int[] EngineRows = [1, 16, 64, 256];

    /// <summary>
    /// Y[m×n] = X[m×k]·Wᵀ with the weight W [n×k] stored as <paramref name="weights"/> (e.g. Q4_K) and the same shape with a
    /// BF16 weight, timed interleaved (bf16, quantized, bf16, quantized, …) so that both see the same moments of a machine
    /// whose speed drifts. Without m/n/k: the engine's shapes (<see cref="EngineWeights"/> × <see cref="EngineRows"/>);
    /// with them, that one shape (missing sizes: m 1, n and k 4096). Returns pairs (bf16, quantized).
    /// </summary>
    public static IReadOnlyList<(GemmBenchResult bf16, GemmBenchResult weights)> RunWeights(DType computeType, DType weights, int? m, int? n, int? k,
        Action<string>? progress = null)
    {
        if (computeType is not (DType.F64 or DType.F32)) throw new ArgumentException("compute type must be F64 or F32", nameof(computeType));
        var cases = new List<(int m, int n, int k)>();
        if (m is null && n is null && k is null)
            foreach (var w in EngineWeights) foreach (int rows in EngineRows) cases.Add((rows, w.n, w.k));
        else
        {
            var (mm, nn, kk) = CustomShape(m, n, k, weights: true);
            if (mm <= 0 || nn <= 0 || kk <= 0) throw new ArgumentOutOfRangeException(nameof(m), "sizes must be positive");
            if (kk % weights.BlockElements() != 0)
                throw new ArgumentOutOfRangeException(nameof(k), $"k = {kk} is not a whole number of {weights.Name()} blocks ({weights.BlockElements()})");
            cases.Add((mm, nn, kk));
        }
        var results = new List<(GemmBenchResult, GemmBenchResult)>();
        foreach (var (cm, cn, ck) in cases)
        {
            var r = TimeWeights(computeType, cm, cn, ck, weights);
            results.Add(r);
            progress?.Invoke($"{r.Item1}  |  {r.Item2}  |  ratio {r.Item2.GFlops / r.Item1.GFlops:F2} (processor time {r.Item1.CpuSeconds / r.Item2.CpuSeconds:F2})");
        }
        return results;
    }

    static (GemmBenchResult, GemmBenchResult) TimeWeights(DType computeType, int m, int n, int k, DType weights)
    {
        bool f64 = computeType == DType.F64;
        int es = f64 ? 8 : 4;
        long aBytes = (long)m * k * es, cBytes = (long)m * n * es, bfBytes = (long)n * k * 2, wBytes = (long)n * weights.RowBytes(k);
        byte* a = (byte*)NativeMemory.AlignedAlloc((nuint)aBytes, 64);
        byte* bf = (byte*)NativeMemory.AlignedAlloc((nuint)bfBytes, 64);
        byte* w = (byte*)NativeMemory.AlignedAlloc((nuint)wBytes, 64);
        byte* c = (byte*)NativeMemory.AlignedAlloc((nuint)cBytes, 64);
        try
        {
            var rng = new Random(1234);
            Fill(a, computeType, (long)m * k, rng);
            Fill(bf, DType.BF16, (long)n * k, rng);
            if (weights.IsQuantized())
                for (long r0 = 0; r0 < n; r0 += 256)
                {
                    long rows = Math.Min(256, n - r0), rowBytes = weights.RowBytes(k);
                    QuantBlocks.Random(weights, rows, k, 99, new Span<byte>(w + r0 * rowBytes, checked((int)(rows * rowBytes))), r0, 1.0 / Math.Sqrt(k));
                }
            else Fill(w, weights, (long)n * k, rng);
            var av = new MatrixView(a, computeType, m, k);
            var bfv = new MatrixView(bf, DType.BF16, n, k);
            var wv = new MatrixView(w, weights, n, k);
            void Product(MatrixView bv)
            {
                if (f64) Gemm.Multiply(av, false, bv, true, (double*)c, n);
                else Gemm.Multiply(av, false, bv, true, (float*)c, n);
            }
            var bfTimes = new List<double>();
            var wTimes = new List<double>();
            var bfCpu = new List<double>();
            var wCpu = new List<double>();
            // four short rounds each: on a shared machine the best of many alternating runs is what compares
            for (int round = 0; round < 4; round++)
            {
                Repeat(() => Product(bfv), bfTimes, 0.5, bfCpu);
                Repeat(() => Product(wv), wTimes, 0.5, wCpu);
            }
            string name = f64 ? "float64" : "float32";
            return (Result(name, m, n, k, bfTimes, "bf16") with { CpuSeconds = bfCpu.Min() },
                    Result(name, m, n, k, wTimes, weights.Name().ToLowerInvariant()) with { CpuSeconds = wCpu.Min() });
        }
        finally
        {
            NativeMemory.AlignedFree(a); NativeMemory.AlignedFree(bf); NativeMemory.AlignedFree(w); NativeMemory.AlignedFree(c);
        }
    }

    static void Repeat(Action once, List<double> times, double seconds = 2, List<double>? cpu = null)
    {
        once();
        int start = times.Count;
        var total = Stopwatch.StartNew();
        using var process = Process.GetCurrentProcess();
        while (times.Count - start < 3 || (times.Count - start < 10 && total.Elapsed.TotalSeconds < seconds))
        {
            process.Refresh();
            var c0 = cpu is null ? TimeSpan.Zero : process.TotalProcessorTime;
            long t0 = Stopwatch.GetTimestamp();
            once();
            times.Add(Stopwatch.GetElapsedTime(t0).TotalSeconds);
            if (cpu is not null) { process.Refresh(); cpu.Add((process.TotalProcessorTime - c0).TotalSeconds); }
        }
    }

    static GemmBenchResult Result(string name, int m, int n, int k, List<double> times, string? bStorage)
    {
        times.Sort();
        double best = times[0], median = times[times.Count / 2];
        return new GemmBenchResult(name, m, n, k, best, 2.0 * m * n * k / best / 1e9, bStorage, median);
    }

    static void Fill(byte* p, DType t, long count, Random rng)
    {
        for (long i = 0; i < count; i++)
        {
            float v = (float)(rng.NextDouble() * 2 - 1);
            switch (t)
            {
                case DType.F64: ((double*)p)[i] = v; break;
                case DType.F32: ((float*)p)[i] = v; break;
                case DType.BF16: ((ushort*)p)[i] = DTypes.FloatToBf16(v); break;
                case DType.F16: ((ushort*)p)[i] = BitConverter.HalfToUInt16Bits((Half)v); break;
                default: throw new ArgumentException($"no random fill for {t.Name()}", nameof(t));
            }
        }
    }
}
