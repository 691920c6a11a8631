using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace LinearLens.Numerics;

/// <summary>Per-thread scratch memory for <see cref="Gemm"/>: one 64-byte aligned native block, grown on demand, freed with its thread.</summary>
internal sealed unsafe class GemmScratch
{
    [ThreadStatic] static GemmScratch? t_current;

    /// <summary>Slot for the packing/work buffers of one task.</summary>
    public const int Work = 0;
    /// <summary>Slot for operands converted once by the calling thread and read by every task.</summary>
    public const int Shared = 1;

    readonly byte*[] _ptr = new byte*[2];
    readonly nuint[] _size = new nuint[2];

    public static GemmScratch Current => t_current ??= new GemmScratch();

    /// <summary>A block of at least <paramref name="bytes"/> bytes in <paramref name="slot"/>; contents undefined; valid until the next Get of that slot on this thread.</summary>
    public byte* Get(int slot, long bytes)
    {
        if ((nuint)bytes > _size[slot])
        {
            nuint size = Math.Max((nuint)bytes, _size[slot] * 3 / 2);
            size = (size + 4095) & ~(nuint)4095;
            if (_ptr[slot] != null) NativeMemory.AlignedFree(_ptr[slot]);
            _ptr[slot] = null; _size[slot] = 0;
            bool huge = size >= HugePage && UseHugePages;
            if (huge) size = (size + HugePage - 1) & ~(nuint)(HugePage - 1);
            _ptr[slot] = (byte*)NativeMemory.AlignedAlloc(size, huge ? HugePage : 64);
            _size[slot] = size;
            if (huge) AdviseHuge(_ptr[slot], size);
        }
        return _ptr[slot];
    }

    const nuint HugePage = 2 << 20;
    static readonly bool UseHugePages = OperatingSystem.IsLinux();
    static bool s_adviseFailed;

    [DllImport("libc", EntryPoint = "madvise")]
    static extern int Madvise(void* addr, nuint length, int advice);

    /// <summary>Asks Linux for transparent huge pages (MADV_HUGEPAGE) on a pack buffer: fewer TLB misses while panels stream.</summary>
    static void AdviseHuge(void* p, nuint size)
    {
        if (s_adviseFailed) return;
        try { Madvise(p, size, 14); }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { s_adviseFailed = true; }
    }

    ~GemmScratch()
    {
        for (int i = 0; i < _ptr.Length; i++)
            if (_ptr[i] != null) NativeMemory.AlignedFree(_ptr[i]);
    }
}

/// <summary>Widening of stored elements (F64/F32/BF16/F16) to the compute type, vectorized where the hardware allows.</summary>
internal static unsafe class GemmConvert
{

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Row<T>(void* src, DType t, T* dst, int n) where T : unmanaged
    {
        if (typeof(T) == typeof(double)) ToDouble(src, t, (double*)dst, n);
        else ToFloat(src, t, (float*)dst, n);
    }

    /// <summary>True when elements of type <paramref name="t"/> already are <typeparamref name="T"/> (no conversion needed).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsNative<T>(DType t) where T : unmanaged
        => typeof(T) == typeof(double) ? t == DType.F64 : t == DType.F32;

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void ToFloat(void* src, DType t, float* dst, int n)
    {
        int i = 0;
        switch (t)
        {
            case DType.F32:
                Buffer.MemoryCopy(src, dst, (long)n * 4, (long)n * 4);
                return;
            case DType.F64:
            {
                double* s = (double*)src;
                if (Avx.IsSupported)
                    for (; i + 8 <= n; i += 8)
                    {
                        var lo = Avx.ConvertToVector128Single(Avx.LoadVector256(s + i));
                        var hi = Avx.ConvertToVector128Single(Avx.LoadVector256(s + i + 4));
                        Avx.Store(dst + i, Vector256.Create(lo, hi));
                    }
                for (; i < n; i++) dst[i] = (float)s[i];
                return;
            }
            case DType.BF16:
            {
                ushort* s = (ushort*)src;
                if (Avx2.IsSupported)
                {
                    for (; i + 16 <= n; i += 16)
                    {
                        Avx.Store(dst + i, GemmLoad.Bf16x8(s + i));
                        Avx.Store(dst + i + 8, GemmLoad.Bf16x8(s + i + 8));
                    }
                    for (; i + 8 <= n; i += 8) Avx.Store(dst + i, GemmLoad.Bf16x8(s + i));
                }
                for (; i < n; i++) dst[i] = BitConverter.Int32BitsToSingle(s[i] << 16);
                return;
            }
            default:
            {
                ushort* s = (ushort*)src;
                if (Avx2.IsSupported)
                    for (; i + 8 <= n; i += 8) Avx.Store(dst + i, GemmLoad.F16x8(s + i));
                for (; i < n; i++) dst[i] = (float)BitConverter.UInt16BitsToHalf(s[i]);
                return;
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void ToDouble(void* src, DType t, double* dst, int n)
    {
        int i = 0;
        switch (t)
        {
            case DType.F64:
                Buffer.MemoryCopy(src, dst, (long)n * 8, (long)n * 8);
                return;
            case DType.F32:
            {
                float* s = (float*)src;
                if (Avx.IsSupported)
                    for (; i + 4 <= n; i += 4) Avx.Store(dst + i, Avx.ConvertToVector256Double(Sse.LoadVector128(s + i)));
                for (; i < n; i++) dst[i] = s[i];
                return;
            }
            case DType.BF16:
            {
                ushort* s = (ushort*)src;
                if (Avx2.IsSupported)
                    for (; i + 8 <= n; i += 8)
                    {
                        var f = GemmLoad.Bf16x8(s + i);
                        Avx.Store(dst + i, Avx.ConvertToVector256Double(f.GetLower()));
                        Avx.Store(dst + i + 4, Avx.ConvertToVector256Double(f.GetUpper()));
                    }
                for (; i < n; i++) dst[i] = BitConverter.Int32BitsToSingle(s[i] << 16);
                return;
            }
            default:
            {
                ushort* s = (ushort*)src;
                if (Avx2.IsSupported)
                    for (; i + 8 <= n; i += 8)
                    {
                        var f = GemmLoad.F16x8(s + i);
                        Avx.Store(dst + i, Avx.ConvertToVector256Double(f.GetLower()));
                        Avx.Store(dst + i + 4, Avx.ConvertToVector256Double(f.GetUpper()));
                    }
                for (; i < n; i++) dst[i] = (float)BitConverter.UInt16BitsToHalf(s[i]);
                return;
            }
        }
    }
}

/// <summary>
/// Packing of operand blocks into the micro-kernel's layout: panels of R (= MR for A, NR for B) rows/columns,
/// element (p, r) of a panel at panel[p·R + r], zero-padded to a full R. Conversion to T happens here.
/// </summary>
internal static unsafe class GemmPack
{
    /// <summary>
    /// Packs a kc×cnt slice in which the panel's inner index r is contiguous in memory:
    /// element (p, r) at src + (p·stride + r)·size. (A transposed, B not transposed.)
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Contiguous<T>(byte* src, DType t, long stride, int kc, int cnt, int R, T* dst) where T : unmanaged
    {
        long rowBytes = stride * t.Size();
        if (IsNativeFull<T>(t, cnt, R))
        {
            int bytes = R * sizeof(T);
            for (int p = 0; p < kc; p++, src += rowBytes, dst += R)
                Buffer.MemoryCopy(src, dst, bytes, bytes);
            return;
        }
        if (typeof(T) == typeof(double) && t != DType.F64 && cnt == R && R % 4 == 0 && Avx2.IsSupported)
        {
            // a weight used untransposed (the VJP's products): R elements per row of the panel, widened in registers
            WidenRows(src, t, rowBytes, kc, R, (double*)dst);
            return;
        }
        if (typeof(T) == typeof(float) && t is DType.BF16 or DType.F16 && cnt == R && R % 8 == 0 && Avx2.IsSupported)
        {
            float* d = (float*)dst;
            for (int p = 0; p < kc; p++, src += rowBytes, d += R)
                for (int r = 0; r < R; r += 8)
                    Avx.Store(d + r, t == DType.BF16 ? GemmLoad.Bf16x8((ushort*)src + r) : GemmLoad.F16x8((ushort*)src + r));
            return;
        }
        for (int p = 0; p < kc; p++, src += rowBytes, dst += R)
        {
            GemmConvert.Row(src, t, dst, cnt);
            for (int r = cnt; r < R; r++) dst[r] = default;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static bool IsNativeFull<T>(DType t, int cnt, int R) where T : unmanaged => cnt == R && GemmConvert.IsNative<T>(t);

    /// <summary>Four rows' next four doubles, written as four columns of a panel with row length R (AVX 4×4 transpose).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Transpose4x4(double* s0, double* s1, double* s2, double* s3, double* d, int R) =>
        Transpose4x4(Avx.LoadVector256(s0), Avx.LoadVector256(s1), Avx.LoadVector256(s2), Avx.LoadVector256(s3), d, R);

    /// <summary>Gather of an even number R of float64 rows: 4×4 register transposes, and a last pair of rows two-by-four.</summary>
    static void GatherF64(double* rows, long ld, int kc, int R, double* dst)
    {
        int r0 = 0;
        for (; r0 + 4 <= R; r0 += 4)
        {
            double* s0 = rows + r0 * ld, s1 = s0 + ld, s2 = s1 + ld, s3 = s2 + ld, d = dst + r0;
            int p = 0;
            for (; p + 4 <= kc; p += 4, d += 4 * R) Transpose4x4(s0 + p, s1 + p, s2 + p, s3 + p, d, R);
            for (; p < kc; p++, d += R) { d[0] = s0[p]; d[1] = s1[p]; d[2] = s2[p]; d[3] = s3[p]; }
        }
        if (r0 < R)
        {
            double* s0 = rows + r0 * ld, s1 = s0 + ld, d = dst + r0;
            int p = 0;
            for (; p + 4 <= kc; p += 4, d += 4 * R)
            {
                var a = Avx.LoadVector256(s0 + p);
                var b = Avx.LoadVector256(s1 + p);
                var lo = Avx.UnpackLow(a, b);    // a₀ b₀ a₂ b₂
                var hi = Avx.UnpackHigh(a, b);   // a₁ b₁ a₃ b₃
                Sse2.Store(d, lo.GetLower());
                Sse2.Store(d + R, hi.GetLower());
                Sse2.Store(d + 2 * R, lo.GetUpper());
                Sse2.Store(d + 3 * R, hi.GetUpper());
            }
            for (; p < kc; p++, d += R) { d[0] = s0[p]; d[1] = s1[p]; }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Transpose4x4(Vector256<double> a0, Vector256<double> a1, Vector256<double> a2, Vector256<double> a3, double* d, int R)
    {
        var t0 = Avx.UnpackLow(a0, a1);    // a0₀ a1₀ a0₂ a1₂
        var t1 = Avx.UnpackHigh(a0, a1);   // a0₁ a1₁ a0₃ a1₃
        var t2 = Avx.UnpackLow(a2, a3);
        var t3 = Avx.UnpackHigh(a2, a3);
        Avx.Store(d, Avx.Permute2x128(t0, t2, 0x20));
        Avx.Store(d + R, Avx.Permute2x128(t1, t3, 0x20));
        Avx.Store(d + 2 * R, Avx.Permute2x128(t0, t2, 0x31));
        Avx.Store(d + 3 * R, Avx.Permute2x128(t1, t3, 0x31));
    }

    /// <summary>
    /// Packs a kc×cnt slice in which p is contiguous: element (p, r) at src + (r·stride + p)·size
    /// (A not transposed, B transposed). Each source row is widened once into <paramref name="tmp"/> (cnt·kc elements), then interleaved.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Gather<T>(byte* src, DType t, long stride, int kc, int cnt, int R, T* dst, T* tmp) where T : unmanaged
    {
        long rowBytes = stride * t.Size();
        if (typeof(T) == typeof(double) && t != DType.F64 && cnt == R && R % 4 == 0 && Avx2.IsSupported)
        {
            WidenTransposed(src, t, rowBytes, kc, R, (double*)dst);
            return;
        }
        T* rows = tmp;
        long ld = kc;
        if (GemmConvert.IsNative<T>(t)) { rows = (T*)src; ld = stride; }
        else
            for (int r = 0; r < cnt; r++) GemmConvert.Row(src + r * rowBytes, t, tmp + (long)r * kc, kc);
        Interleave(rows, ld, kc, cnt, R, dst);
    }

    /// <summary>
    /// Gather for a quantized operand: each of the cnt rows (row r at src + r·rowBytes) has its elements
    /// [col0, col0+kc) — whole blocks, since depth blocks start at multiples of KC — decoded once into
    /// <paramref name="tmp"/>, then interleaved into the panel.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void GatherQuant<T>(byte* src, DType t, long rowBytes, long col0, int kc, int cnt, int R, T* dst, T* tmp) where T : unmanaged
    {
        if (typeof(T) == typeof(double) && cnt == R && R % 4 == 0 && Avx2.IsSupported)
        {
            // float64 panels: rows decoded as float32 (exact; half the bytes), then widened four by four in registers and
            // transposed, as a stored F32 weight is
            float* rows = (float*)tmp;
            for (int r = 0; r < cnt; r++) QuantDecode.Segment(src + r * rowBytes, t, col0, kc, rows + (long)r * kc);
            WidenTransposed<LoadF32AsF64>((byte*)rows, (long)kc * sizeof(float), kc, R, (double*)dst);
            return;
        }
        for (int r = 0; r < cnt; r++) QuantDecode.Segment(src + r * rowBytes, t, col0, kc, tmp + (long)r * kc);
        Interleave(tmp, kc, kc, cnt, R, dst);
    }

    /// <summary>
    /// Contiguous packing of a quantized operand over a whole block of <paramref name="width"/> columns: for each of kc
    /// rows, elements [col0, col0+width) are decoded once into <paramref name="stage"/> and dealt out to the
    /// ⌈width/R⌉ panels (panel q at dst + q·R·kc, zero-padded), so no block is decoded twice for neighbouring panels.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void ContiguousQuant<T>(byte* src, DType t, long rowBytes, long col0, int kc, int width, int R, T* dst, T* stage) where T : unmanaged
    {
        int panels = (width + R - 1) / R;
        for (int p = 0; p < kc; p++, src += rowBytes)
        {
            QuantDecode.Segment(src, t, col0, width, stage);
            for (int q = 0; q < panels; q++)
            {
                T* d = dst + ((long)q * kc + p) * R;
                int c0 = q * R, cnt = Math.Min(R, width - c0);
                Buffer.MemoryCopy(stage + c0, d, (long)R * sizeof(T), (long)cnt * sizeof(T));
                for (int r = cnt; r < R; r++) d[r] = default;
            }
        }
    }

    /// <summary>Panel layout of cnt rows of kc elements (row r at rows + r·ld): element (p, r) to dst[p·R + r], zero-padded to R.</summary>
    static void Interleave<T>(T* rows, long ld, int kc, int cnt, int R, T* dst) where T : unmanaged
    {
        if (typeof(T) == typeof(double) && cnt == R && R % 2 == 0 && Avx.IsSupported)
        {
            // float64 panels of an even row count (the AVX2 kernel's 6-row A panels: every product's activations)
            GatherF64((double*)rows, ld, kc, R, (double*)dst);
            return;
        }
        if (cnt == R && R % 4 == 0)
        {
            for (int r0 = 0; r0 < R; r0 += 4)
            {
                T* s0 = rows + r0 * ld, s1 = s0 + ld, s2 = s1 + ld, s3 = s2 + ld;
                T* d = dst + r0;
                for (int p = 0; p < kc; p++, d += R)
                {
                    d[0] = s0[p]; d[1] = s1[p]; d[2] = s2[p]; d[3] = s3[p];
                }
            }
            return;
        }
        for (int p = 0; p < kc; p++, dst += R)
        {
            int r = 0;
            for (; r < cnt; r++) dst[r] = rows[r * ld + p];
            for (; r < R; r++) dst[r] = default;
        }
    }

    /// <summary>Contiguous for a stored BF16/F16/F32 row into float64: R elements of each of kc rows, four at a time.</summary>
    static void WidenRows(byte* src, DType t, long rowBytes, int kc, int R, double* dst)
    {
        switch (t)
        {
            case DType.BF16: WidenRows<LoadBf16AsF64>(src, rowBytes, kc, R, dst); break;
            case DType.F16: WidenRows<LoadF16AsF64>(src, rowBytes, kc, R, dst); break;
            default: WidenRows<LoadF32AsF64>(src, rowBytes, kc, R, dst); break;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void WidenRows<L>(byte* src, long rowBytes, int kc, int R, double* d) where L : IGemmLoader<double>
    {
        for (int p = 0; p < kc; p++, src += rowBytes, d += R)
            for (int r = 0; r < R; r += 4) Avx.Store(d + r, L.Load(src, r));
    }

    /// <summary>
    /// Gather for stored BF16/F16/F32 into float64 panels without a staging row: four elements of four rows are widened
    /// straight into registers and transposed (a weight operand is packed on every product, so this is on the hot path
    /// of products with few rows).
    /// </summary>
    static void WidenTransposed(byte* src, DType t, long rowBytes, int kc, int R, double* dst)
    {
        switch (t)
        {
            case DType.BF16: WidenTransposed<LoadBf16AsF64>(src, rowBytes, kc, R, dst); break;
            case DType.F16: WidenTransposed<LoadF16AsF64>(src, rowBytes, kc, R, dst); break;
            default: WidenTransposed<LoadF32AsF64>(src, rowBytes, kc, R, dst); break;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void WidenTransposed<L>(byte* src, long rowBytes, int kc, int R, double* dst) where L : IGemmLoader<double>
    {
        for (int r0 = 0; r0 < R; r0 += 4)
        {
            byte* s0 = src + r0 * rowBytes, s1 = s0 + rowBytes, s2 = s1 + rowBytes, s3 = s2 + rowBytes;
            double* d = dst + r0;
            int p = 0;
            for (; p + 4 <= kc; p += 4, d += 4 * R)
                Transpose4x4(L.Load(s0, p), L.Load(s1, p), L.Load(s2, p), L.Load(s3, p), d, R);
            for (; p < kc; p++, d += R)
            {
                d[0] = L.Scalar(s0, p); d[1] = L.Scalar(s1, p); d[2] = L.Scalar(s2, p); d[3] = L.Scalar(s3, p);
            }
        }
    }
}
