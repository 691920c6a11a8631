using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace LinearLens.Numerics;

/// <summary>
/// Fast decoding of quantized rows into float or double: the GEMM's packing and streaming paths call it on the block
/// range they need, so a quantized weight is never expanded in memory. With AVX2 each block's quants are unpacked 32 at a
/// time into bytes, widened to int32 and scaled as float32 — the same float32 multiply and subtract (one rounding each)
/// as <see cref="QuantReference"/>, so both give the same bits; float64 output is the exact widening of those floats.
/// </summary>
public static unsafe class QuantDecode
{
    static bool Simd => Avx2.IsSupported;

    /// <summary>
    /// Elements [start, start+count) of a quantized row beginning at <paramref name="row"/> (its block 0), widened to T.
    /// Whole blocks are decoded straight into <paramref name="dst"/>; a partial first or last block goes through a stack buffer.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization), SkipLocalsInit]
    public static void Segment<T>(byte* row, DType t, long start, int count, T* dst) where T : unmanaged
    {
        int be = t.BlockElements(), bb = t.BlockBytes();
        byte* b = row + start / be * bb;
        int off = (int)(start % be);
        T* stage = stackalloc T[256];
        if (off != 0)
        {
            Blocks(t, b, 1, stage);
            int n = Math.Min(be - off, count);
            new ReadOnlySpan<T>(stage + off, n).CopyTo(new Span<T>(dst, n));
            dst += n; count -= n; b += bb;
        }
        int whole = count / be;
        if (whole > 0) { Blocks(t, b, whole, dst); dst += (long)whole * be; count -= whole * be; b += (long)whole * bb; }
        if (count > 0)
        {
            Blocks(t, b, 1, stage);
            new ReadOnlySpan<T>(stage, count).CopyTo(new Span<T>(dst, count));
        }
    }

    /// <summary>Decodes <paramref name="blocks"/> consecutive blocks at <paramref name="b"/> into blocks·BlockElements values.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization), SkipLocalsInit]
    public static void Blocks<T>(DType t, byte* b, int blocks, T* y) where T : unmanaged
    {
        if (!Simd)
        {
            float* f = stackalloc float[256];
            int be = t.BlockElements(), bb = t.BlockBytes();
            for (int i = 0; i < blocks; i++, b += bb)
            {
                if (typeof(T) == typeof(float)) { QuantReference.DecodeBlock(t, b, (float*)y + (long)i * be); continue; }
                QuantReference.DecodeBlock(t, b, f);
                double* d = (double*)y + (long)i * be;
                for (int j = 0; j < be; j++) d[j] = f[j];
            }
            return;
        }
        switch (t)
        {
            case DType.Q4_0: for (int i = 0; i < blocks; i++, b += 18, y += 32) Q4_0(b, y); break;
            case DType.Q4_1: for (int i = 0; i < blocks; i++, b += 20, y += 32) Q4_1(b, y); break;
            case DType.Q5_0: for (int i = 0; i < blocks; i++, b += 22, y += 32) Q5_0(b, y); break;
            case DType.Q5_1: for (int i = 0; i < blocks; i++, b += 24, y += 32) Q5_1(b, y); break;
            case DType.Q8_0: for (int i = 0; i < blocks; i++, b += 34, y += 32) Q8_0(b, y); break;
            case DType.Q2_K: for (int i = 0; i < blocks; i++, b += 84, y += 256) Q2_K(b, y); break;
            case DType.Q3_K: for (int i = 0; i < blocks; i++, b += 110, y += 256) Q3_K(b, y); break;
            case DType.Q4_K: for (int i = 0; i < blocks; i++, b += 144, y += 256) Q4_K(b, y); break;
            case DType.Q5_K: for (int i = 0; i < blocks; i++, b += 176, y += 256) Q5_K(b, y); break;
            case DType.Q6_K: for (int i = 0; i < blocks; i++, b += 210, y += 256) Q6_K(b, y); break;
            case DType.IQ4_NL: for (int i = 0; i < blocks; i++, b += 18, y += 32) Iq4Nl(b, y); break;
            case DType.IQ4_XS: for (int i = 0; i < blocks; i++, b += 136, y += 256) Iq4Xs(b, y); break;
            default: throw new ArgumentException($"{t.Name()} is not a block-quantized type", nameof(t));
        }
    }

    // ---- fused dot products (one activation row against one quantized row, weights decoded in registers) ----

    /// <summary>Types with a fused dot kernel (<see cref="Dot4{T}"/>): the single-row decode path skips the staging buffer for them.</summary>
    public static bool HasFusedDot(DType t) => Avx2.IsSupported && Fma.IsSupported && t is DType.Q8_0 or DType.Q4_K;

    /// <summary>
    /// Σ_q x[q]·w[q] for four quantized rows of k weights at once (<paramref name="sums"/>[0..4)): each x vector is loaded
    /// once for the four rows. Each weight is the exact float32 of <see cref="QuantReference"/> (a min's subtraction as one
    /// fused multiply-subtract: the product d·sc·q is exact, so the one rounding is the same), widened to T and summed per
    /// row in two interleaved chains in a fixed order — a row's sum does not depend on the rows beside it, so a short group
    /// may repeat a row (computed and discarded) and any split into threads gives the same bits.
    /// </summary>
    public static void Dot4<T>(DType t, byte* r0, byte* r1, byte* r2, byte* r3, T* x, int k, T* sums) where T : unmanaged
        => Dot4(t, r0, r1, r2, r3, x, k, sums, HalfTable.Values);

    [MethodImpl(MethodImplOptions.AggressiveOptimization), SkipLocalsInit]
    static void Dot4<T>(DType t, byte* r0, byte* r1, byte* r2, byte* r3, T* x, int k, T* sums, float* h) where T : unmanaged
    {
        var z = Vector256<T>.Zero;
        Vector256<T> a0 = z, b0 = z, a1 = z, b1 = z, a2 = z, b2 = z, a3 = z, b3 = z;
        if (t == DType.Q8_0)
        {
            for (int q = 0; q < k; q += 32, r0 += 34, r1 += 34, r2 += 34, r3 += 34)
            {
                float d0 = h[*(ushort*)r0], d1 = h[*(ushort*)r1], d2 = h[*(ushort*)r2], d3 = h[*(ushort*)r3];
                for (int e = 0; e < 32; e += 16)
                {
                    T* xq = x + q + e;
                    Fma8(xq, Q8x8(r0 + 2 + e, d0), ref a0, ref b0); Fma8(xq, Q8x8(r1 + 2 + e, d1), ref a1, ref b1);
                    Fma8(xq, Q8x8(r2 + 2 + e, d2), ref a2, ref b2); Fma8(xq, Q8x8(r3 + 2 + e, d3), ref a3, ref b3);
                    xq += 8;
                    Fma8(xq, Q8x8(r0 + 10 + e, d0), ref b0, ref a0); Fma8(xq, Q8x8(r1 + 10 + e, d1), ref b1, ref a1);
                    Fma8(xq, Q8x8(r2 + 10 + e, d2), ref b2, ref a2); Fma8(xq, Q8x8(r3 + 10 + e, d3), ref b3, ref a3);
                }
            }
        }
        else
        {
            // per block, each row's 8 products d·scale and dmin·min, read back as broadcasts in the loop below
            float* sm = stackalloc float[64];
            var nibble = Vector256.Create(0xF);
            for (int q = 0; q < k; q += 256, r0 += 144, r1 += 144, r2 += 144, r3 += 144)
            {
                ScalesK4(r0, h, sm); ScalesK4(r1, h, sm + 16); ScalesK4(r2, h, sm + 32); ScalesK4(r3, h, sm + 48);
                for (int j = 0; j < 8; j += 2)
                {
                    int p = q + 32 * j; // low nibbles are weights p..p+31 (sub-block j), high nibbles p+32..p+63 (sub-block j+1)
                    // the sub-blocks' scales and mins broadcast once for the 32 weights of each row (16 registers)
                    Vector256<float> c0 = V(sm[j]), n0 = V(sm[8 + j]), e0 = V(sm[j + 1]), m0 = V(sm[9 + j]);
                    Vector256<float> c1 = V(sm[16 + j]), n1 = V(sm[24 + j]), e1 = V(sm[17 + j]), m1 = V(sm[25 + j]);
                    Vector256<float> c2 = V(sm[32 + j]), n2 = V(sm[40 + j]), e2 = V(sm[33 + j]), m2 = V(sm[41 + j]);
                    Vector256<float> c3 = V(sm[48 + j]), n3 = V(sm[56 + j]), e3 = V(sm[49 + j]), m3 = V(sm[57 + j]);
                    for (int g = 0; g < 32; g += 8)
                    {
                        T* xl = x + p + g, xh = xl + 32;
                        int o = 16 + 16 * j + g;
                        var w0 = Avx2.ConvertToVector256Int32(r0 + o); var w1 = Avx2.ConvertToVector256Int32(r1 + o);
                        Fma8(xl, Q4(Avx2.And(w0, nibble), c0, n0), ref a0, ref b0); Fma8(xh, Q4(Avx2.ShiftRightLogical(w0, 4), e0, m0), ref b0, ref a0);
                        Fma8(xl, Q4(Avx2.And(w1, nibble), c1, n1), ref a1, ref b1); Fma8(xh, Q4(Avx2.ShiftRightLogical(w1, 4), e1, m1), ref b1, ref a1);
                        var w2 = Avx2.ConvertToVector256Int32(r2 + o); var w3 = Avx2.ConvertToVector256Int32(r3 + o);
                        Fma8(xl, Q4(Avx2.And(w2, nibble), c2, n2), ref a2, ref b2); Fma8(xh, Q4(Avx2.ShiftRightLogical(w2, 4), e2, m2), ref b2, ref a2);
                        Fma8(xl, Q4(Avx2.And(w3, nibble), c3, n3), ref a3, ref b3); Fma8(xh, Q4(Avx2.ShiftRightLogical(w3, 4), e3, m3), ref b3, ref a3);
                    }
                }
            }
        }
        sums[0] = Vector256.Sum(a0 + b0); sums[1] = Vector256.Sum(a1 + b1); sums[2] = Vector256.Sum(a2 + b2); sums[3] = Vector256.Sum(a3 + b3);
    }

    /// <summary>
    /// <see cref="Dot4{T}"/> with AVX-512 (F): Q4_K weights as a lookup — a sub-block of 32 weights holds only 16
    /// values, so each row's table t[q] = round32(d·scale·q − dmin·min), q = 0..15, is one 16-lane fused multiply-subtract
    /// (the same single rounding as the reference), and each 8 (float64: vpermt2pd over the table widened to two registers)
    /// or 16 (float32: vpermps) weights are one permute by their nibbles. Q8_0 weights d·q: Σ x·q per block, then one
    /// multiply-add of the block sum by d (d·q is exact, so only the order of the sum changes; in float32 the sum's
    /// roundings stay at float32 level). Each row's sum is in a fixed order of its own, as in the AVX2 kernel, so a short
    /// group may repeat a row and any thread split gives the same bits.
    /// Block scales come from <see cref="HalfTable"/> as broadcast operands (no vector work per scale).
    /// Measured on Zen 4 (1×3072×1024): FMAs and permutes/zero-extends share a pipe, so a Q4_K weight (extract, look up,
    /// plus its sub-block's table) costs about twice bf16's (zero-extend, shift); with no block-scale work at all float32
    /// Q4_K would reach 0.63 of bf16. Slower variants, measured: quants read as whole words (or one broadcast load and
    /// variable shifts) with x reordered to match; scales of four rows decoded in registers; float32 lookups widened;
    /// weights computed per element (nibble to float by conversion or by OR-ing it into 1.0, then the same fused
    /// multiply-subtract); float64 tables built in double where no entry rounds.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization), SkipLocalsInit]
    public static void Dot4Avx512<T>(DType t, byte* r0, byte* r1, byte* r2, byte* r3, T* x, int k, T* sums) where T : unmanaged
    {
        float* h = HalfTable.Values;
        if (typeof(T) == typeof(double))
        {
            if (t == DType.Q8_0) Q8Dot4F64(r0, r1, r2, r3, (double*)x, k, (double*)sums, h);
            else K4Dot4F64(r0, r1, r2, r3, (double*)x, k, (double*)sums, h);
        }
        else
        {
            if (t == DType.Q8_0) Q8Dot4F32(r0, r1, r2, r3, (float*)x, k, (float*)sums, h);
            else K4Dot4F32(r0, r1, r2, r3, (float*)x, k, (float*)sums, h);
        }
    }

    /// <summary>
    /// Sub-block table t[q] = round32(scale·q − min) for q = 0..15 (<paramref name="iota"/>, a local of the caller: a
    /// property here is a call once the kernel's inlining budget is spent). The product is exact: one rounding.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector512<float> Table(float* scale, float* min, Vector512<float> iota)
        => Avx512F.FusedMultiplySubtract(Vector512.Create(*scale), iota, Vector512.Create(*min));

    [MethodImpl(MethodImplOptions.AggressiveOptimization), SkipLocalsInit]
    static void K4Dot4F64(byte* r0, byte* r1, byte* r2, byte* r3, double* x, int k, double* sums, float* h)
    {
        var z = Vector512<double>.Zero;
        Vector512<double> a0 = z, b0 = z, a1 = z, b1 = z, a2 = z, b2 = z, a3 = z, b3 = z;
        float* sm = stackalloc float[64];
        var iota = Vector512.Create(0f, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        for (int q = 0; q < k; q += 256, r0 += 144, r1 += 144, r2 += 144, r3 += 144)
        {
            ScalesK4(r0, h, sm); ScalesK4(r1, h, sm + 16); ScalesK4(r2, h, sm + 32); ScalesK4(r3, h, sm + 48);
            for (int j = 0; j < 8; j += 2)
            {
                // per row: sub-block j's table (low nibbles) and j+1's (high nibbles), each as two registers of doubles
                var t = Table(sm + j, sm + 8 + j, iota); var u = Table(sm + j + 1, sm + 9 + j, iota);
                Vector512<double> t0 = Wide(t.GetLower()), T0 = Wide(t.GetUpper()), u0 = Wide(u.GetLower()), U0 = Wide(u.GetUpper());
                t = Table(sm + 16 + j, sm + 24 + j, iota); u = Table(sm + 17 + j, sm + 25 + j, iota);
                Vector512<double> t1 = Wide(t.GetLower()), T1 = Wide(t.GetUpper()), u1 = Wide(u.GetLower()), U1 = Wide(u.GetUpper());
                t = Table(sm + 32 + j, sm + 40 + j, iota); u = Table(sm + 33 + j, sm + 41 + j, iota);
                Vector512<double> t2 = Wide(t.GetLower()), T2 = Wide(t.GetUpper()), u2 = Wide(u.GetLower()), U2 = Wide(u.GetUpper());
                t = Table(sm + 48 + j, sm + 56 + j, iota); u = Table(sm + 49 + j, sm + 57 + j, iota);
                Vector512<double> t3 = Wide(t.GetLower()), T3 = Wide(t.GetUpper()), u3 = Wide(u.GetLower()), U3 = Wide(u.GetUpper());
                double* xl = x + q + 32 * j;
                int o = 16 + 16 * j;
                for (int g = 0; g < 32; g += 8)
                {
                    var xv = Vector512.Load(xl + g); var xw = Vector512.Load(xl + 32 + g);
                    K4x8(r0 + o + g, xv, xw, t0, T0, u0, U0, ref a0, ref b0); K4x8(r1 + o + g, xv, xw, t1, T1, u1, U1, ref a1, ref b1);
                    K4x8(r2 + o + g, xv, xw, t2, T2, u2, U2, ref a2, ref b2); K4x8(r3 + o + g, xv, xw, t3, T3, u3, U3, ref a3, ref b3);
                }
            }
        }
        sums[0] = Vector512.Sum(a0 + b0); sums[1] = Vector512.Sum(a1 + b1); sums[2] = Vector512.Sum(a2 + b2); sums[3] = Vector512.Sum(a3 + b3);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector512<double> Wide(Vector256<float> f) => Avx512F.ConvertToVector512Double(f);

    /// <summary>
    /// Eight bytes of Q4_K quants: their low nibbles (weights of the low sub-block, table t|T) into a, their high nibbles
    /// (the next sub-block, table u|U) into b. vpermt2pd reads only an index's low 4 bits, so the low nibble needs no mask.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void K4x8(byte* qs, Vector512<double> xl, Vector512<double> xh, Vector512<double> t, Vector512<double> T,
                     Vector512<double> u, Vector512<double> U, ref Vector512<double> a, ref Vector512<double> b)
    {
        var idx = Avx512F.ConvertToVector512Int64(Vector128.CreateScalar(Unsafe.ReadUnaligned<ulong>(qs)).AsByte());
        a = Avx512F.FusedMultiplyAdd(xl, Avx512F.PermuteVar8x64x2(t, idx, T), a);
        b = Avx512F.FusedMultiplyAdd(xh, Avx512F.PermuteVar8x64x2(u, Avx512F.ShiftRightLogical(idx, 4), U), b);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization), SkipLocalsInit]
    static void K4Dot4F32(byte* r0, byte* r1, byte* r2, byte* r3, float* x, int k, float* sums, float* h)
    {
        var z = Vector512<float>.Zero;
        Vector512<float> a0 = z, b0 = z, a1 = z, b1 = z, a2 = z, b2 = z, a3 = z, b3 = z;
        float* sm = stackalloc float[64];
        var iota = Vector512.Create(0f, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        for (int q = 0; q < k; q += 256, r0 += 144, r1 += 144, r2 += 144, r3 += 144)
        {
            ScalesK4(r0, h, sm); ScalesK4(r1, h, sm + 16); ScalesK4(r2, h, sm + 32); ScalesK4(r3, h, sm + 48);
            for (int j = 0; j < 8; j += 2)
            {
                Vector512<float> t0 = Table(sm + j, sm + 8 + j, iota), u0 = Table(sm + j + 1, sm + 9 + j, iota);
                Vector512<float> t1 = Table(sm + 16 + j, sm + 24 + j, iota), u1 = Table(sm + 17 + j, sm + 25 + j, iota);
                Vector512<float> t2 = Table(sm + 32 + j, sm + 40 + j, iota), u2 = Table(sm + 33 + j, sm + 41 + j, iota);
                Vector512<float> t3 = Table(sm + 48 + j, sm + 56 + j, iota), u3 = Table(sm + 49 + j, sm + 57 + j, iota);
                float* xl = x + q + 32 * j;
                int o = 16 + 16 * j;
                for (int g = 0; g < 32; g += 16)
                {
                    var xv = Vector512.Load(xl + g); var xw = Vector512.Load(xl + 32 + g);
                    K4x16(r0 + o + g, xv, xw, t0, u0, ref a0, ref b0); K4x16(r1 + o + g, xv, xw, t1, u1, ref a1, ref b1);
                    K4x16(r2 + o + g, xv, xw, t2, u2, ref a2, ref b2); K4x16(r3 + o + g, xv, xw, t3, u3, ref a3, ref b3);
                }
            }
        }
        sums[0] = Vector512.Sum(a0 + b0); sums[1] = Vector512.Sum(a1 + b1); sums[2] = Vector512.Sum(a2 + b2); sums[3] = Vector512.Sum(a3 + b3);
    }

    /// <summary>Sixteen bytes of Q4_K quants: low nibbles looked up in t into a, high nibbles in u into b (vpermps reads 4 index bits).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void K4x16(byte* qs, Vector512<float> xl, Vector512<float> xh, Vector512<float> t, Vector512<float> u,
                      ref Vector512<float> a, ref Vector512<float> b)
    {
        var idx = Avx512F.ConvertToVector512Int32(Sse2.LoadVector128(qs));
        a = Avx512F.FusedMultiplyAdd(xl, Avx512F.PermuteVar16x32(t, idx), a);
        b = Avx512F.FusedMultiplyAdd(xh, Avx512F.PermuteVar16x32(u, Avx512F.ShiftRightLogical(idx, 4)), b);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization), SkipLocalsInit]
    static void Q8Dot4F64(byte* r0, byte* r1, byte* r2, byte* r3, double* x, int k, double* sums, float* h)
    {
        var z = Vector512<double>.Zero;
        Vector512<double> a0 = z, a1 = z, a2 = z, a3 = z;
        for (int q = 0; q < k; q += 32, r0 += 34, r1 += 34, r2 += 34, r3 += 34)
        {
            Vector512<double> x0 = Vector512.Load(x + q), x1 = Vector512.Load(x + q + 8), x2 = Vector512.Load(x + q + 16), x3 = Vector512.Load(x + q + 24);
            a0 = Avx512F.FusedMultiplyAdd(Q8Block(r0 + 2, x0, x1, x2, x3), Vector512.Create((double)h[*(ushort*)r0]), a0);
            a1 = Avx512F.FusedMultiplyAdd(Q8Block(r1 + 2, x0, x1, x2, x3), Vector512.Create((double)h[*(ushort*)r1]), a1);
            a2 = Avx512F.FusedMultiplyAdd(Q8Block(r2 + 2, x0, x1, x2, x3), Vector512.Create((double)h[*(ushort*)r2]), a2);
            a3 = Avx512F.FusedMultiplyAdd(Q8Block(r3 + 2, x0, x1, x2, x3), Vector512.Create((double)h[*(ushort*)r3]), a3);
        }
        sums[0] = Vector512.Sum(a0); sums[1] = Vector512.Sum(a1); sums[2] = Vector512.Sum(a2); sums[3] = Vector512.Sum(a3);
    }

    /// <summary>Σ x·q over one Q8_0 block's 32 quants, as 8 lanes (q widened straight to double).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector512<double> Q8Block(byte* qs, Vector512<double> x0, Vector512<double> x1, Vector512<double> x2, Vector512<double> x3)
    {
        var s = Avx512F.Multiply(x0, Q8x8d(qs));
        s = Avx512F.FusedMultiplyAdd(x1, Q8x8d(qs + 8), s);
        s = Avx512F.FusedMultiplyAdd(x2, Q8x8d(qs + 16), s);
        return Avx512F.FusedMultiplyAdd(x3, Q8x8d(qs + 24), s);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector512<double> Q8x8d(byte* qs) => Avx512F.ConvertToVector512Double(Avx2.ConvertToVector256Int32((sbyte*)qs));

    [MethodImpl(MethodImplOptions.AggressiveOptimization), SkipLocalsInit]
    static void Q8Dot4F32(byte* r0, byte* r1, byte* r2, byte* r3, float* x, int k, float* sums, float* h)
    {
        var z = Vector512<float>.Zero;
        Vector512<float> a0 = z, a1 = z, a2 = z, a3 = z, b0 = z, b1 = z, b2 = z, b3 = z;
        int q = 0;
        for (; q + 64 <= k; q += 64, r0 += 68, r1 += 68, r2 += 68, r3 += 68)
        {
            // each block's d is looked up by its bits and read as the multiply-add's broadcast operand: no vector work for it
            Vector512<float> xv = Vector512.Load(x + q), xw = Vector512.Load(x + q + 16);
            a0 = Avx512F.FusedMultiplyAdd(Q8Block(r0 + 2, xv, xw), Vector512.Create(h[*(ushort*)r0]), a0);
            a1 = Avx512F.FusedMultiplyAdd(Q8Block(r1 + 2, xv, xw), Vector512.Create(h[*(ushort*)r1]), a1);
            a2 = Avx512F.FusedMultiplyAdd(Q8Block(r2 + 2, xv, xw), Vector512.Create(h[*(ushort*)r2]), a2);
            a3 = Avx512F.FusedMultiplyAdd(Q8Block(r3 + 2, xv, xw), Vector512.Create(h[*(ushort*)r3]), a3);
            xv = Vector512.Load(x + q + 32); xw = Vector512.Load(x + q + 48);
            b0 = Avx512F.FusedMultiplyAdd(Q8Block(r0 + 36, xv, xw), Vector512.Create(h[*(ushort*)(r0 + 34)]), b0);
            b1 = Avx512F.FusedMultiplyAdd(Q8Block(r1 + 36, xv, xw), Vector512.Create(h[*(ushort*)(r1 + 34)]), b1);
            b2 = Avx512F.FusedMultiplyAdd(Q8Block(r2 + 36, xv, xw), Vector512.Create(h[*(ushort*)(r2 + 34)]), b2);
            b3 = Avx512F.FusedMultiplyAdd(Q8Block(r3 + 36, xv, xw), Vector512.Create(h[*(ushort*)(r3 + 34)]), b3);
        }
        if (q < k)
        {
            Vector512<float> xv = Vector512.Load(x + q), xw = Vector512.Load(x + q + 16);
            a0 = Avx512F.FusedMultiplyAdd(Q8Block(r0 + 2, xv, xw), Vector512.Create(h[*(ushort*)r0]), a0);
            a1 = Avx512F.FusedMultiplyAdd(Q8Block(r1 + 2, xv, xw), Vector512.Create(h[*(ushort*)r1]), a1);
            a2 = Avx512F.FusedMultiplyAdd(Q8Block(r2 + 2, xv, xw), Vector512.Create(h[*(ushort*)r2]), a2);
            a3 = Avx512F.FusedMultiplyAdd(Q8Block(r3 + 2, xv, xw), Vector512.Create(h[*(ushort*)r3]), a3);
        }
        sums[0] = Vector512.Sum(a0 + b0); sums[1] = Vector512.Sum(a1 + b1); sums[2] = Vector512.Sum(a2 + b2); sums[3] = Vector512.Sum(a3 + b3);
    }

    /// <summary>Σ x·q over one Q8_0 block's 32 quants in float32, as 16 lanes (the block's d is applied once to the sum).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector512<float> Q8Block(byte* qs, Vector512<float> x0, Vector512<float> x1)
        => Avx512F.FusedMultiplyAdd(x1, Q8x16(qs + 16), Avx512F.Multiply(x0, Q8x16(qs)));

    /// <summary>Sixteen Q8_0 quants as floats.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector512<float> Q8x16(byte* qs) => Avx512F.ConvertToVector512Single(Avx512F.ConvertToVector512Int32(Sse2.LoadVector128((sbyte*)qs)));

    /// <summary>Eight Q8_0 weights d·q (exact in float32).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<float> Q8x8(byte* qs, float d)
        => Avx.Multiply(Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32((sbyte*)qs)), Vector256.Create(d));

    /// <summary>Eight Q4_K weights q·(d·scale) − dmin·min, one rounding (the products from <see cref="ScalesK4"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<float> Q4(Vector256<int> q, Vector256<float> scale, Vector256<float> min)
        => Fma.MultiplySubtract(Avx.ConvertToVector256Single(q), scale, min);

    /// <summary>
    /// A Q4_K block's 8 six-bit scales and mins at once (<see cref="QuantReference.ScaleMinK4"/> on 32-bit words), stored as
    /// d·scale to sm[0..8) and dmin·min to sm[8..16) — the same float32 products as the scalar decoder's; d and dmin are
    /// looked up by their bits in <paramref name="h"/> (<see cref="HalfTable"/>) and used as broadcast operands.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void ScalesK4(byte* row, float* h, float* sm)
    {
        float d = h[Unsafe.ReadUnaligned<ushort>(row)], dmin = h[Unsafe.ReadUnaligned<ushort>(row + 2)];
        uint u0 = Unsafe.ReadUnaligned<uint>(row + 4), u1 = Unsafe.ReadUnaligned<uint>(row + 8), u2 = Unsafe.ReadUnaligned<uint>(row + 12);
        ulong scales = (u0 & 0x3F3F3F3F) | (ulong)((u2 & 0x0F0F0F0F) | ((u0 >> 2) & 0x30303030)) << 32;
        ulong mins = (u1 & 0x3F3F3F3F) | (ulong)(((u2 >> 4) & 0x0F0F0F0F) | ((u1 >> 2) & 0x30303030)) << 32;
        Avx.Store(sm, Avx.Multiply(Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(Vector128.CreateScalar(scales).AsByte())), Vector256.Create(d)));
        Avx.Store(sm + 8, Avx.Multiply(Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(Vector128.CreateScalar(mins).AsByte())), Vector256.Create(dmin)));
    }

    /// <summary>
    /// Eight products x[0..8)·w: float32 into <paramref name="a"/>; float64 (w widened exactly) its first four into
    /// <paramref name="a"/> and its last four into <paramref name="b"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Fma8<T>(T* x, Vector256<float> w, ref Vector256<T> a, ref Vector256<T> b) where T : unmanaged
    {
        if (typeof(T) == typeof(double))
        {
            a = Fma.MultiplyAdd(Avx.LoadVector256((double*)x), Avx.ConvertToVector256Double(w.GetLower()), a.AsDouble()).As<double, T>();
            b = Fma.MultiplyAdd(Avx.LoadVector256((double*)x + 4), Avx.ConvertToVector256Double(w.GetUpper()), b.AsDouble()).As<double, T>();
        }
        else a = Fma.MultiplyAdd(Avx.LoadVector256((float*)x), w, a.AsSingle()).As<float, T>();
    }

    // ---- AVX2 block decoders: quants as 32 signed bytes, then Emit32 (first 16 with s0/m0, last 16 with s1/m1) ----

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Emit8<T>(Vector128<sbyte> q8, Vector256<float> s, Vector256<float> m, T* y) where T : unmanaged
    {
        var f = Avx.Subtract(Avx.Multiply(Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(q8)), s), m);
        if (typeof(T) == typeof(float)) Avx.Store((float*)y, f);
        else
        {
            Avx.Store((double*)y, Avx.ConvertToVector256Double(f.GetLower()));
            Avx.Store((double*)y + 4, Avx.ConvertToVector256Double(f.GetUpper()));
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Emit32<T>(Vector256<sbyte> q, Vector256<float> s0, Vector256<float> m0, Vector256<float> s1, Vector256<float> m1, T* y)
        where T : unmanaged
    {
        var lo = q.GetLower(); var hi = q.GetUpper();
        Emit8(lo, s0, m0, y);
        Emit8(Sse2.ShiftRightLogical128BitLane(lo, 8), s0, m0, y + 8);
        Emit8(hi, s1, m1, y + 16);
        Emit8(Sse2.ShiftRightLogical128BitLane(hi, 8), s1, m1, y + 24);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Emit32<T>(Vector256<sbyte> q, Vector256<float> s, Vector256<float> m, T* y) where T : unmanaged => Emit32(q, s, m, s, m, y);

    static Vector256<float> V(float x) => Vector256.Create(x);

    /// <summary>Low and high nibbles of 16 bytes as 32 bytes: element j (j &lt; 16) from byte j's low nibble, 16 + j from its high one.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<sbyte> Nibbles16(byte* qs)
    {
        var raw = Sse2.LoadVector128(qs);
        var mask = Vector128.Create((byte)0x0F);
        return Vector256.Create(Sse2.And(raw, mask), Sse2.And(Sse2.ShiftRightLogical(raw.AsUInt16(), 4).AsByte(), mask)).AsSByte();
    }

    /// <summary>Bit e of a 32-bit word, for each of 32 elements e, as a byte 0x10 or 0 (Q5_0/Q5_1 fifth bits).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<sbyte> Bits32(uint qh)
    {
        var bytes = Vector256.Create(qh).AsByte();
        var spread = Avx2.Shuffle(bytes, Vector256.Create((byte)0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                                          2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3));
        var bit = Vector256.Create((byte)1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128,
                                   1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128);
        return Avx2.And(Avx2.CompareEqual(Avx2.And(spread, bit), bit), Vector256.Create((byte)0x10)).AsSByte();
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Q4_0<T>(byte* b, T* y) where T : unmanaged
        => Emit32(Avx2.Subtract(Nibbles16(b + 2), Vector256.Create((sbyte)8)), V(QuantReference.Half(b)), Vector256<float>.Zero, y);

    // y = q·d + m is computed as q·d − (−m): the same float32 addition.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Q4_1<T>(byte* b, T* y) where T : unmanaged
        => Emit32(Nibbles16(b + 4), V(QuantReference.Half(b)), V(-QuantReference.Half(b + 2)), y);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Q5_0<T>(byte* b, T* y) where T : unmanaged
    {
        var q = Avx2.Or(Nibbles16(b + 6), Bits32(Unsafe.ReadUnaligned<uint>(b + 2)));
        Emit32(Avx2.Subtract(q, Vector256.Create((sbyte)16)), V(QuantReference.Half(b)), Vector256<float>.Zero, y);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Q5_1<T>(byte* b, T* y) where T : unmanaged
    {
        var q = Avx2.Or(Nibbles16(b + 8), Bits32(Unsafe.ReadUnaligned<uint>(b + 4)));
        Emit32(q, V(QuantReference.Half(b)), V(-QuantReference.Half(b + 2)), y);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Q8_0<T>(byte* b, T* y) where T : unmanaged
    {
        var d = V(QuantReference.Half(b));
        sbyte* qs = (sbyte*)(b + 2);
        var z = Vector256<float>.Zero;
        Emit8(Sse2.LoadVector128(qs), d, z, y);
        Emit8(Sse2.LoadScalarVector128((long*)(qs + 8)).AsSByte(), d, z, y + 8);
        Emit8(Sse2.LoadScalarVector128((long*)(qs + 16)).AsSByte(), d, z, y + 16);
        Emit8(Sse2.LoadScalarVector128((long*)(qs + 24)).AsSByte(), d, z, y + 24);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Q2_K<T>(byte* b, T* y) where T : unmanaged
    {
        byte* sc = b, q = b + 16;
        float d = QuantReference.Half(b + 80), dmin = QuantReference.Half(b + 82);
        var three = Vector256.Create((byte)3);
        int s = 0;
        for (int n = 0; n < 2; n++, q += 32)
        {
            var raw = Avx.LoadVector256(q).AsUInt16();
            for (int shift = 0; shift < 8; shift += 2, s += 2, y += 32, raw = Avx2.ShiftRightLogical(raw, 2))
            {
                var v = Avx2.And(raw.AsByte(), three).AsSByte();
                Emit32(v, V(d * (sc[s] & 0xF)), V(dmin * (sc[s] >> 4)), V(d * (sc[s + 1] & 0xF)), V(dmin * (sc[s + 1] >> 4)), y);
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Q3_K<T>(byte* b, T* y) where T : unmanaged
    {
        byte* q = b + 32, sc = b + 96;
        float d = QuantReference.Half(b + 108);
        var hm = Avx.LoadVector256(b);
        var three = Vector256.Create((byte)3);
        var four = Vector256.Create((byte)4);
        var z = Vector256<float>.Zero;
        int s = 0, bit = 0;
        for (int n = 0; n < 2; n++, q += 32)
        {
            var raw = Avx.LoadVector256(q).AsUInt16();
            for (int shift = 0; shift < 8; shift += 2, s += 2, bit++, y += 32, raw = Avx2.ShiftRightLogical(raw, 2))
            {
                var low = Avx2.And(raw.AsByte(), three);
                var m = Vector256.Create((byte)(1 << bit));
                var set = Avx2.CompareEqual(Avx2.And(hm, m), m);
                var v = Avx2.Subtract(low, Avx2.AndNot(set, four)).AsSByte();
                Emit32(v, V(d * (QuantReference.ScaleQ3K(sc, s) - 32)), z, V(d * (QuantReference.ScaleQ3K(sc, s + 1) - 32)), z, y);
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Q4_K<T>(byte* b, T* y) where T : unmanaged
    {
        float d = QuantReference.Half(b), dmin = QuantReference.Half(b + 2);
        byte* sc = b + 4, q = b + 16;
        var mask = Vector256.Create((byte)0x0F);
        for (int j = 0; j < 8; j += 2, q += 32, y += 64)
        {
            var (s1, m1) = QuantReference.ScaleMinK4(sc, j); var (s2, m2) = QuantReference.ScaleMinK4(sc, j + 1);
            var raw = Avx.LoadVector256(q);
            var lo = Avx2.And(raw, mask).AsSByte();
            var hi = Avx2.And(Avx2.ShiftRightLogical(raw.AsUInt16(), 4).AsByte(), mask).AsSByte();
            Emit32(lo, V(d * s1), V(dmin * m1), y);
            Emit32(hi, V(d * s2), V(dmin * m2), y + 32);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Q5_K<T>(byte* b, T* y) where T : unmanaged
    {
        float d = QuantReference.Half(b), dmin = QuantReference.Half(b + 2);
        byte* sc = b + 4, q = b + 48;
        var qh = Avx.LoadVector256(b + 16);
        var mask = Vector256.Create((byte)0x0F);
        var sixteen = Vector256.Create((byte)0x10);
        for (int j = 0; j < 8; j += 2, q += 32, y += 64)
        {
            var (s1, m1) = QuantReference.ScaleMinK4(sc, j); var (s2, m2) = QuantReference.ScaleMinK4(sc, j + 1);
            var raw = Avx.LoadVector256(q);
            var u1 = Vector256.Create((byte)(1 << j)); var u2 = Vector256.Create((byte)(2 << j));
            var h1 = Avx2.And(Avx2.CompareEqual(Avx2.And(qh, u1), u1), sixteen);
            var h2 = Avx2.And(Avx2.CompareEqual(Avx2.And(qh, u2), u2), sixteen);
            var lo = Avx2.Or(Avx2.And(raw, mask), h1).AsSByte();
            var hi = Avx2.Or(Avx2.And(Avx2.ShiftRightLogical(raw.AsUInt16(), 4).AsByte(), mask), h2).AsSByte();
            Emit32(lo, V(d * s1), V(dmin * m1), y);
            Emit32(hi, V(d * s2), V(dmin * m2), y + 32);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Q6_K<T>(byte* b, T* y) where T : unmanaged
    {
        byte* ql = b, qh = b + 128;
        sbyte* sc = (sbyte*)(b + 192);
        float d = QuantReference.Half(b + 208);
        var mask = Vector256.Create((byte)0x0F);
        var hiMask = Vector256.Create((byte)0x30);
        var off = Vector256.Create((byte)32);
        var z = Vector256<float>.Zero;
        for (int n = 0; n < 2; n++, ql += 64, qh += 32, sc += 8, y += 128)
        {
            var l0 = Avx.LoadVector256(ql); var l1 = Avx.LoadVector256(ql + 32);
            var h = Avx.LoadVector256(qh).AsUInt16();
            // bits 2i..2i+1 of qh moved to bits 4..5 (16-bit shifts; the mask drops what crossed a byte)
            var h0 = Avx2.And(Avx2.ShiftLeftLogical(h, 4).AsByte(), hiMask);
            var h1 = Avx2.And(Avx2.ShiftLeftLogical(h, 2).AsByte(), hiMask);
            var h2 = Avx2.And(h.AsByte(), hiMask);
            var h3 = Avx2.And(Avx2.ShiftRightLogical(h, 2).AsByte(), hiMask);
            var q1 = Avx2.Subtract(Avx2.Or(Avx2.And(l0, mask), h0), off).AsSByte();
            var q2 = Avx2.Subtract(Avx2.Or(Avx2.And(l1, mask), h1), off).AsSByte();
            var q3 = Avx2.Subtract(Avx2.Or(Avx2.And(Avx2.ShiftRightLogical(l0.AsUInt16(), 4).AsByte(), mask), h2), off).AsSByte();
            var q4 = Avx2.Subtract(Avx2.Or(Avx2.And(Avx2.ShiftRightLogical(l1.AsUInt16(), 4).AsByte(), mask), h3), off).AsSByte();
            Emit32(q1, V(d * sc[0]), z, V(d * sc[1]), z, y);
            Emit32(q2, V(d * sc[2]), z, V(d * sc[3]), z, y + 32);
            Emit32(q3, V(d * sc[4]), z, V(d * sc[5]), z, y + 64);
            Emit32(q4, V(d * sc[6]), z, V(d * sc[7]), z, y + 96);
        }
    }

    static Vector256<sbyte> Iq4Table => Vector256.Create((sbyte)-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
                                                         -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Iq4Nl<T>(byte* b, T* y) where T : unmanaged
        => Emit32(Avx2.Shuffle(Iq4Table, Nibbles16(b + 2)), V(QuantReference.Half(b)), Vector256<float>.Zero, y);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Iq4Xs<T>(byte* b, T* y) where T : unmanaged
    {
        float d = QuantReference.Half(b); int sh = Unsafe.ReadUnaligned<ushort>(b + 2);
        byte* sl = b + 4, qs = b + 8;
        var table = Iq4Table;
        for (int ib = 0; ib < 8; ib++, qs += 16, y += 32)
        {
            int ls = ((sl[ib / 2] >> (4 * (ib % 2))) & 0xF) | (((sh >> (2 * ib)) & 3) << 4);
            Emit32(Avx2.Shuffle(table, Nibbles16(qs)), V(d * (ls - 32)), Vector256<float>.Zero, y);
        }
    }
}

/// <summary>
/// Every f16 bit pattern's float32 value (256 KB, pinned), so a kernel gets a block's scale by one scalar load and uses
/// it as a broadcast operand. Read by the callers of the kernels: a static read inside one puts a class-initialization
/// check (a possible call) in front of its loop, and the JIT then keeps the loop's accumulators in memory.
/// </summary>
internal static unsafe class HalfTable
{
    static readonly float[] Table = Build();
    internal static readonly float* Values = (float*)Unsafe.AsPointer(ref Table[0]);

    static float[] Build()
    {
        var t = Pinned.Array<float>(65536);
        for (int i = 0; i < 65536; i++) { ushort b = (ushort)i; t[i] = QuantReference.Half((byte*)&b); }
        return t;
    }
}
