namespace LinearLens.Numerics;

/// <summary>
/// A read-only, row-major, strided matrix over unmanaged memory of any stored dtype: a memory-mapped weight,
/// or a pinned activation buffer. Element (r, c) lives at Data + (r·RowStride + c)·size for plain types; a row of a
/// block-quantized type is RowStride/BlockElements consecutive blocks (RowStride and Cols whole blocks, column slices
/// at block boundaries). The view owns nothing; whoever made it keeps the memory alive and pinned while it is used.
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
        int be = type.BlockElements();
        if (be > 1 && (cols % be != 0 || RowStride % be != 0))
            throw new ArgumentException($"a {type.Name()} matrix needs whole {be}-element blocks: {cols} columns, row stride {RowStride}");
    }

    public static MatrixView Of(double* data, int rows, int cols, long rowStride = -1) => new(data, DType.F64, rows, cols, rowStride);
    public static MatrixView Of(float* data, int rows, int cols, long rowStride = -1) => new(data, DType.F32, rows, cols, rowStride);

    /// <summary>Bytes from one row's start to the next.</summary>
    public long RowBytes => Type.ByteOffset(RowStride);

    /// <summary>Start of row r.</summary>
    public byte* Row(int r) => (byte*)Data + r * RowBytes;

    /// <summary>Rows [start, start+count) of this matrix.</summary>
    public MatrixView SliceRows(int start, int count)
    {
        if ((uint)start > (uint)Rows || (uint)count > (uint)(Rows - start)) throw new ArgumentOutOfRangeException(nameof(start));
        return new MatrixView((byte*)Data + start * RowBytes, Type, count, Cols, RowStride);
    }

    /// <summary>Columns [start, start+count) of this matrix (same row stride); for a quantized type both at block boundaries.</summary>
    public MatrixView SliceCols(int start, int count)
    {
        if ((uint)start > (uint)Cols || (uint)count > (uint)(Cols - start)) throw new ArgumentOutOfRangeException(nameof(start));
        int be = Type.BlockElements();
        if (start % be != 0 || count % be != 0)
            throw new ArgumentException($"columns {start}..{start + count} of a {Type.Name()} matrix do not start and end on {be}-element blocks");
        return new MatrixView((byte*)Data + Type.ByteOffset(start), Type, Rows, count, RowStride);
    }

    public double this[int r, int c]
    {
        get
        {
            if ((uint)r >= (uint)Rows || (uint)c >= (uint)Cols) throw new ArgumentOutOfRangeException(nameof(r), $"({r}, {c}) outside a {Rows}x{Cols} matrix");
            return Type.IsQuantized() ? DTypes.Read(Row(r), Type, c) : DTypes.Read(Data, Type, r * RowStride + c);
        }
    }

    /// <summary>Row r widened to double (exact): the embedding lookup of a stored, possibly quantized, table.</summary>
    public void DecodeRow(int row, Span<double> dst) { fixed (double* d = dst) DecodeRow(row, d, dst.Length); }

    /// <summary>Row r as float32 (exact for every stored type but F64, which is rounded).</summary>
    public void DecodeRow(int row, Span<float> dst) { fixed (float* d = dst) DecodeRow(row, d, dst.Length); }

    /// <summary>Row r widened to T (double or float) at dst, Cols values: the pointer form of the Span overloads, for generic kernels.</summary>
    public void DecodeRow<T>(int row, T* dst) where T : unmanaged => DecodeRow(row, dst, Cols);

    void DecodeRow<T>(int row, T* dst, int length) where T : unmanaged
    {
        if (typeof(T) != typeof(double) && typeof(T) != typeof(float)) throw new NotSupportedException($"rows decode to double or float, not {typeof(T).Name}");
        if ((uint)row >= (uint)Rows) throw new ArgumentOutOfRangeException(nameof(row), $"row {row} of a {Rows}-row matrix");
        if (length != Cols) throw new ArgumentException($"destination holds {length} values, the row {Cols}", nameof(length));
        if (Type.IsQuantized()) QuantDecode.Segment(Row(row), Type, 0, Cols, dst);
        else GemmConvert.Row(Row(row), Type, dst, Cols);
    }
}
