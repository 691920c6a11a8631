using System.Runtime.InteropServices;
using BenchmarkDotNet.Attributes;
using LinearLens.Numerics;

namespace LinearLens.Benchmarks;

/// <summary>
/// The <c>linearlens bench gemm</c> cases under BenchmarkDotNet: 2048³ with native operands, and the engine's projection
/// shapes (m×n×k = 7168×3072×1024 and 7168×1024×3072) with B a BF16 weight [n×k] used transposed.
/// </summary>
[MemoryDiagnoser]
[WarmupCount(1)]
[IterationCount(5)]
public unsafe class GemmBenchmarks
{
    public enum Compute { F64, F32 }

    public record struct Shape(int M, int N, int K, bool BBf16)
    {
        public override readonly string ToString() => $"{M}x{N}x{K}{(BBf16 ? " (B bf16)" : "")}";
    }

    [Params(Compute.F64, Compute.F32)]
    public Compute Type { get; set; }

    [ParamsSource(nameof(Shapes))]
    public Shape Case { get; set; }

    public static IEnumerable<Shape> Shapes =>
    [
        new(2048, 2048, 2048, false),
        new(7 * 1024, 3072, 1024, true),
        new(7 * 1024, 1024, 3072, true),
    ];

    byte* _a, _b, _c;
    MatrixView _av, _bv;

    [GlobalSetup]
    public void Setup()
    {
        var (m, n, k, bf16) = (Case.M, Case.N, Case.K, Case.BBf16);
        DType ct = Type == Compute.F64 ? DType.F64 : DType.F32;
        DType bt = bf16 ? DType.BF16 : ct;
        _a = (byte*)NativeMemory.AlignedAlloc((nuint)((long)m * k * ct.Size()), 64);
        _b = (byte*)NativeMemory.AlignedAlloc((nuint)((long)k * n * bt.Size()), 64);
        _c = (byte*)NativeMemory.AlignedAlloc((nuint)((long)m * n * ct.Size()), 64);
        var rng = new Random(42);
        for (long i = 0; i < (long)m * k; i++)
            if (ct == DType.F64) ((double*)_a)[i] = rng.NextDouble() - 0.5; else ((float*)_a)[i] = (float)(rng.NextDouble() - 0.5);
        for (long i = 0; i < (long)k * n; i++)
        {
            double v = rng.NextDouble() - 0.5;
            switch (bt)
            {
                case DType.F64: ((double*)_b)[i] = v; break;
                case DType.F32: ((float*)_b)[i] = (float)v; break;
                default: ((ushort*)_b)[i] = DTypes.FloatToBf16((float)v); break;
            }
        }
        _av = new MatrixView(_a, ct, m, k);
        _bv = bf16 ? new MatrixView(_b, DType.BF16, n, k) : new MatrixView(_b, ct, k, n);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        NativeMemory.AlignedFree(_a); NativeMemory.AlignedFree(_b); NativeMemory.AlignedFree(_c);
    }

    [Benchmark]
    public void Multiply()
    {
        if (Type == Compute.F64) Gemm.Multiply(_av, false, _bv, Case.BBf16, (double*)_c, Case.N);
        else Gemm.Multiply(_av, false, _bv, Case.BBf16, (float*)_c, Case.N);
    }
}
