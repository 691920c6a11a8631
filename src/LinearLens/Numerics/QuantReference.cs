using System.Runtime.CompilerServices;

namespace LinearLens.Numerics;

/// <summary>
/// Scalar reference decoders of the GGML block-quantized types, written from llama.cpp's block structs (ggml-common.h)
/// and dequantize_row_* (ggml-quants.c). Each decodes one block into BlockElements floats with llama.cpp's float32
/// arithmetic in llama.cpp's order: the sub-block scale d·sc is a float32 product, the weight is (d·sc)·q, and a block
/// with mins subtracts the float32 product dmin·m (adds m for Q4_1/Q5_1) in one float32 rounding. Every product here is
/// exact (an f16 significand of 11 bits times small integers stays within float32's 24 bits), so the only rounding a
/// decoded weight ever sees is that of the min's subtraction — which the fast decoders (<see cref="QuantDecode"/>)
/// reproduce by computing the same float32 operations.
/// </summary>
public static unsafe class QuantReference
{
    /// <summary>llama.cpp's 16 non-linear levels of IQ4_NL and IQ4_XS.</summary>
    internal static ReadOnlySpan<sbyte> Iq4Levels => [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

    /// <summary>
    /// The f16 at p as float32, exactly, the same way as the vector loaders (<see cref="GemmLoad.F16x4(Vector128{int})"/>):
    /// a normal half's magnitude bits moved up 13 and rebiased as an integer, a subnormal one as its mantissa times 2⁻²⁴
    /// (no subnormal operand, which Zen 4 handles slowly), several times faster than the framework's Half conversion — one
    /// per 32 weights of Q8_0 is on the decoding's hot path. Inf and NaN go the framework's way.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static float Half(byte* p)
    {
        uint h = Unsafe.ReadUnaligned<ushort>(p), magnitude = h & 0x7FFF;
        if (magnitude >= 0x7C00) return (float)BitConverter.UInt16BitsToHalf((ushort)h);
        float f = magnitude < 0x400 ? magnitude * GemmLoad.HalfSubnormalUnit : BitConverter.UInt32BitsToSingle((magnitude << 13) + GemmLoad.HalfRebias);
        return BitConverter.UInt32BitsToSingle(BitConverter.SingleToUInt32Bits(f) | ((h & 0x8000) << 16));
    }

    /// <summary>
    /// The 6-bit scale and min of sub-block j (0..7) of a Q4_K/Q5_K block's 12 scale bytes: sub-blocks 0–3 keep theirs in
    /// the low 6 bits of bytes j and j+4; sub-blocks 4–7 have their low 4 bits in byte j+4's nibbles and their top 2
    /// bits in the top bits of bytes j−4 (scale) and j (min).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static (int scale, int min) ScaleMinK4(byte* s, int j) => j < 4
        ? (s[j] & 63, s[j + 4] & 63)
        : ((s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4));

    /// <summary>
    /// The 6-bit scale (0..63, before llama.cpp's −32) of sub-block j (0..15) of a Q3_K block's 12 scale bytes: low
    /// nibbles of bytes 0–7 for j &lt; 8 and their high nibbles for j ≥ 8; the top 2 bits from byte 8 + j%4, bit pair j/4.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int ScaleQ3K(byte* s, int j)
    {
        int low = j < 8 ? s[j] & 0xF : s[j - 8] >> 4;
        int high = (s[8 + (j & 3)] >> (2 * (j >> 2))) & 3;
        return low | (high << 4);
    }

    /// <summary>Decodes one block of type <paramref name="t"/> at <paramref name="b"/> into t.BlockElements() floats.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void DecodeBlock(DType t, byte* b, float* y)
    {
        switch (t)
        {
            case DType.Q4_0:
            {
                float d = Half(b); byte* qs = b + 2;
                for (int j = 0; j < 16; j++) { y[j] = ((qs[j] & 0xF) - 8) * d; y[j + 16] = ((qs[j] >> 4) - 8) * d; }
                return;
            }
            case DType.Q4_1:
            {
                float d = Half(b), m = Half(b + 2); byte* qs = b + 4;
                for (int j = 0; j < 16; j++) { y[j] = (qs[j] & 0xF) * d + m; y[j + 16] = (qs[j] >> 4) * d + m; }
                return;
            }
            case DType.Q5_0:
            {
                float d = Half(b); uint qh = Unsafe.ReadUnaligned<uint>(b + 2); byte* qs = b + 6;
                for (int j = 0; j < 16; j++)
                {
                    int h0 = (int)((qh >> j) << 4) & 0x10, h1 = (int)(qh >> (j + 12)) & 0x10;
                    y[j] = (((qs[j] & 0xF) | h0) - 16) * d;
                    y[j + 16] = (((qs[j] >> 4) | h1) - 16) * d;
                }
                return;
            }
            case DType.Q5_1:
            {
                float d = Half(b), m = Half(b + 2); uint qh = Unsafe.ReadUnaligned<uint>(b + 4); byte* qs = b + 8;
                for (int j = 0; j < 16; j++)
                {
                    int h0 = (int)((qh >> j) << 4) & 0x10, h1 = (int)(qh >> (j + 12)) & 0x10;
                    y[j] = ((qs[j] & 0xF) | h0) * d + m;
                    y[j + 16] = ((qs[j] >> 4) | h1) * d + m;
                }
                return;
            }
            case DType.Q8_0:
            {
                float d = Half(b); sbyte* qs = (sbyte*)(b + 2);
                for (int j = 0; j < 32; j++) y[j] = qs[j] * d;
                return;
            }
            case DType.Q2_K:
            {
                // scales[16] (low nibble: scale, high: min), qs[64] (2 bits each), d, dmin
                byte* sc = b, q = b + 16;
                float d = Half(b + 80), dmin = Half(b + 82);
                int s = 0;
                for (int n = 0; n < 256; n += 128, q += 32)
                    for (int shift = 0; shift < 8; shift += 2)
                        for (int half = 0; half < 2; half++, s++)
                        {
                            float dl = d * (sc[s] & 0xF), ml = dmin * (sc[s] >> 4);
                            for (int l = 0; l < 16; l++) *y++ = dl * ((q[l + 16 * half] >> shift) & 3) - ml;
                        }
                return;
            }
            case DType.Q3_K:
            {
                // hmask[32] (third bit, clear = subtract 4), qs[64] (low 2 bits), scales[12] (6 bits, −32), d
                byte* hm = b, q = b + 32, sc = b + 96;
                float d = Half(b + 108);
                int s = 0, bit = 0;
                for (int n = 0; n < 256; n += 128, q += 32)
                    for (int shift = 0; shift < 8; shift += 2, bit++)
                        for (int half = 0; half < 2; half++, s++)
                        {
                            float dl = d * (ScaleQ3K(sc, s) - 32);
                            for (int l = 0; l < 16; l++)
                            {
                                int i = l + 16 * half;
                                *y++ = dl * (((q[i] >> shift) & 3) - ((hm[i] >> bit & 1) != 0 ? 0 : 4));
                            }
                        }
                return;
            }
            case DType.Q4_K:
            {
                // d, dmin, scales[12] (8 × 6-bit scale and min), qs[128]: 64 weights per 32 bytes (low nibbles, then high)
                float d = Half(b), dmin = Half(b + 2);
                byte* sc = b + 4, q = b + 16;
                for (int j = 0; j < 8; j += 2, q += 32)
                {
                    var (s1, m1) = ScaleMinK4(sc, j); var (s2, m2) = ScaleMinK4(sc, j + 1);
                    float d1 = d * s1, n1 = dmin * m1, d2 = d * s2, n2 = dmin * m2;
                    for (int l = 0; l < 32; l++) *y++ = d1 * (q[l] & 0xF) - n1;
                    for (int l = 0; l < 32; l++) *y++ = d2 * (q[l] >> 4) - n2;
                }
                return;
            }
            case DType.Q5_K:
            {
                // d, dmin, scales[12], qh[32] (fifth bits: bit 2c for low nibbles of chunk c, 2c+1 for high), qs[128]
                float d = Half(b), dmin = Half(b + 2);
                byte* sc = b + 4, qh = b + 16, q = b + 48;
                for (int j = 0; j < 8; j += 2, q += 32)
                {
                    var (s1, m1) = ScaleMinK4(sc, j); var (s2, m2) = ScaleMinK4(sc, j + 1);
                    float d1 = d * s1, n1 = dmin * m1, d2 = d * s2, n2 = dmin * m2;
                    for (int l = 0; l < 32; l++) *y++ = d1 * ((q[l] & 0xF) + ((qh[l] >> j & 1) << 4)) - n1;
                    for (int l = 0; l < 32; l++) *y++ = d2 * ((q[l] >> 4) + ((qh[l] >> (j + 1) & 1) << 4)) - n2;
                }
                return;
            }
            case DType.Q6_K:
            {
                // ql[128] (low 4 bits), qh[64] (high 2 bits), scales[16] (int8, one per 16 weights), d; weight (d·sc)·(q − 32)
                byte* ql = b, qh = b + 128;
                sbyte* sc = (sbyte*)(b + 192);
                float d = Half(b + 208);
                for (int n = 0; n < 256; n += 128, ql += 64, qh += 32, sc += 8, y += 128)
                    for (int l = 0; l < 32; l++)
                    {
                        int s = l / 16;
                        int q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) - 32;
                        int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                        int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                        int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                        y[l] = d * sc[s] * q1;
                        y[l + 32] = d * sc[s + 2] * q2;
                        y[l + 64] = d * sc[s + 4] * q3;
                        y[l + 96] = d * sc[s + 6] * q4;
                    }
                return;
            }
            case DType.IQ4_NL:
            {
                float d = Half(b); byte* qs = b + 2;
                for (int j = 0; j < 16; j++) { y[j] = d * Iq4Levels[qs[j] & 0xF]; y[j + 16] = d * Iq4Levels[qs[j] >> 4]; }
                return;
            }
            case DType.IQ4_XS:
            {
                // d, scales_h (2 high bits per sub-block), scales_l[4] (nibbles), qs[128]; 8 sub-blocks of 32 as IQ4_NL
                float d = Half(b); int sh = Unsafe.ReadUnaligned<ushort>(b + 2);
                byte* sl = b + 4, qs = b + 8;
                for (int ib = 0; ib < 8; ib++, qs += 16, y += 32)
                {
                    int ls = ((sl[ib / 2] >> (4 * (ib % 2))) & 0xF) | (((sh >> (2 * ib)) & 3) << 4);
                    float dl = d * (ls - 32);
                    for (int j = 0; j < 16; j++) { y[j] = dl * Iq4Levels[qs[j] & 0xF]; y[j + 16] = dl * Iq4Levels[qs[j] >> 4]; }
                }
                return;
            }
            default:
                throw new ArgumentException($"{t.Name()} is not a block-quantized type", nameof(t));
        }
    }
}
