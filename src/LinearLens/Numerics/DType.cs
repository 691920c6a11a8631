using System.Runtime.CompilerServices;

namespace LinearLens.Numerics;

/// <summary>Element type of a stored tensor (safetensors names: F64, F32, BF16, F16).</summary>
public enum DType : byte { F64, F32, BF16, F16 }

public static class DTypes
{
    public static int Size(this DType t) => t switch { DType.F64 => 8, DType.F32 => 4, _ => 2 };

    public static string Name(this DType t) => t switch
    {
        DType.F64 => "F64", DType.F32 => "F32", DType.BF16 => "BF16", _ => "F16",
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

    /// <summary>Reads element i of raw storage of type t, widened to double (exact for every stored type).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe double Read(void* data, DType t, long i) => t switch
    {
        DType.F64 => ((double*)data)[i],
        DType.F32 => ((float*)data)[i],
        DType.BF16 => Bf16ToFloat(((ushort*)data)[i]),
        _ => F16ToFloat(((ushort*)data)[i]),
    };
}
