namespace LinearLens.Numerics;

/// <summary>
/// A read-only, row-major, strided matrix over unmanaged memory of any stored dtype: a memory-mapped weight,
/// or a pinned activation buffer. Element (r, c) lives at Data + (r·RowStride + c)·size. The view owns nothing;
/// whoever made it keeps the memory alive and pinned while it is used.
/// </summary>
public readonly unsafe struct MatrixView
{
    public readonly void* Data;
    public readonly DType Type;
    public readonly int Rows;
    public readonly int Cols;
    public readonly long RowStride;

    public MatrixView(void* data, DType type, int rows, int cols, long rowStride = -1)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(rows);
        ArgumentOutOfRangeException.ThrowIfNegative(cols);
        Data = data; Type = type; Rows = rows; Cols = cols; RowStride = rowStride < 0 ? cols : rowStride;
        if (RowStride < cols && rows > 1) throw new ArgumentException("row stride shorter than a row");
    }

    public static MatrixView Of(double* data, int rows, int cols, long rowStride = -1) => new(data, DType.F64, rows, cols, rowStride);
    public static MatrixView Of(float* data, int rows, int cols, long rowStride = -1) => new(data, DType.F32, rows, cols, rowStride);

    /// <summary>Rows [start, start+count) of this matrix.</summary>
    public MatrixView SliceRows(int start, int count)
    {
        if ((uint)start > (uint)Rows || (uint)count > (uint)(Rows - start)) throw new ArgumentOutOfRangeException(nameof(start));
        return new MatrixView((byte*)Data + start * RowStride * Type.Size(), Type, count, Cols, RowStride);
    }

    /// <summary>Columns [start, start+count) of this matrix (same row stride).</summary>
    public MatrixView SliceCols(int start, int count)
    {
        if ((uint)start > (uint)Cols || (uint)count > (uint)(Cols - start)) throw new ArgumentOutOfRangeException(nameof(start));
        return new MatrixView((byte*)Data + (long)start * Type.Size(), Type, Rows, count, RowStride);
    }

    public double this[int r, int c] => DTypes.Read(Data, Type, r * RowStride + c);
}
