using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using LinearLens.Numerics;

namespace LinearLens.Tests.Numerics;

/// <summary>
/// <see cref="Gemm"/> with quantized operands (decoded inside the packing and streaming paths) against a naive product
/// over the decoded matrix: every path (packed fused and blocked, few rows, few columns), both transposes, edge tiles,
/// depths that are not a multiple of KC, strided views, and thread-count independence.
/// </summary>
public sealed unsafe class QuantGemmTests
{
    /// <summary>A matrix of random values: quantized (random valid blocks, rows along Cols) or dense float64/float32.</summary>
    sealed class Operand
    {
        public readonly byte[] Bytes;
        public readonly DType Type;
        public readonly int Rows, Cols;
        public readonly long Stride;
        public readonly double[] Dense; // element (r, c) at r·Cols + c, as the product must see it

        public Operand(Random rng, DType type, int rows, int cols, int padBlocks = 0)
        {
            Type = type; Rows = rows; Cols = cols; Stride = cols + padBlocks * type.BlockElements();
            Bytes = GC.AllocateArray<byte>((int)Math.Max(1, rows * type.ByteOffset(Stride)), pinned: true);
            Dense = new double[(long)rows * cols];
            if (type.IsQuantized()) QuantBlocks.Random(type, rows, Stride, (ulong)rng.Next(), Bytes);
            else
            {
                var d = MemoryMarshal.Cast<byte, double>(Bytes.AsSpan());
                var f = MemoryMarshal.Cast<byte, float>(Bytes.AsSpan());
                for (int i = 0; i < rows * Stride; i++)
                    if (type == DType.F64) d[i] = rng.NextDouble() * 2 - 1;
                    else f[i] = (float)(rng.NextDouble() * 2 - 1);
            }
            var v = View;
            for (int r = 0; r < rows; r++) v.DecodeRow(r, Dense.AsSpan(r * cols, cols));
        }

        public MatrixView View => new(Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(Bytes)), Type, Rows, Cols, Stride);
    }

    static double[] Multiply(Operand a, bool transA, Operand b, bool transB, bool f32, int m, int n, double beta, double[] c0)
    {
        var result = new double[c0.Length];
        if (f32)
        {
            var c = c0.Select(v => (float)v).ToArray();
            fixed (float* pc = c) Gemm.Multiply(a.View, transA, b.View, transB, pc, n, 1f, (float)beta);
            for (int i = 0; i < c.Length; i++) result[i] = c[i];
        }
        else
        {
            var c = (double[])c0.Clone();
            fixed (double* pc = c) Gemm.Multiply(a.View, transA, b.View, transB, pc, n, 1.0, beta);
            Array.Copy(c, result, c.Length);
        }
        return result;
    }

    /// <summary>C = op(A)·op(B) + β·C against the naive loop over the decoded operands (relative to Σ|a·b|).</summary>
    static void Check(Random rng, bool f32, int m, int n, int k, bool transA, DType aType, bool transB, DType bType, double beta = 0, int pad = 0)
    {
        DType dense = f32 ? DType.F32 : DType.F64;
        var a = transA ? new Operand(rng, aType, k, m, pad) : new Operand(rng, aType, m, k, pad);
        var b = transB ? new Operand(rng, bType, n, k, pad) : new Operand(rng, bType, k, n, pad);
        var c0 = new double[m * n];
        for (int i = 0; i < c0.Length; i++) c0[i] = beta == 0 ? double.NaN : (float)(rng.NextDouble() * 2 - 1);
        var got = Multiply(a, transA, b, transB, f32, m, n, beta, c0);
        double tol = f32 ? 2e-5 : 1e-13;
        string what = $"{(f32 ? "f32" : "f64")} {m}x{n}x{k} A={aType}{(transA ? "ᵀ" : "")} B={bType}{(transB ? "ᵀ" : "")} β={beta} pad={pad} ({dense} compute)";
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                double s = 0, abs = 0;
                for (int p = 0; p < k; p++)
                {
                    double x = transA ? a.Dense[(long)p * m + i] : a.Dense[(long)i * k + p];
                    double y = transB ? b.Dense[(long)j * k + p] : b.Dense[(long)p * n + j];
                    if (f32) { x = (float)x; }
                    s += x * y; abs += Math.Abs(x * y);
                }
                double cOld = c0[i * n + j];
                double expect = s + (beta == 0 ? 0 : beta * cOld);
                double scale = abs + (beta == 0 ? 0 : Math.Abs(beta * cOld)) + 1e-300;
                if (!(Math.Abs(got[i * n + j] - expect) <= tol * scale))
                    Assert.Fail($"{what}: C[{i},{j}] = {got[i * n + j]}, expected {expect} (error {Math.Abs(got[i * n + j] - expect) / scale:G3} of Σ|a·b|)");
            }
    }

    static readonly DType[] Types = QuantDecodeTests.QuantTypes;

    static int Depth(DType t, Random rng) => t.BlockElements() == 32 ? 32 * (1 + rng.Next(20)) : 256 * (1 + rng.Next(3));

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Weight_transposed_every_type_every_path(bool f32)
    {
        var rng = new Random(f32 ? 21 : 20);
        DType dense = f32 ? DType.F32 : DType.F64;
        foreach (var t in Types)
        {
            int k = Depth(t, rng);
            Check(rng, f32, 1, 37, k, false, dense, true, t);                        // decode: dot path
            Check(rng, f32, 3, 70, k, true, dense, true, t, beta: 0.5);              // few rows, A transposed
            Check(rng, f32, 23, 45, k, false, dense, true, t, pad: 1);               // packed, micro-panels fused, strided weight
            Check(rng, f32, 150, 19, k, false, dense, true, t);                      // packed, rows over one A block
            Check(rng, f32, 61, 3, k, false, dense, true, t, beta: -1);              // few columns: the weight's rows widened
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Weight_untransposed_every_type(bool f32)
    {
        var rng = new Random(f32 ? 31 : 30);
        DType dense = f32 ? DType.F32 : DType.F64;
        foreach (var t in Types)
        {
            int n = t.BlockElements() * (t.BlockElements() == 32 ? 5 : 2), k = 1 + rng.Next(300);
            Check(rng, f32, 2, n, k, false, dense, false, t);                        // few rows: axpy path over decoded row segments
            Check(rng, f32, 29, n, k, true, dense, false, t, beta: 1, pad: 1);       // packed: whole kc×nc blocks decoded row by row
            Check(rng, f32, 151, n, 37, false, dense, false, t);
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Quantized_first_operand(bool f32)
    {
        var rng = new Random(f32 ? 41 : 40);
        DType dense = f32 ? DType.F32 : DType.F64;
        foreach (var t in new[] { DType.Q4_K, DType.Q8_0, DType.Q5_1, DType.Q3_K, DType.IQ4_NL })
        {
            int k = Depth(t, rng), mq = 2 * t.BlockElements();
            Check(rng, f32, 33, 41, k, false, t, false, dense);                      // A rows along k: gathered panels
            Check(rng, f32, 4, 41, k, false, t, true, dense);                        // few rows of a quantized A
            Check(rng, f32, 70, 2, k, false, t, true, dense, beta: 0.25);            // few columns: dots over A's rows
            Check(rng, f32, mq, 19, 50, true, t, false, dense);                      // Aᵀ: A's blocks along m, staged
            Check(rng, f32, 45, 23, k, false, t, true, DType.Q8_0);                  // both quantized
        }
    }

    [Theory]
    [InlineData((int)GemmIsa.Scalar)]
    [InlineData((int)GemmIsa.Avx2)]
    [InlineData((int)GemmIsa.Avx512)]
    public void Every_kernel_family_packs_quantized_panels(int isaCode)
    {
        var isa = (GemmIsa)isaCode;
        if (isa == GemmIsa.Avx2 && !(System.Runtime.Intrinsics.X86.Avx2.IsSupported && System.Runtime.Intrinsics.X86.Fma.IsSupported)) return;
        var saved = Gemm.ForcedIsa;
        Gemm.ForcedIsa = isa; // thread-static: only products started by this thread are affected
        try
        {
            var rng = new Random(70);
            foreach (bool f32 in new[] { false, true })
            {
                DType dense = f32 ? DType.F32 : DType.F64;
                Check(rng, f32, 29, 37, 512, false, dense, true, DType.Q4_K);     // panels of NR weight rows (fused)
                Check(rng, f32, 13, 96, 41, false, dense, false, DType.Q8_0);     // whole kc×nc blocks staged
                Check(rng, f32, 64, 9, 40, true, DType.Q5_0, false, dense);       // Aᵀ staged
                Check(rng, f32, 1, 37, 768, false, dense, true, DType.Q4_K);      // one row: the fused dot kernel of this family
                Check(rng, f32, 1, 38, 160, false, dense, true, DType.Q8_0);
            }
        }
        finally { Gemm.ForcedIsa = saved; }
    }

    [Fact]
    public void Depth_not_a_multiple_of_KC_and_long_rows()
    {
        var rng = new Random(50);
        foreach (bool f32 in new[] { false, true })
        {
            Check(rng, f32, 19, 27, 32 * 41, false, f32 ? DType.F32 : DType.F64, true, DType.Q8_0);   // 1312 = 5·256 + 32
            Check(rng, f32, 1, 9, 32 * 41, false, f32 ? DType.F32 : DType.F64, true, DType.Q4_0);
            Check(rng, f32, 13, 11, 256 * 5, false, f32 ? DType.F32 : DType.F64, true, DType.Q6_K);
            Check(rng, f32, 7, 32 * 9, 300, false, f32 ? DType.F32 : DType.F64, false, DType.Q5_0);
        }
    }

    [Fact]
    public void Results_do_not_depend_on_the_thread_count()
    {
        var rng = new Random(60);
        int saved = Gemm.Threads;
        try
        {
            foreach (var (m, t, transB) in new[] { (1, DType.Q4_K, true), (3, DType.Q8_0, true), (64, DType.Q4_K, true), (200, DType.Q6_K, true), (2, DType.Q8_0, false), (40, DType.Q4_K, false) })
            {
                int n = 512, k = 1024;
                var a = new Operand(rng, DType.F64, m, k);
                var b = transB ? new Operand(rng, t, n, k) : new Operand(rng, t, k, n);
                var c0 = new double[m * n];
                Gemm.Threads = 1;
                var one = Multiply(a, false, b, transB, false, m, n, 0, c0);
                foreach (int threads in new[] { 2, 3, 8 })
                {
                    Gemm.Threads = threads;
                    var many = Multiply(a, false, b, transB, false, m, n, 0, c0);
                    Assert.True(one.AsSpan().SequenceEqual(many), $"{m} rows, {t}{(transB ? "ᵀ" : "")}: {threads} threads differ from 1");
                }
            }
        }
        finally { Gemm.Threads = saved; }
    }
}
