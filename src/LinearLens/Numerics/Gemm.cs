namespace LinearLens.Numerics;

/// <summary>
/// General matrix product C = α·op(A)·op(B) + β·C, op(X) = X or Xᵀ, in float64 or float32.
/// A and B may be stored as F64, F32, BF16 or F16 and are widened to the compute type while they are read.
/// C is row-major m×n with row stride ldc. With β = 0, C is overwritten (its old contents are never read).
/// </summary>
public static unsafe class Gemm
{
    /// <summary>Threads used by one product; results are reproducible for a given value.</summary>
    public static int Threads { get; set; } = Environment.ProcessorCount;

    public static void Multiply(MatrixView a, bool transA, MatrixView b, bool transB, double* c, long ldc, double alpha = 1.0, double beta = 0.0)
    {
        var (m, n, k) = Shape(a, transA, b, transB);
        // Simple correct version; replaced by the packed kernel.
        Parallel.For(0, m, new ParallelOptions { MaxDegreeOfParallelism = Threads }, i =>
        {
            for (int j = 0; j < n; j++)
            {
                double s = 0;
                for (int p = 0; p < k; p++)
                    s += (transA ? a[p, i] : a[i, p]) * (transB ? b[j, p] : b[p, j]);
                double* cij = c + i * ldc + j;
                *cij = beta == 0 ? alpha * s : alpha * s + beta * *cij;
            }
        });
    }

    public static void Multiply(MatrixView a, bool transA, MatrixView b, bool transB, float* c, long ldc, float alpha = 1f, float beta = 0f)
    {
        var (m, n, k) = Shape(a, transA, b, transB);
        Parallel.For(0, m, new ParallelOptions { MaxDegreeOfParallelism = Threads }, i =>
        {
            for (int j = 0; j < n; j++)
            {
                float s = 0;
                for (int p = 0; p < k; p++)
                    s += (float)(transA ? a[p, i] : a[i, p]) * (float)(transB ? b[j, p] : b[p, j]);
                float* cij = c + i * ldc + j;
                *cij = beta == 0 ? alpha * s : alpha * s + beta * *cij;
            }
        });
    }

    static (int m, int n, int k) Shape(MatrixView a, bool transA, MatrixView b, bool transB)
    {
        int m = transA ? a.Cols : a.Rows, k = transA ? a.Rows : a.Cols;
        int kb = transB ? b.Cols : b.Rows, n = transB ? b.Rows : b.Cols;
        if (k != kb) throw new ArgumentException($"inner dimensions differ: op(A) is {m}x{k}, op(B) is {kb}x{n}");
        return (m, n, k);
    }
}
