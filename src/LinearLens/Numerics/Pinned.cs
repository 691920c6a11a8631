using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace LinearLens.Numerics;

/// <summary>
/// Arrays on the pinned object heap: they never move, so the engine can hand their address to the GEMM as a
/// <see cref="MatrixView"/> while still using them as spans everywhere else.
/// </summary>
public static unsafe class Pinned
{
    public static T[] Array<T>(long length) where T : unmanaged => GC.AllocateArray<T>(checked((int)length), pinned: true);

    public static T* Pointer<T>(T[] pinnedArray) where T : unmanaged =>
        (T*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(pinnedArray));

    /// <summary>Rows×cols view of a pinned array starting at element offset, with the given row stride.</summary>
    public static MatrixView View<T>(T[] pinnedArray, int rows, int cols, long offset = 0, long rowStride = -1) where T : unmanaged
    {
        long stride = rowStride < 0 ? cols : rowStride;
        if (offset < 0 || (rows > 0 && offset + (rows - 1) * stride + cols > pinnedArray.Length))
            throw new ArgumentOutOfRangeException(nameof(offset), "view reaches past the end of the array");
        return new MatrixView(Pointer(pinnedArray) + offset, DTypeOf<T>(), rows, cols, stride);
    }

    public static DType DTypeOf<T>() where T : unmanaged =>
        typeof(T) == typeof(double) ? DType.F64 : typeof(T) == typeof(float) ? DType.F32
        : throw new NotSupportedException($"compute type {typeof(T).Name}");
}

/// <summary>The GEMM in the engine's compute type T (double or float).</summary>
public static unsafe class MatMul
{
    /// <summary>C (rows of length ldc starting at cOffset) = α·op(A)·op(B) + β·C.</summary>
    public static void Run<T>(MatrixView a, bool transA, MatrixView b, bool transB, T[] c, long cOffset, long ldc, double alpha = 1, double beta = 0)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int m = transA ? a.Cols : a.Rows, n = transB ? b.Rows : b.Cols;
        if (m > 0 && cOffset + (m - 1) * ldc + n > c.Length) throw new ArgumentOutOfRangeException(nameof(c), "C is too small");
        if (typeof(T) == typeof(double))
            Gemm.Multiply(a, transA, b, transB, (double*)Pinned.Pointer(c) + cOffset, ldc, alpha, beta);
        else
            Gemm.Multiply(a, transA, b, transB, (float*)Pinned.Pointer(c) + cOffset, ldc, (float)alpha, (float)beta);
    }

    /// <summary>Y[n×out] = X[n×in]·Wᵀ for a stored weight W [out×in] (a linear layer without bias).</summary>
    public static void Linear<T>(T[] x, int n, MatrixView w, T[] y) where T : unmanaged, IFloatingPointIeee754<T> =>
        Run(Pinned.View(x, n, w.Cols), false, w, true, y, 0, w.Rows);
}
