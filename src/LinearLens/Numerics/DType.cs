using System.Runtime.CompilerServices;

namespace LinearLens.Numerics;

/// <summary>
/// Element type of a stored tensor: the plain floating types (safetensors names F64, F32, BF16, F16) and the GGML
/// block-quantized types of GGUF files (llama.cpp names). A quantized row of `cols` elements is cols/BlockElements
/// consecutive blocks of BlockBytes bytes each; every decoded weight is an exact float32 value.
/// </summary>
public enum DType : byte
{
    F64, F32, BF16, F16,
    Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
    Q2_K, Q3_K, Q4_K, Q5_K, Q6_K,
    IQ4_NL, IQ4_XS,
}

public static class DTypes
{
    /// <summary>Bytes per element of a plain type. Quantized types have no per-element size: use <see cref="RowBytes"/>.</summary>
    public static int Size(this DType t) => t switch
    {
        DType.F64 => 8, DType.F32 => 4, DType.BF16 or DType.F16 => 2,
        _ => throw new InvalidOperationException($"{t.Name()} is block-quantized: it has no per-element size (use RowBytes)"),
    };

    public static bool IsQuantized(this DType t) => t >= DType.Q4_0;

    /// <summary>Elements per block (1 for plain types).</summary>
    public static int BlockElements(this DType t) => t switch
    {
        DType.F64 or DType.F32 or DType.BF16 or DType.F16 => 1,
        DType.Q4_0 or DType.Q4_1 or DType.Q5_0 or DType.Q5_1 or DType.Q8_0 or DType.IQ4_NL => 32,
        _ => 256,
    };

    /// <summary>Bytes per block (llama.cpp's block structs; for plain types the element size).</summary>
    public static int BlockBytes(this DType t) => t switch
    {
        DType.F64 => 8, DType.F32 => 4, DType.BF16 or DType.F16 => 2,
        DType.Q4_0 => 18, DType.Q4_1 => 20, DType.Q5_0 => 22, DType.Q5_1 => 24, DType.Q8_0 => 34,
        DType.Q2_K => 84, DType.Q3_K => 110, DType.Q4_K => 144, DType.Q5_K => 176, DType.Q6_K => 210,
        DType.IQ4_NL => 18, DType.IQ4_XS => 136,
        _ => throw new ArgumentOutOfRangeException(nameof(t)),
    };

    /// <summary>Bytes of one row of <paramref name="cols"/> elements; cols must be a multiple of the block size.</summary>
    public static long RowBytes(this DType t, long cols)
    {
        int be = t.BlockElements();
        if (cols % be != 0) throw new ArgumentException($"a {t.Name()} row of {cols} elements is not a whole number of {be}-element blocks");
        return cols / be * t.BlockBytes();
    }

    public static string Name(this DType t) => t switch
    {
        DType.F64 => "F64", DType.F32 => "F32", DType.BF16 => "BF16", DType.F16 => "F16",
        _ => t.ToString(),
    };

    /// <summary>bfloat16 is the upper half of an IEEE float32, so widening is exact.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Bf16ToFloat(ushort bits) => BitConverter.Int32BitsToSingle(bits << 16);

    /// <summary>Round-to-nearest-even float32 → bfloat16 (NaN kept quiet), as torch does.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ushort FloatToBf16(float f)
    {
        uint u = BitConverter.SingleToUInt32Bits(f);
        if (float.IsNaN(f)) return (ushort)((u >> 16) | 0x40);
        uint rounding = 0x7FFF + ((u >> 16) & 1);
        return (ushort)((u + rounding) >> 16);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float F16ToFloat(ushort bits) => (float)BitConverter.UInt16BitsToHalf(bits);

    /// <summary>Bytes from the start of storage to element <paramref name="i"/>; for a quantized type i must start a block.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static long ByteOffset(this DType t, long i) => t.IsQuantized() ? t.RowBytes(i) : i * t.Size();

    /// <summary>
    /// Reads element i of raw storage of type t, widened to double (exact for every stored type). For a quantized
    /// type the storage is consecutive blocks and the element's block is decoded.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe double Read(void* data, DType t, long i) => t switch
    {
        DType.F64 => ((double*)data)[i],
        DType.F32 => ((float*)data)[i],
        DType.BF16 => Bf16ToFloat(((ushort*)data)[i]),
        DType.F16 => F16ToFloat(((ushort*)data)[i]),
        _ => ReadQuantized((byte*)data, t, i),
    };

    static unsafe double ReadQuantized(byte* data, DType t, long i)
    {
        float* block = stackalloc float[256];
        int be = t.BlockElements();
        QuantReference.DecodeBlock(t, data + i / be * t.BlockBytes(), block);
        return block[i % be];
    }
}
