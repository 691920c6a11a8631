using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace LinearLens.Numerics;

/// <summary>
/// Reads a run of stored elements as a vector of the compute type T (Vector256&lt;T&gt;.Count elements), widening on the fly.
/// One struct per (compute type, stored type) so the generic loops below are specialized by the JIT.
/// </summary>
internal unsafe interface IGemmLoader<T> where T : unmanaged
{
    static abstract Vector256<T> Load(byte* row, int i);
    static abstract T Scalar(byte* row, int i);
}

internal static unsafe class GemmLoad
{
    // Halves to floats without a multiply by a subnormal: a normal half's 15 magnitude bits move up 13 bits and get the
    // exponent bias difference (112) added as an integer; a subnormal half (exponent field 0) is its 10-bit mantissa
    // converted to float and scaled by 2^-24 (both operands normal, the product exact); Inf/NaN keep their payload under
    // an all-ones exponent. Scaling the shifted bits by 2^112 instead (one multiply for every case) reads a subnormal
    // float for every subnormal half, and Zen 4 takes a slow path for those: Q4_K files hold many subnormal d (a
    // sub-block scale of ~0.03/945), which cost the single-row Q4_K product about a fifth of its time.
    internal const int HalfRebias = 112 << 23;
    internal const float HalfSubnormalUnit = 5.9604645e-08f; // 2^-24

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector128<float> Bf16x4(ushort* p) => Sse2.ShiftLeftLogical(Sse41.ConvertToVector128Int32(p), 16).AsSingle();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<float> Bf16x8(ushort* p) => Avx2.ShiftLeftLogical(Avx2.ConvertToVector256Int32(p), 16).AsSingle();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector128<float> F16x4(ushort* p) => F16x4(Sse41.ConvertToVector128Int32(p));

    /// <summary>Four halves given as the low 16 bits of four ints, as floats (no call, unlike System.Half's conversion).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector128<float> F16x4(Vector128<int> h)
    {
        var mag = h & Vector128.Create(0x7FFF);
        var em = Sse2.ShiftLeftLogical(mag, 13);
        var f = (em + Vector128.Create(HalfRebias)).AsSingle();
        f = Sse41.BlendVariable(f, Sse2.ConvertToVector128Single(mag) * Vector128.Create(HalfSubnormalUnit), Sse2.CompareLessThan(mag, Vector128.Create(0x400)).AsSingle());
        f = Sse41.BlendVariable(f, (em | Vector128.Create(0x7F800000)).AsSingle(), Sse2.CompareGreaterThan(mag, Vector128.Create(0x7BFF)).AsSingle());
        return f | Sse2.ShiftLeftLogical(h & Vector128.Create(0x8000), 16).AsSingle();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<float> F16x8(ushort* p)
    {
        var h = Avx2.ConvertToVector256Int32(p);
        var mag = h & Vector256.Create(0x7FFF);
        var em = Avx2.ShiftLeftLogical(mag, 13);
        var f = (em + Vector256.Create(HalfRebias)).AsSingle();
        f = Avx.BlendVariable(f, Avx.ConvertToVector256Single(mag) * Vector256.Create(HalfSubnormalUnit), Avx2.CompareGreaterThan(Vector256.Create(0x400), mag).AsSingle());
        f = Avx.BlendVariable(f, (em | Vector256.Create(0x7F800000)).AsSingle(), Avx2.CompareGreaterThan(mag, Vector256.Create(0x7BFF)).AsSingle());
        return f | Avx2.ShiftLeftLogical(h & Vector256.Create(0x8000), 16).AsSingle();
    }
}

internal readonly unsafe struct LoadF64AsF64 : IGemmLoader<double>
{
    public static Vector256<double> Load(byte* row, int i) => Vector256.Load((double*)row + i);
    public static double Scalar(byte* row, int i) => ((double*)row)[i];
}
internal readonly unsafe struct LoadF32AsF64 : IGemmLoader<double>
{
    public static Vector256<double> Load(byte* row, int i) => Avx.ConvertToVector256Double(Sse.LoadVector128((float*)row + i));
    public static double Scalar(byte* row, int i) => ((float*)row)[i];
}
internal readonly unsafe struct LoadBf16AsF64 : IGemmLoader<double>
{
    public static Vector256<double> Load(byte* row, int i) => Avx.ConvertToVector256Double(GemmLoad.Bf16x4((ushort*)row + i));
    public static double Scalar(byte* row, int i) => DTypes.Bf16ToFloat(((ushort*)row)[i]);
}
internal readonly unsafe struct LoadF16AsF64 : IGemmLoader<double>
{
    public static Vector256<double> Load(byte* row, int i) => Avx.ConvertToVector256Double(GemmLoad.F16x4((ushort*)row + i));
    public static double Scalar(byte* row, int i) => DTypes.F16ToFloat(((ushort*)row)[i]);
}
internal readonly unsafe struct LoadF64AsF32 : IGemmLoader<float>
{
    public static Vector256<float> Load(byte* row, int i)
    {
        double* s = (double*)row + i;
        return Vector256.Create(Avx.ConvertToVector128Single(Vector256.Load(s)), Avx.ConvertToVector128Single(Vector256.Load(s + 4)));
    }
    public static float Scalar(byte* row, int i) => (float)((double*)row)[i];
}
internal readonly unsafe struct LoadF32AsF32 : IGemmLoader<float>
{
    public static Vector256<float> Load(byte* row, int i) => Vector256.Load((float*)row + i);
    public static float Scalar(byte* row, int i) => ((float*)row)[i];
}
internal readonly unsafe struct LoadBf16AsF32 : IGemmLoader<float>
{
    public static Vector256<float> Load(byte* row, int i) => GemmLoad.Bf16x8((ushort*)row + i);
    public static float Scalar(byte* row, int i) => DTypes.Bf16ToFloat(((ushort*)row)[i]);
}
internal readonly unsafe struct LoadF16AsF32 : IGemmLoader<float>
{
    public static Vector256<float> Load(byte* row, int i) => GemmLoad.F16x8((ushort*)row + i);
    public static float Scalar(byte* row, int i) => DTypes.F16ToFloat(((ushort*)row)[i]);
}

/// <summary>
/// Streaming paths for products with a thin side: op(A) with ≤ <see cref="MaxRows"/> rows (single-token decode, lm_head), or
/// op(B) with ≤ MaxRows columns and A not transposed. The thin operand is widened once into a small buffer; the big one is
/// read once, straight from its storage, and converted in registers — nothing of its size is ever allocated.
/// </summary>
internal static unsafe class GemmSmall
{
    /// <summary>
    /// Up to this many rows the streaming path beats packing the big operand. Since the packed path packs each B
    /// micro-panel right before use when the rows fit one A block, 5–8 rows go there (measured: a 7-token Qwen3-0.6B
    /// float64 prefill takes 313–336 ms at 4 against 402–426 ms at 8).
    /// </summary>
    public const int MaxRows = 4;

    static bool Simd => Avx2.IsSupported && Fma.IsSupported;

    /// <summary>op(A) has at most MaxRows rows.</summary>
    public static void FewRows<T>(in Problem<T> p) where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        int m = p.M, k = p.K;
        T* x = (T*)GemmScratch.Current.Get(GemmScratch.Shared, (long)m * k * sizeof(T) + 64);
        for (int i = 0; i < m; i++) RowOf(p.A, p.TransA, i, k, x + (long)i * k);
        if (p.TransB) Dots(p, x, m, p.B, p.N, p.Ldc, 1);
        else Axpys(p, x, m);
    }

    /// <summary>op(B) has at most MaxRows columns and A is not transposed: C[i, j] = dot(A row i, op(B) column j).</summary>
    public static void FewCols<T>(in Problem<T> p) where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        int n = p.N, k = p.K;
        T* x = (T*)GemmScratch.Current.Get(GemmScratch.Shared, (long)n * k * sizeof(T) + 64);
        for (int j = 0; j < n; j++) RowOf(p.B, !p.TransB, j, k, x + (long)j * k);
        Dots(p, x, n, p.A, p.M, 1, p.Ldc);
    }

    /// <summary>Row r of op(X) (op = transpose when <paramref name="trans"/>), widened to T.</summary>
    static void RowOf<T>(MatrixView v, bool trans, int r, int len, T* dst) where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        bool quant = v.Type.IsQuantized();
        if (!trans && quant) { QuantDecode.Segment(v.Row(r), v.Type, 0, len, dst); return; }
        if (!trans) { GemmConvert.Row(v.Row(r), v.Type, dst, len); return; }
        // a column of a quantized matrix: one block decoded per element (rare: a weight is not the thin operand's column source)
        for (int i = 0; i < len; i++)
            dst[i] = T.CreateTruncating(quant ? DTypes.Read(v.Row(i), v.Type, r) : DTypes.Read(v.Data, v.Type, i * v.RowStride + r));
    }

    // ---- dot path: C[x·sx + y·sy] = α·dot(X row x, Y row y) (+ β·C) for x < nx, y < ny; Y rows are streamed from storage ----

    static void Dots<T>(in Problem<T> p, T* x, int nx, MatrixView y, int ny, long sx, long sy) where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        if (y.Type.IsQuantized()) { QuantDotsOf(p, x, nx, y, ny, sx, sy); return; }
        if (!Simd) { DotsOf<T, NoLoader<T>>(p, x, nx, y, ny, sx, sy); return; }
        if (typeof(T) == typeof(double))
        {
            ref readonly var pd = ref Unsafe.As<Problem<T>, Problem<double>>(ref Unsafe.AsRef(in p));
            double* xd = (double*)x;
            switch (y.Type)
            {
                case DType.F64: DotsOf<double, LoadF64AsF64>(pd, xd, nx, y, ny, sx, sy); break;
                case DType.F32: DotsOf<double, LoadF32AsF64>(pd, xd, nx, y, ny, sx, sy); break;
                case DType.BF16: DotsOf<double, LoadBf16AsF64>(pd, xd, nx, y, ny, sx, sy); break;
                default: DotsOf<double, LoadF16AsF64>(pd, xd, nx, y, ny, sx, sy); break;
            }
        }
        else
        {
            ref readonly var pf = ref Unsafe.As<Problem<T>, Problem<float>>(ref Unsafe.AsRef(in p));
            float* xf = (float*)x;
            switch (y.Type)
            {
                case DType.F64: DotsOf<float, LoadF64AsF32>(pf, xf, nx, y, ny, sx, sy); break;
                case DType.F32: DotsOf<float, LoadF32AsF32>(pf, xf, nx, y, ny, sx, sy); break;
                case DType.BF16: DotsOf<float, LoadBf16AsF32>(pf, xf, nx, y, ny, sx, sy); break;
                default: DotsOf<float, LoadF16AsF32>(pf, xf, nx, y, ny, sx, sy); break;
            }
        }
    }

    /// <summary>The dot path over groups of four Y rows split into tasks; quantized Y rows go through <see cref="QuantDotRange"/>.</summary>
    static void DotsOf<T, L>(in Problem<T> p, T* x, int nx, MatrixView y, int ny, long sx, long sy, bool quantized = false)
        where T : unmanaged, IBinaryFloatingPointIeee754<T> where L : IGemmLoader<T>
    {
        int tasks = Gemm.TaskCount((long)nx * ny * p.K, (ny + 3) / 4);
        T* c = p.C; int k = p.K; T alpha = p.Alpha, beta = p.Beta;
        // read here: the test hook that forces it is per thread (and forces AVX-512 even where it is only emulated)
        bool wide = Gemm.Isa == GemmIsa.Avx512 && Avx512F.IsSupported;
        void Range(int y0, int y1)
        {
            if (quantized) QuantDotRange<T, L>(x, nx, k, y, y0, y1, c, sx, sy, alpha, beta, wide);
            else if (wide && nx == 1 && y.Type == DType.BF16) Bf16DotRange512(x, k, y, y0, y1, c, sy, alpha, beta);
            else DotRange<T, L>(x, nx, k, y, y0, y1, c, sx, sy, alpha, beta);
        }
        if (tasks == 1) { Range(0, ny); return; }
        GemmParallel.For(tasks, t =>
        {
            var (y0, y1) = Gemm.Split(ny, tasks, t, 4);
            Range(y0, y1);
        });
    }

    /// <summary>Depth of one decoded slice of quantized rows in the dot path (whole blocks of every type; 4 rows of it stay in L1).</summary>
    const int QuantChunk = 256;

    static void QuantDotsOf<T>(in Problem<T> p, T* x, int nx, MatrixView y, int ny, long sx, long sy) where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        if (typeof(T) == typeof(double))
            DotsOf<double, LoadF32AsF64>(Unsafe.As<Problem<T>, Problem<double>>(ref Unsafe.AsRef(in p)), (double*)x, nx, y, ny, sx, sy, quantized: true);
        else
            DotsOf<float, LoadF32AsF32>(Unsafe.As<Problem<T>, Problem<float>>(ref Unsafe.AsRef(in p)), (float*)x, nx, y, ny, sx, sy, quantized: true);
    }


    /// <summary>
    /// The dot path for quantized Y rows: four rows at a time, each decoded a <see cref="QuantChunk"/> slice at a time into
    /// a per-thread float32 staging block (decoded weights are exact float32 values; half the bytes of float64), with every
    /// (x row, y row) pair's vector sums carried from slice to slice — the same in-order summation whatever the thread count.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization), SkipLocalsInit]
    static void QuantDotRange<T, L>(T* x, int nx, int k, MatrixView y, int y0, int y1, T* c, long sx, long sy, T alpha, T beta, bool wide)
        where T : unmanaged, IBinaryFloatingPointIeee754<T> where L : IGemmLoader<T>
    {
        if (y0 >= y1) return;
        if (nx == 1 && QuantDecode.HasFusedDot(y.Type))
        {
            // one activation row (decode): weights decoded in registers, four rows per pass over x, no staging;
            // missing rows of a short group repeat row j (computed and discarded)
            T* s = stackalloc T[4];
            for (int j = y0; j < y1; j += 4)
            {
                int cnt = Math.Min(4, y1 - j);
                byte* r0 = y.Row(j);
                byte* r1 = cnt > 1 ? y.Row(j + 1) : r0, r2 = cnt > 2 ? y.Row(j + 2) : r0, r3 = cnt > 3 ? y.Row(j + 3) : r0;
                if (wide) QuantDecode.Dot4Avx512(y.Type, r0, r1, r2, r3, x, k, s);
                else QuantDecode.Dot4(y.Type, r0, r1, r2, r3, x, k, s);
                for (int r = 0; r < cnt; r++) Put(c + (j + r) * sy, s[r], alpha, beta);
            }
            return;
        }
        float* stage = (float*)GemmScratch.Current.Get(GemmScratch.Work, 4L * QuantChunk * sizeof(float));
        int W = Vector256<T>.Count;
        var acc = stackalloc Vector256<T>[MaxRows * 8];
        for (int j = y0; j < y1; j += 4)
        {
            int cnt = Math.Min(4, y1 - j);
            new Span<Vector256<T>>(acc, nx * 8).Clear();
            byte* r0 = (byte*)stage, r1 = cnt > 1 ? r0 + QuantChunk * 4 : r0, r2 = cnt > 2 ? r0 + 2 * QuantChunk * 4 : r0, r3 = cnt > 3 ? r0 + 3 * QuantChunk * 4 : r0;
            for (int q0 = 0; q0 < k; q0 += QuantChunk)
            {
                // k and every slice are whole blocks (≥ 32 elements), so no scalar tail is left below
                int len = Math.Min(QuantChunk, k - q0);
                for (int r = 0; r < cnt; r++) QuantDecode.Segment(y.Row(j + r), y.Type, q0, len, stage + r * QuantChunk);
                for (int i = 0; i < nx && !Simd; i++)
                {
                    // without AVX2: plain FMAs into lane 0 of the row's accumulators
                    T* xi = x + (long)i * k + q0;
                    T* a = (T*)(acc + i * 8);
                    for (int q = 0; q < len; q++)
                    {
                        T xq = xi[q];
                        a[0] = T.FusedMultiplyAdd(xq, L.Scalar(r0, q), a[0]); a[W] = T.FusedMultiplyAdd(xq, L.Scalar(r1, q), a[W]);
                        a[2 * W] = T.FusedMultiplyAdd(xq, L.Scalar(r2, q), a[2 * W]); a[3 * W] = T.FusedMultiplyAdd(xq, L.Scalar(r3, q), a[3 * W]);
                    }
                }
                for (int i = 0; i < nx && Simd; i++)
                {
                    T* xi = x + (long)i * k + q0;
                    Vector256<T>* a = acc + i * 8;
                    Vector256<T> a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3], b0 = a[4], b1 = a[5], b2 = a[6], b3 = a[7];
                    for (int q = 0; q + 2 * W <= len; q += 2 * W)
                    {
                        var xv = Vector256.Load(xi + q);
                        a0 = FmaV(xv, L.Load(r0, q), a0); a1 = FmaV(xv, L.Load(r1, q), a1);
                        a2 = FmaV(xv, L.Load(r2, q), a2); a3 = FmaV(xv, L.Load(r3, q), a3);
                        var xw = Vector256.Load(xi + q + W);
                        b0 = FmaV(xw, L.Load(r0, q + W), b0); b1 = FmaV(xw, L.Load(r1, q + W), b1);
                        b2 = FmaV(xw, L.Load(r2, q + W), b2); b3 = FmaV(xw, L.Load(r3, q + W), b3);
                    }
                    a[0] = a0; a[1] = a1; a[2] = a2; a[3] = a3; a[4] = b0; a[5] = b1; a[6] = b2; a[7] = b3;
                }
            }
            for (int i = 0; i < nx; i++)
            {
                Vector256<T>* a = acc + i * 8;
                T* cij = c + i * sx + j * sy;
                Put(cij, Vector256.Sum(a[0] + a[4]), alpha, beta);
                if (cnt > 1) Put(cij + sy, Vector256.Sum(a[1] + a[5]), alpha, beta);
                if (cnt > 2) Put(cij + 2 * sy, Vector256.Sum(a[2] + a[6]), alpha, beta);
                if (cnt > 3) Put(cij + 3 * sy, Vector256.Sum(a[3] + a[7]), alpha, beta);
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void DotRange<T, L>(T* x, int nx, int k, MatrixView y, int y0, int y1, T* c, long sx, long sy, T alpha, T beta)
        where T : unmanaged, IBinaryFloatingPointIeee754<T> where L : IGemmLoader<T>
    {
        long rowBytes = y.RowStride * y.Type.Size();
        byte* data = (byte*)y.Data;
        bool simd = typeof(L) != typeof(NoLoader<T>);
        int W = Vector256<T>.Count;
        for (int j = y0; j < y1; j += 4)
        {
            int cnt = Math.Min(4, y1 - j);
            // Missing rows of a short group repeat row j (computed and discarded).
            byte* r0 = data + j * rowBytes;
            byte* r1 = cnt > 1 ? r0 + rowBytes : r0, r2 = cnt > 2 ? r0 + 2 * rowBytes : r0, r3 = cnt > 3 ? r0 + 3 * rowBytes : r0;
            for (int i = 0; i < nx; i++)
            {
                T* xi = x + (long)i * k;
                T s0 = T.Zero, s1 = T.Zero, s2 = T.Zero, s3 = T.Zero;
                int q = 0;
                if (simd)
                {
                    Vector256<T> a0 = Vector256<T>.Zero, a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
                    for (; q + 2 * W <= k; q += 2 * W)
                    {
                        var xv = Vector256.Load(xi + q);
                        a0 = FmaV(xv, L.Load(r0, q), a0); a1 = FmaV(xv, L.Load(r1, q), a1);
                        a2 = FmaV(xv, L.Load(r2, q), a2); a3 = FmaV(xv, L.Load(r3, q), a3);
                        var xw = Vector256.Load(xi + q + W);
                        b0 = FmaV(xw, L.Load(r0, q + W), b0); b1 = FmaV(xw, L.Load(r1, q + W), b1);
                        b2 = FmaV(xw, L.Load(r2, q + W), b2); b3 = FmaV(xw, L.Load(r3, q + W), b3);
                    }
                    for (; q + W <= k; q += W)
                    {
                        var xv = Vector256.Load(xi + q);
                        a0 = FmaV(xv, L.Load(r0, q), a0); a1 = FmaV(xv, L.Load(r1, q), a1);
                        a2 = FmaV(xv, L.Load(r2, q), a2); a3 = FmaV(xv, L.Load(r3, q), a3);
                    }
                    s0 = Vector256.Sum(a0 + b0); s1 = Vector256.Sum(a1 + b1); s2 = Vector256.Sum(a2 + b2); s3 = Vector256.Sum(a3 + b3);
                }
                for (; q < k; q++)
                {
                    T xq = xi[q];
                    s0 = T.FusedMultiplyAdd(xq, L.Scalar(r0, q), s0); s1 = T.FusedMultiplyAdd(xq, L.Scalar(r1, q), s1);
                    s2 = T.FusedMultiplyAdd(xq, L.Scalar(r2, q), s2); s3 = T.FusedMultiplyAdd(xq, L.Scalar(r3, q), s3);
                }
                T* cij = c + i * sx + j * sy;
                Put(cij, s0, alpha, beta);
                if (cnt > 1) Put(cij + sy, s1, alpha, beta);
                if (cnt > 2) Put(cij + 2 * sy, s2, alpha, beta);
                if (cnt > 3) Put(cij + 3 * sy, s3, alpha, beta);
            }
        }
    }

    /// <summary>
    /// <see cref="DotRange{T, L}"/> for one x row and bf16 Y rows with AVX-512: four rows per pass over x, 16 (float32)
    /// or 8 (float64) weights per register, two chains per row, then the scalar tail — a fixed order per row.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Bf16DotRange512<T>(T* x, int k, MatrixView y, int y0, int y1, T* c, long sy, T alpha, T beta)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        long rowBytes = y.RowStride * 2;
        int W = Vector512<T>.Count;
        for (int j = y0; j < y1; j += 4)
        {
            int cnt = Math.Min(4, y1 - j);
            ushort* r0 = (ushort*)((byte*)y.Data + j * rowBytes);
            ushort* r1 = cnt > 1 ? r0 + y.RowStride : r0, r2 = cnt > 2 ? r0 + 2 * y.RowStride : r0, r3 = cnt > 3 ? r0 + 3 * y.RowStride : r0;
            Vector512<T> a0 = Vector512<T>.Zero, a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
            int q = 0;
            for (; q + 2 * W <= k; q += 2 * W)
            {
                var xv = Vector512.Load(x + q); var xw = Vector512.Load(x + q + W);
                a0 = Fma512(xv, Bf16x(r0 + q, a0), a0); a1 = Fma512(xv, Bf16x(r1 + q, a1), a1);
                a2 = Fma512(xv, Bf16x(r2 + q, a2), a2); a3 = Fma512(xv, Bf16x(r3 + q, a3), a3);
                b0 = Fma512(xw, Bf16x(r0 + q + W, b0), b0); b1 = Fma512(xw, Bf16x(r1 + q + W, b1), b1);
                b2 = Fma512(xw, Bf16x(r2 + q + W, b2), b2); b3 = Fma512(xw, Bf16x(r3 + q + W, b3), b3);
            }
            T s0 = Vector512.Sum(a0 + b0), s1 = Vector512.Sum(a1 + b1), s2 = Vector512.Sum(a2 + b2), s3 = Vector512.Sum(a3 + b3);
            for (; q < k; q++)
            {
                T xq = x[q];
                s0 = T.FusedMultiplyAdd(xq, T.CreateTruncating(DTypes.Bf16ToFloat(r0[q])), s0); s1 = T.FusedMultiplyAdd(xq, T.CreateTruncating(DTypes.Bf16ToFloat(r1[q])), s1);
                s2 = T.FusedMultiplyAdd(xq, T.CreateTruncating(DTypes.Bf16ToFloat(r2[q])), s2); s3 = T.FusedMultiplyAdd(xq, T.CreateTruncating(DTypes.Bf16ToFloat(r3[q])), s3);
            }
            Put(c + j * sy, s0, alpha, beta);
            if (cnt > 1) Put(c + (j + 1) * sy, s1, alpha, beta);
            if (cnt > 2) Put(c + (j + 2) * sy, s2, alpha, beta);
            if (cnt > 3) Put(c + (j + 3) * sy, s3, alpha, beta);
        }
    }

    /// <summary>Vector512&lt;T&gt;.Count bf16 values widened to T (the vector argument only picks T).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector512<T> Bf16x<T>(ushort* p, Vector512<T> _) where T : unmanaged
    {
        if (typeof(T) == typeof(double)) return Avx512F.ConvertToVector512Double(GemmLoad.Bf16x8(p)).As<double, T>();
        return Avx512F.ShiftLeftLogical(Avx512F.ConvertToVector512Int32(Avx.LoadVector256(p)), 16).As<int, T>();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector512<T> Fma512<T>(Vector512<T> a, Vector512<T> b, Vector512<T> c) where T : unmanaged
    {
        if (typeof(T) == typeof(double)) return Avx512F.FusedMultiplyAdd(a.AsDouble(), b.AsDouble(), c.AsDouble()).As<double, T>();
        return Avx512F.FusedMultiplyAdd(a.AsSingle(), b.AsSingle(), c.AsSingle()).As<float, T>();
    }

    // ---- axpy path (B not transposed): C[i, :] = α·Σ_p X[i, p]·B[p, :] (+ β·C), B rows streamed ----

    const int AxpyCols = 512;

    static void Axpys<T>(in Problem<T> p, T* x, int m) where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        if (!Simd && !p.B.Type.IsQuantized()) { AxpysOf<T, NoLoader<T>>(p, x, m); return; }
        if (typeof(T) == typeof(double))
        {
            ref readonly var pd = ref Unsafe.As<Problem<T>, Problem<double>>(ref Unsafe.AsRef(in p));
            double* xd = (double*)x;
            // quantized rows are decoded into a staging row of doubles and streamed from there
            switch (p.B.Type.IsQuantized() ? DType.F64 : p.B.Type)
            {
                case DType.F64: AxpysOf<double, LoadF64AsF64>(pd, xd, m); break;
                case DType.F32: AxpysOf<double, LoadF32AsF64>(pd, xd, m); break;
                case DType.BF16: AxpysOf<double, LoadBf16AsF64>(pd, xd, m); break;
                default: AxpysOf<double, LoadF16AsF64>(pd, xd, m); break;
            }
        }
        else
        {
            ref readonly var pf = ref Unsafe.As<Problem<T>, Problem<float>>(ref Unsafe.AsRef(in p));
            float* xf = (float*)x;
            switch (p.B.Type.IsQuantized() ? DType.F32 : p.B.Type)
            {
                case DType.F64: AxpysOf<float, LoadF64AsF32>(pf, xf, m); break;
                case DType.F32: AxpysOf<float, LoadF32AsF32>(pf, xf, m); break;
                case DType.BF16: AxpysOf<float, LoadBf16AsF32>(pf, xf, m); break;
                default: AxpysOf<float, LoadF16AsF32>(pf, xf, m); break;
            }
        }
    }

    static void AxpysOf<T, L>(in Problem<T> p, T* x, int m) where T : unmanaged, IBinaryFloatingPointIeee754<T> where L : IGemmLoader<T>
    {
        int n = p.N;
        // column ranges of a quantized B start on its blocks, so no block is decoded by two tasks
        int align = Math.Max(64, p.B.Type.BlockElements());
        int tasks = Gemm.TaskCount((long)m * n * p.K, (n + align - 1) / align);
        var q = p;
        if (tasks == 1) { AxpyRange<T, L>(q, x, m, 0, n); return; }
        GemmParallel.For(tasks, t =>
        {
            var (j0, j1) = Gemm.Split(q.N, tasks, t, align);
            AxpyRange<T, L>(q, x, m, j0, j1);
        });
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void AxpyRange<T, L>(in Problem<T> p, T* x, int m, int j0, int j1)
        where T : unmanaged, IBinaryFloatingPointIeee754<T> where L : IGemmLoader<T>
    {
        if (j0 >= j1) return;
        int k = p.K;
        bool quant = p.B.Type.IsQuantized();
        // a quantized B row segment is decoded into `stage` (after the accumulators) and read from there as T
        T* acc = (T*)GemmScratch.Current.Get(GemmScratch.Work, (long)(m + (quant ? 1 : 0)) * AxpyCols * sizeof(T));
        T* stage = acc + (long)m * AxpyCols;
        long rowBytes = p.B.RowBytes;
        bool simd = typeof(L) != typeof(NoLoader<T>);
        int W = Vector256<T>.Count;
        for (int jb = j0; jb < j1; jb += AxpyCols)
        {
            int w = Math.Min(AxpyCols, j1 - jb);
            new Span<T>(acc, m * AxpyCols).Clear();
            byte* row = (byte*)p.B.Data;
            byte* brow = quant ? (byte*)stage : row + p.B.Type.ByteOffset(jb);
            for (int q = 0; q < k; q++, row += rowBytes, brow = quant ? brow : brow + rowBytes)
            {
                if (quant) QuantDecode.Segment(row, p.B.Type, jb, w, stage);
                int j = 0;
                if (simd)
                {
                    if (m == 1)
                    {
                        var x0 = Vector256.Create(x[q]);
                        for (; j + W <= w; j += W)
                            Vector256.Store(FmaV(x0, L.Load(brow, j), Vector256.Load(acc + j)), acc + j);
                    }
                    else
                        for (; j + W <= w; j += W)
                        {
                            var bv = L.Load(brow, j);
                            for (int i = 0; i < m; i++)
                            {
                                T* ai = acc + i * AxpyCols + j;
                                Vector256.Store(FmaV(Vector256.Create(x[(long)i * k + q]), bv, Vector256.Load(ai)), ai);
                            }
                        }
                }
                for (; j < w; j++)
                {
                    T bq = L.Scalar(brow, j);
                    for (int i = 0; i < m; i++) acc[i * AxpyCols + j] = T.FusedMultiplyAdd(x[(long)i * k + q], bq, acc[i * AxpyCols + j]);
                }
            }
            for (int i = 0; i < m; i++)
            {
                T* ci = p.C + i * p.Ldc + jb;
                for (int j = 0; j < w; j++) Put(ci + j, acc[i * AxpyCols + j], p.Alpha, p.Beta);
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Put<T>(T* c, T s, T alpha, T beta) where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        T t = alpha * s;
        *c = beta == T.Zero ? t : T.FusedMultiplyAdd(*c, beta, t);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<T> FmaV<T>(Vector256<T> a, Vector256<T> b, Vector256<T> c) where T : unmanaged
    {
        if (typeof(T) == typeof(double)) return Vector256.FusedMultiplyAdd(a.AsDouble(), b.AsDouble(), c.AsDouble()).As<double, T>();
        return Vector256.FusedMultiplyAdd(a.AsSingle(), b.AsSingle(), c.AsSingle()).As<float, T>();
    }

    /// <summary>Scalar-only stand-in used without AVX2/FMA: reads any stored type element by element.</summary>
    readonly struct NoLoader<T> : IGemmLoader<T> where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        public static Vector256<T> Load(byte* row, int i) => throw new NotSupportedException();
        public static T Scalar(byte* row, int i) => throw new NotSupportedException();
    }
}
