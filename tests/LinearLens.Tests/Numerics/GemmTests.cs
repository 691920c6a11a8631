using System.Runtime.InteropServices;
using LinearLens.Numerics;

namespace LinearLens.Tests.Numerics;

/// <summary>Property tests of <see cref="Gemm"/> against a naive triple loop.</summary>
public sealed unsafe class GemmTests
{
    /// <summary>A matrix in pinned storage of any dtype; padding beyond Cols (row stride) is NaN so stray reads show.</summary>
    sealed class Stored
    {
        public readonly byte[] Bytes;
        public readonly DType Type;
        public readonly int Rows, Cols;
        public readonly long Stride;

        public Stored(Random rng, DType type, int rows, int cols, int pad)
        {
            Type = type; Rows = rows; Cols = cols; Stride = cols + pad;
            Bytes = GC.AllocateArray<byte>((int)Math.Max(1, rows * Stride * type.Size()), pinned: true);
            for (int r = 0; r < rows; r++)
                for (long c = 0; c < Stride; c++)
                    Set(r * Stride + c, c < cols ? rng.NextDouble() * 2 - 1 : double.NaN);
        }

        void Set(long i, double v)
        {
            fixed (byte* p = Bytes)
                switch (Type)
                {
                    case DType.F64: ((double*)p)[i] = v; break;
                    case DType.F32: ((float*)p)[i] = (float)v; break;
                    case DType.BF16: ((ushort*)p)[i] = DTypes.FloatToBf16((float)v); break;
                    default: ((ushort*)p)[i] = BitConverter.HalfToUInt16Bits((Half)v); break;
                }
        }

        public MatrixView View => new(System.Runtime.CompilerServices.Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(Bytes)), Type, Rows, Cols, Stride);

        /// <summary>Element (r, c) as the GEMM sees it in the given compute type.</summary>
        public double At(int r, int c, bool f32)
        {
            double v = View[r, c];
            return f32 ? (float)v : v;
        }
    }

    static readonly DType[] AllTypes = [DType.F64, DType.F32, DType.BF16, DType.F16];

    /// <summary>One random product checked against the naive loop; returns C as doubles for further checks.</summary>
    static double[] Check(Random rng, bool f32, int m, int n, int k, bool transA, bool transB, DType aType, DType bType,
        double alpha, double beta, int padA = 0, int padB = 0, int padC = 0, string? label = null)
    {
        var a = transA ? new Stored(rng, aType, k, m, padA) : new Stored(rng, aType, m, k, padA);
        var b = transB ? new Stored(rng, bType, n, k, padB) : new Stored(rng, bType, k, n, padB);
        long ldc = n + padC;
        var c0 = new double[Math.Max(1, m * ldc)];
        for (int i = 0; i < c0.Length; i++)
            c0[i] = beta == 0 ? double.NaN : (f32 ? (float)(rng.NextDouble() * 2 - 1) : rng.NextDouble() * 2 - 1);
        // Padding columns of C hold a sentinel that must survive.
        for (int i = 0; i < m; i++) for (long j = n; j < ldc; j++) c0[i * ldc + j] = 12345;

        double[] result = Run(a, transA, b, transB, f32, c0, ldc, alpha, beta);

        double tol = f32 ? 1e-5 : 1e-12;
        string what = label ?? $"{(f32 ? "f32" : "f64")} m={m} n={n} k={k} tA={transA} tB={transB} A={aType} B={bType} α={alpha} β={beta} pads={padA},{padB},{padC}";
        // Dense op(A) (m×k, row-major) and op(B)ᵀ (n×k) as the GEMM sees them, so the naive loop is a plain dot product.
        var opA = new double[(long)m * k];
        var opBt = new double[(long)n * k];
        for (int i = 0; i < m; i++) for (int p = 0; p < k; p++) opA[(long)i * k + p] = transA ? a.At(p, i, f32) : a.At(i, p, f32);
        for (int j = 0; j < n; j++) for (int p = 0; p < k; p++) opBt[(long)j * k + p] = transB ? b.At(j, p, f32) : b.At(p, j, f32);
        for (int i = 0; i < m; i++)
        {
            var ai = new ReadOnlySpan<double>(opA, i * k, k);
            for (int j = 0; j < n; j++)
            {
                var bj = new ReadOnlySpan<double>(opBt, j * k, k);
                double s = 0, abs = 0;
                for (int p = 0; p < ai.Length; p++)
                {
                    double t = ai[p] * bj[p];
                    s += t; abs += Math.Abs(t);
                }
                double cOld = c0[i * ldc + j];
                double expect = alpha * s + (beta == 0 ? 0 : beta * cOld);
                double scale = Math.Abs(alpha) * abs + (beta == 0 ? 0 : Math.Abs(beta * cOld)) + 1e-300;
                double got = result[i * ldc + j];
                if (!(Math.Abs(got - expect) <= tol * scale))
                    Assert.Fail($"{what}: C[{i},{j}] = {got}, expected {expect} (scale {scale})");
            }
            for (long j = n; j < ldc; j++)
                Assert.True(result[i * ldc + j] == 12345, $"{what}: padding of C row {i} was written");
        }
        return result;
    }

    /// <summary>Runs Gemm on a copy of c0 (converted to the compute type) and returns the result widened to double.</summary>
    static double[] Run(Stored a, bool transA, Stored b, bool transB, bool f32, double[] c0, long ldc, double alpha, double beta)
    {
        var result = new double[c0.Length];
        if (f32)
        {
            var c = c0.Select(v => (float)v).ToArray();
            fixed (float* pc = c) Gemm.Multiply(a.View, transA, b.View, transB, pc, ldc, (float)alpha, (float)beta);
            for (int i = 0; i < c.Length; i++) result[i] = c[i];
        }
        else
        {
            var c = (double[])c0.Clone();
            fixed (double* pc = c) Gemm.Multiply(a.View, transA, b.View, transB, pc, ldc, alpha, beta);
            Array.Copy(c, result, c.Length);
        }
        return result;
    }

    static readonly int[] OddSizes = [1, 2, 3, 5, 7, 17, 63, 65, 129, 257];

    static (double alpha, double beta) Scalars(Random rng) => rng.Next(4) switch
    {
        0 => (1.0, 0.0),
        1 => (-0.75, 0.0),
        2 => (1.5, 1.0),
        _ => (0.5, -2.0),
    };

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void RandomShapesAllTransposesMatchNaive(bool f32)
    {
        var rng = new Random(f32 ? 11 : 7);
        for (int trial = 0; trial < 48; trial++)
        {
            int m = OddSizes[rng.Next(OddSizes.Length)], n = OddSizes[rng.Next(OddSizes.Length)], k = OddSizes[rng.Next(OddSizes.Length)];
            // Keep the naive loop cheap.
            while ((long)m * n * k > 3_000_000) k = Math.Max(1, k / 4);
            bool tA = (trial & 1) != 0, tB = (trial & 2) != 0;
            var (alpha, beta) = Scalars(rng);
            DType at = rng.Next(3) == 0 ? AllTypes[rng.Next(4)] : (f32 ? DType.F32 : DType.F64);
            DType bt = rng.Next(3) == 0 ? AllTypes[rng.Next(4)] : (f32 ? DType.F32 : DType.F64);
            Check(rng, f32, m, n, k, tA, tB, at, bt, alpha, beta, rng.Next(2) * 3, rng.Next(2) * 5, rng.Next(2) * 2);
        }
    }

    [Theory]
    [InlineData(false, false, false)]
    [InlineData(false, true, true)]
    [InlineData(true, false, true)]
    [InlineData(true, true, false)]
    public void LargeOddShape(bool f32, bool transA, bool transB)
    {
        var rng = new Random(3);
        var (alpha, beta) = transA ? (1.0, 0.0) : (0.5, 1.0);
        Check(rng, f32, 300, 517, 1031, transA, transB, f32 ? DType.F32 : DType.F64, transB ? DType.BF16 : (f32 ? DType.F32 : DType.F64),
            alpha, beta, padA: 1, padB: 3, padC: 4);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void HalfPrecisionOperands(bool f32)
    {
        var rng = new Random(5);
        foreach (var (at, bt) in new[] { (DType.BF16, DType.BF16), (DType.F16, DType.F16), (DType.BF16, DType.F16), (DType.F16, DType.F64), (DType.F32, DType.BF16), (DType.F64, DType.F32) })
            foreach (bool tA in new[] { false, true })
                foreach (bool tB in new[] { false, true })
                {
                    Check(rng, f32, 37, 45, 77, tA, tB, at, bt, 1.0, 0.0, padA: 2, padB: 1);
                    Check(rng, f32, 70, 33, 300, tA, tB, at, bt, -1.25, 0.5);
                }
        // more rows than one A block: B packed a whole block at a time rather than panel by panel
        foreach (DType bt in new[] { DType.BF16, DType.F16, DType.F32 })
            foreach (bool tB in new[] { false, true })
                Check(rng, f32, 301, 70, 259, false, tB, f32 ? DType.F32 : DType.F64, bt, 1.0, 0.0, padB: 1);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void ThinProductsUseStreamingPaths(bool f32)
    {
        var rng = new Random(9);
        DType c = f32 ? DType.F32 : DType.F64;
        foreach (int m in new[] { 1, 2, 3, 4 })
            foreach (DType bt in AllTypes)
                foreach (bool tB in new[] { false, true })
                {
                    // few rows of op(A): single-token decode (tB) and transpose products (!tB)
                    Check(rng, f32, m, 1000 + m, 131, m == 3, tB, c, bt, 1.0, m == 2 ? 1.0 : 0.0, padA: 1, padB: 2, padC: 1);
                    // few columns of op(B) (A not transposed)
                    Check(rng, f32, 517, m, 93, false, tB, bt, c, 0.75, m == 1 ? 0.0 : -1.0, padA: 3, padB: 1);
                }
        // 1×1×k, k×1 dot products and k = 0.
        Check(rng, f32, 1, 1, 1000, false, true, c, DType.BF16, 1.0, 0.0);
        Check(rng, f32, 1, 1, 7, true, false, c, c, 2.0, 1.0);
        Check(rng, f32, 5, 6, 0, false, false, c, c, 1.0, 0.5);
        Check(rng, f32, 5, 6, 0, true, true, c, c, 1.0, 0.0);
    }

    [Fact]
    public void EdgeRowsOfAPanelMatchTheNaiveProduct()
    {
        // 64 = 10·6 + 4 rows (the frozen map's single-vector products) and 6q + 4 in general: the last 4 rows of a 6-row
        // panel take their own kernel; k > KC exercises its accumulate (β) path across depth blocks.
        var rng = new Random(29);
        foreach (var (m, n, k) in new[] { (64, 40, 600), (4, 24, 300), (10, 17, 257) })
            foreach (bool transB in new[] { false, true })
                foreach (var (alpha, beta) in new[] { (1.0, 0.0), (0.5, 0.25) })
                    Check(rng, false, m, n, k, false, transB, DType.F64, DType.BF16, alpha, beta);
    }

    [Fact]
    public void BetaZeroIgnoresNaNInC()
    {
        var rng = new Random(21);
        // Check fills C with NaN whenever β = 0; any read of C would poison the result.
        foreach (bool f32 in new[] { false, true })
            foreach (var (m, n, k) in new[] { (1, 300, 40), (2, 17, 9), (65, 3, 129), (129, 63, 257), (7, 9, 600) })
                Check(rng, f32, m, n, k, false, true, f32 ? DType.F32 : DType.F64, DType.BF16, 1.0, 0.0);
    }

    [Fact]
    public void MismatchedInnerDimensionThrows()
    {
        var rng = new Random(1);
        var a = new Stored(rng, DType.F64, 3, 4, 0);
        var b = new Stored(rng, DType.F64, 5, 6, 0);
        var c = new double[18];
        Assert.Throws<ArgumentException>(() => { fixed (double* pc = c) Gemm.Multiply(a.View, false, b.View, false, pc, 6); });
    }

    [Theory]
    [InlineData((int)GemmIsa.Scalar)]
    [InlineData((int)GemmIsa.Avx512)]
    [InlineData((int)GemmIsa.Avx2)]
    public void EveryKernelFamilyMatchesNaive(int isaCode)
    {
        var isa = (GemmIsa)isaCode;
        if (isa == GemmIsa.Avx2 && !(System.Runtime.Intrinsics.X86.Avx2.IsSupported && System.Runtime.Intrinsics.X86.Fma.IsSupported)) return;
        var saved = Gemm.ForcedIsa;
        Gemm.ForcedIsa = isa; // thread-static: only products started by this thread are affected
        try
        {
            var rng = new Random(31);
            foreach (bool f32 in new[] { false, true })
            {
                // The AVX-512 kernel runs emulated (slowly) where the hardware lacks it: keep sizes small.
                Check(rng, f32, 29, 37, 41, false, true, f32 ? DType.F32 : DType.F64, DType.BF16, 1.0, 0.0, padC: 3);
                Check(rng, f32, 13, 50, 300, true, false, DType.F16, f32 ? DType.F32 : DType.F64, -0.5, 2.0, padA: 2);
                // one activation row against bf16 weights: the dot path (its AVX-512 variant, a scalar tail after 32·31)
                Check(rng, f32, 1, 39, 1005, false, true, f32 ? DType.F32 : DType.F64, DType.BF16, 1.0, 0.0, padB: 3);
            }
        }
        finally { Gemm.ForcedIsa = saved; }
    }

    [Theory]
    [InlineData(false, 257, 517, 700)]
    [InlineData(true, 257, 517, 700)]
    [InlineData(false, 1, 20000, 300)]
    [InlineData(true, 1, 20000, 300)]
    [InlineData(false, 2000, 3, 300)]
    public void ResultsAreBitIdenticalAcrossRunsAndThreadCounts(bool f32, int m, int n, int k)
    {
        var rng = new Random(77);
        bool tB = true;
        var a = new Stored(rng, f32 ? DType.F32 : DType.F64, m, k, 1);
        var b = new Stored(rng, DType.BF16, n, k, 0);
        var c0 = new double[m * n];
        for (int i = 0; i < c0.Length; i++) c0[i] = rng.NextDouble();
        int saved = Gemm.Threads;
        try
        {
            Gemm.Threads = 1;
            var one = Run(a, false, b, tB, f32, c0, n, 1.25, 0.5);
            Gemm.Threads = 2;
            var two = Run(a, false, b, tB, f32, c0, n, 1.25, 0.5);
            var again = Run(a, false, b, tB, f32, c0, n, 1.25, 0.5);
            Gemm.Threads = 5;
            var five = Run(a, false, b, tB, f32, c0, n, 1.25, 0.5);
            for (int i = 0; i < one.Length; i++)
            {
                Assert.Equal(BitConverter.DoubleToInt64Bits(one[i]), BitConverter.DoubleToInt64Bits(two[i]));
                Assert.Equal(BitConverter.DoubleToInt64Bits(two[i]), BitConverter.DoubleToInt64Bits(again[i]));
                Assert.Equal(BitConverter.DoubleToInt64Bits(one[i]), BitConverter.DoubleToInt64Bits(five[i]));
            }
        }
        finally { Gemm.Threads = saved; }
    }

    [Fact]
    public void BenchmarkResultFormatsAsGflops()
    {
        var r = new GemmBenchResult("float64", 2048, 2048, 2048, 0.25, 75.34);
        Assert.Equal("float64 2048x2048x2048: 75.3 GFLOP/s", r.ToString());
        var q = new GemmBenchResult("float64", 7168, 3072, 1024, 0.5, 70.06, "bf16");
        Assert.Equal("float64 7168x3072x1024 (B bf16): 70.1 GFLOP/s", q.ToString());
    }
}
