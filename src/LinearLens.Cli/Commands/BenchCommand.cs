using System.CommandLine;
using System.Diagnostics;
using System.Numerics;
using LinearLens.Loading;
using LinearLens.Models;
using LinearLens.Numerics;

namespace LinearLens.Cli.Commands;

/// <summary>`linearlens bench gemm|forward`: speed in GFLOP/s and tokens/s, printed one case per line.</summary>
static class BenchCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr, Func<HubOptions> hub)
    {
        var bench = new Command("bench", "Measure speed (GEMM GFLOP/s, forward tokens/s)");

        var dtype = new Option<string>("--dtype") { Description = "float64 or float32", DefaultValueFactory = _ => "float64" };
        var m = new Option<int?>("--m") { Description = "Rows of C (custom case)" };
        var n = new Option<int?>("--n") { Description = "Columns of C (custom case)" };
        var k = new Option<int?>("--k") { Description = "Inner dimension (custom case)" };
        var reference = new Option<string?>("--reference")
        {
            Description = "Also time each case with a system BLAS on this machine: 'openblas' (searched by its usual names) or a library path",
        };
        var weights = new Option<string?>("--weights")
        {
            Description = "Time Y = X·Wᵀ with W stored as this type (q4_k, q8_0, q6_k, … iq4_xs, f16, f32) against a bf16 W at the same "
                + "shapes, interleaved: Qwen3-0.6B and 14B projections with 1/16/64/256 rows (or the --m/--n/--k shape)",
        };
        var threads = new Option<int?>("--threads") { Description = "Threads per product (default: every core)" };
        var gemm = new Command("gemm", "GEMM GFLOP/s for 2048³ and the engine's real shapes (bf16 weights)") { dtype, m, n, k, reference, weights, threads };
        gemm.SetAction(p =>
        {
            if (p.GetValue(threads) is { } th)
            {
                if (th < 1) throw new LinearLensException($"--threads {th}: give at least 1");
                Gemm.Threads = th;
            }
            var t = Precision(p.GetValue(dtype));
            foreach (var (name, v) in new[] { ("--m", p.GetValue(m)), ("--n", p.GetValue(n)), ("--k", p.GetValue(k)) })
                if (v is < 1) throw new LinearLensException($"{name} {v} must be at least 1 (a matrix dimension)");
            if (p.GetValue(m) is not null || p.GetValue(n) is not null || p.GetValue(k) is not null)
            {
                // the sizes the benchmark fills in for missing ones (with --weights they are not the plain case's)
                var (mm, nn, kk) = GemmBenchmark.CustomShape(p.GetValue(m), p.GetValue(n), p.GetValue(k), p.GetValue(weights) is not null);
                double bytes = ((double)mm * kk + (double)kk * nn + (double)mm * nn) * 8 * 2;   // A, B (and its bf16 copy), C, packing
                if (bytes > LinearLens.Analysis.ResourceEstimate.Available)
                    throw new LinearLensException($"--m {mm} --n {nn} --k {kk} needs about {LinearLens.Analysis.ResourceEstimate.Size(bytes)} of memory but {LinearLens.Analysis.ResourceEstimate.Size(LinearLens.Analysis.ResourceEstimate.Available)} are available; give smaller sizes");
            }
            if (p.GetValue(weights) is { } wName)
            {
                if (p.GetValue(reference) is not null) throw new LinearLensException("--reference and --weights do not combine: a system BLAS takes no quantized weight");
                var wt = WeightType(wName);
                // a quantized row is whole blocks: k (4096 when only --m or --n is given) must be a multiple of the block
                int kk = GemmBenchmark.CustomShape(p.GetValue(m), p.GetValue(n), p.GetValue(k), weights: true).k, block = wt.BlockElements();
                if ((p.GetValue(m) is not null || p.GetValue(n) is not null || p.GetValue(k) is not null) && kk % block != 0)
                    throw new LinearLensException($"--k {kk} is not a whole number of {wt.Name()} blocks of {block} weights; give a multiple of {block} (e.g. {(kk / block + 1) * block})");
                foreach (var (bf, q) in GemmBenchmark.RunWeights(t, wt, p.GetValue(m), p.GetValue(n), p.GetValue(k), s => stderr.WriteLine(s)))
                    stdout.WriteLine(string.Create(System.Globalization.CultureInfo.InvariantCulture,
                        $"{q.Name} {q.M}x{q.N}x{q.K}: {q.BStorage} {q.GFlops:F1} GFLOP/s, bf16 {bf.GFlops:F1} GFLOP/s, ratio {q.GFlops / bf.GFlops:F2} (by processor time {bf.CpuSeconds / q.CpuSeconds:F2})"));
                return 0;
            }
            var blas = p.GetValue(reference) is { } lib ? ReferenceBlas.Load(lib) : null;
            if (blas is not null) stderr.WriteLine($"reference: {blas.Description}");
            var results = GemmBenchmark.Run(t, p.GetValue(m), p.GetValue(n), p.GetValue(k), s => stderr.WriteLine(s), blas);
            foreach (var r in results) stdout.WriteLine(r.ToString());
            // each managed case is followed by its reference run: the ratio is what the targets are stated in
            for (int i = 0; blas is not null && i + 1 < results.Count; i += 2)
                stdout.WriteLine(string.Create(System.Globalization.CultureInfo.InvariantCulture,
                    $"LinearLens/OpenBLAS {results[i].M}x{results[i].N}x{results[i].K}: {results[i].GFlops / results[i + 1].GFlops:F2}"));
            return 0;
        });
        bench.Subcommands.Add(gemm);

        var input = new ModelInput(hub, stderr);
        var reps = new Option<int>("--repeat") { Description = "Timed repetitions", DefaultValueFactory = _ => 3 };
        var forward = new Command("forward", "Forward-pass tokens/s over a prompt, and decode tokens/s") { reps };
        input.AddTo(forward);
        forward.SetAction(p =>
        {
            if (p.GetValue(reps) < 1) throw new LinearLensException($"--repeat {p.GetValue(reps)} must be at least 1");
            using var ckpt = input.Open(p);
            var ids = input.Ids(p, ckpt);
            Checks.Memory(ckpt.Config, new LinearLens.Analysis.RunShape { Tokens = ids.Length, NewTokens = 16, ElementSize = input.IsFloat64(p) ? 8 : 4 });
            return input.IsFloat64(p) ? Forward<double>(ckpt, ids, p.GetValue(reps), stdout) : Forward<float>(ckpt, ids, p.GetValue(reps), stdout);
        });
        bench.Subcommands.Add(forward);
        return bench;
    }

    static DType WeightType(string s)
    {
        foreach (var t in Enum.GetValues<DType>())
            if (t != DType.F64 && string.Equals(t.Name(), s, StringComparison.OrdinalIgnoreCase)) return t;
        var names = Enum.GetValues<DType>().Where(t => t != DType.F64).Select(t => t.Name().ToLowerInvariant());
        throw new LinearLensException($"--weights '{s}' is not a weight storage type; use one of {string.Join(", ", names)}");
    }

    static DType Precision(string? s) => s switch
    {
        "float64" => DType.F64,
        "float32" => DType.F32,
        _ => throw new LinearLensException($"--dtype '{s}' is not a precision LinearLens computes in; use float64 or float32"),
    };

    static int Forward<T>(Checkpoint ckpt, int[] ids, int reps, TextWriter stdout) where T : unmanaged, IFloatingPointIeee754<T>
    {
        var model = new Transformer<T>(ckpt);
        model.Forward(ids); // warm-up
        double best = double.MaxValue;
        for (int r = 0; r < Math.Max(1, reps); r++)
        {
            var sw = Stopwatch.StartNew();
            model.Forward(ids);
            best = Math.Min(best, sw.Elapsed.TotalSeconds);
        }
        int decode = Math.Min(16, ckpt.Config.MaxPositions - ids.Length);
        var swd = Stopwatch.StartNew();
        var g = Generator.Greedy(model, ids, decode, stopAtEos: false);
        double decodeSeconds = swd.Elapsed.TotalSeconds - best;
        stdout.WriteLine($"{Transformer<T>.DTypeName} prefill {ids.Length} tokens: {ids.Length / best:F1} tokens/s ({best * 1000:F1} ms)");
        if (g.NewIds.Length > 1)
            stdout.WriteLine($"{Transformer<T>.DTypeName} decode: {(g.NewIds.Length - 1) / Math.Max(decodeSeconds, 1e-9):F1} tokens/s");
        return 0;
    }
}
