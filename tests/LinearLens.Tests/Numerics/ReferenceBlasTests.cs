using LinearLens.Numerics;
using LinearLens.Tests.Support;

namespace LinearLens.Tests.Numerics;

/// <summary>A fact that needs a system OpenBLAS; skipped (with the reason) where none is installed.</summary>
public sealed class OpenBlasFactAttribute : FactAttribute
{
    public OpenBlasFactAttribute()
    {
        try { ReferenceBlas.Load("openblas"); }
        catch (LinearLensException) { Skip = "needs a system OpenBLAS (Debian: apt-get install libopenblas0), absent here"; }
    }
}

/// <summary>The reference BLAS behind <c>bench gemm --reference</c>.</summary>
public sealed unsafe class ReferenceBlasTests
{
    [OpenBlasFact]
    public void ComputesTheSameProductAsTheManagedGemm()
    {
        var blas = ReferenceBlas.Load("openblas");
        var rng = new Random(5);
        foreach (bool transB in new[] { false, true })
        {
            int m = 37, n = 29, k = 53;
            var a = Enumerable.Range(0, m * k).Select(_ => rng.NextDouble() - 0.5).ToArray();
            var b = Enumerable.Range(0, k * n).Select(_ => rng.NextDouble() - 0.5).ToArray();
            var cRef = new double[m * n];
            var c = new double[m * n];
            fixed (double* pa = a, pb = b, pr = cRef, pc = c)
            {
                blas.Multiply(true, m, n, k, pa, k, pb, transB ? k : n, transB, pr, n);
                Gemm.Multiply(new MatrixView(pa, DType.F64, m, k), false,
                    transB ? new MatrixView(pb, DType.F64, n, k) : new MatrixView(pb, DType.F64, k, n), transB, pc, n);
            }
            for (int i = 0; i < c.Length; i++) Assert.Equal(cRef[i], c[i], 1e-12);
        }
    }

    [OpenBlasFact]
    public void BenchmarkTimesEachCaseWithBoth()
    {
        var results = GemmBenchmark.TimeWith(DType.F32, 64, 48, 40, bBf16: true, ReferenceBlas.Load("openblas"));
        Assert.Equal(2, results.Length);
        Assert.Equal("float32", results[0].Name);
        Assert.Equal("openblas float32", results[1].Name);
        Assert.All(results, r => Assert.True(r.GFlops > 0 && double.IsFinite(r.GFlops)));
    }

    [Fact]
    public void AMissingLibraryIsOneClearError()
    {
        var r = CliRunner.Run("bench", "gemm", "--m", "8", "--reference", "/nonexistent/libopenblas.so");
        Assert.Equal(2, r.ExitCode);
        var line = Assert.Single(r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Contains("cannot load the reference BLAS '/nonexistent/libopenblas.so'", line);
        Assert.DoesNotContain("   at ", r.Stderr);
    }
}
