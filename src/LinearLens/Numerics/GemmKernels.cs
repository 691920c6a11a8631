// Micro-kernels. The register-blocked bodies of the vector kernels are written out by a small generator
// (RyuJIT keeps each named Vector local in a register only if the code spells them out).
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace LinearLens.Numerics;

/// <summary>
/// A GEMM micro-kernel with its blocking: computes an MR×NR tile of C from a packed A micro-panel (kc×MR, a[p·MR + i])
/// and a packed B micro-panel (kc×NR, b[p·NR + j]), summing over p in increasing order, then
/// C = α·acc (overwrite) or C = fma(C, β, α·acc).
/// </summary>
internal unsafe interface IGemmKernel<T> where T : unmanaged
{
    static abstract int MR { get; }
    static abstract int NR { get; }
    /// <summary>Depth of one packed block (B micro-panel kc×NR lives in L1).</summary>
    static abstract int KC { get; }
    /// <summary>Rows of one packed A block (mc×kc lives in L2); a multiple of MR.</summary>
    static abstract int MC { get; }
    /// <summary>Columns of one packed B block (kc×nc lives in L3); a multiple of NR.</summary>
    static abstract int NC { get; }
    static abstract void Run(int kc, T* a, T* b, T* c, long ldc, T alpha, T beta, bool overwrite);

    /// <summary>
    /// An edge tile of fewer than MR rows (all NR columns) straight into C, when the kernel has a variant for that many
    /// rows; false otherwise (the caller then runs the full tile into a scratch tile and copies).
    /// </summary>
    static virtual bool RunRows(int rows, int kc, T* a, T* b, T* c, long ldc, T alpha, T beta, bool overwrite) => false;
}

/// <summary>Portable scalar 4×4 kernel (no SIMD / FMA hardware).</summary>
internal readonly unsafe struct ScalarKernelF64 : IGemmKernel<double>
{
    public static int MR => 4;
    public static int NR => 4;
    public static int KC => 256;
    public static int MC => 128;
    public static int NC => 1024;

    public static void Run(int kc, double* a, double* b, double* c, long ldc, double alpha, double beta, bool overwrite)
    {
        double* acc = stackalloc double[16];
        for (int i = 0; i < 16; i++) acc[i] = 0;
        for (int p = 0; p < kc; p++, a += 4, b += 4)
            for (int i = 0; i < 4; i++)
            {
                double ai = a[i];
                for (int j = 0; j < 4; j++) acc[i * 4 + j] += ai * b[j];
            }
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++)
            {
                double t = alpha * acc[i * 4 + j];
                double* cij = c + i * ldc + j;
                *cij = overwrite ? t : Math.FusedMultiplyAdd(*cij, beta, t);
            }
    }
}

/// <summary>Portable scalar 4×4 kernel (no SIMD / FMA hardware).</summary>
internal readonly unsafe struct ScalarKernelF32 : IGemmKernel<float>
{
    public static int MR => 4;
    public static int NR => 4;
    public static int KC => 256;
    public static int MC => 128;
    public static int NC => 1024;

    public static void Run(int kc, float* a, float* b, float* c, long ldc, float alpha, float beta, bool overwrite)
    {
        float* acc = stackalloc float[16];
        for (int i = 0; i < 16; i++) acc[i] = 0;
        for (int p = 0; p < kc; p++, a += 4, b += 4)
            for (int i = 0; i < 4; i++)
            {
                float ai = a[i];
                for (int j = 0; j < 4; j++) acc[i * 4 + j] += ai * b[j];
            }
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++)
            {
                float t = alpha * acc[i * 4 + j];
                float* cij = c + i * ldc + j;
                *cij = overwrite ? t : MathF.FusedMultiplyAdd(*cij, beta, t);
            }
    }
}


/// <summary>Vector256&lt;double&gt; micro-kernel: 6×8 tile (6 rows × 2 vectors), 12 accumulators.</summary>
internal readonly unsafe struct Avx2KernelF64 : IGemmKernel<double>
{
    public static int MR => 6;
    public static int NR => 8;
    public static int KC => 256;
    public static int MC => 144;
    public static int NC => 4080;

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Run(int kc, double* a, double* b, double* c, long ldc, double alpha, double beta, bool overwrite)
    {
        Vector256<double> c00 = default; Vector256<double> c01 = default;
        Vector256<double> c10 = default; Vector256<double> c11 = default;
        Vector256<double> c20 = default; Vector256<double> c21 = default;
        Vector256<double> c30 = default; Vector256<double> c31 = default;
        Vector256<double> c40 = default; Vector256<double> c41 = default;
        Vector256<double> c50 = default; Vector256<double> c51 = default;
        if (Sse.IsSupported)
        {
            Sse.Prefetch0(c + 0 * ldc); Sse.Prefetch0(c + 0 * ldc + 7);
            Sse.Prefetch0(c + 1 * ldc); Sse.Prefetch0(c + 1 * ldc + 7);
            Sse.Prefetch0(c + 2 * ldc); Sse.Prefetch0(c + 2 * ldc + 7);
            Sse.Prefetch0(c + 3 * ldc); Sse.Prefetch0(c + 3 * ldc + 7);
            Sse.Prefetch0(c + 4 * ldc); Sse.Prefetch0(c + 4 * ldc + 7);
            Sse.Prefetch0(c + 5 * ldc); Sse.Prefetch0(c + 5 * ldc + 7);
        }
        int p = 0;
        for (; p + 4 <= kc; p += 4)
        {
            if (Sse.IsSupported) Sse.Prefetch0(a + 192);
            {
            var b0 = Vector256.Load(b + 0);
            var b1 = Vector256.Load(b + 4);
            { var ar = Vector256.Create(a[0]); c00 = Fma.MultiplyAdd(ar, b0, c00); c01 = Fma.MultiplyAdd(ar, b1, c01); }
            { var ar = Vector256.Create(a[1]); c10 = Fma.MultiplyAdd(ar, b0, c10); c11 = Fma.MultiplyAdd(ar, b1, c11); }
            { var ar = Vector256.Create(a[2]); c20 = Fma.MultiplyAdd(ar, b0, c20); c21 = Fma.MultiplyAdd(ar, b1, c21); }
            { var ar = Vector256.Create(a[3]); c30 = Fma.MultiplyAdd(ar, b0, c30); c31 = Fma.MultiplyAdd(ar, b1, c31); }
            { var ar = Vector256.Create(a[4]); c40 = Fma.MultiplyAdd(ar, b0, c40); c41 = Fma.MultiplyAdd(ar, b1, c41); }
            { var ar = Vector256.Create(a[5]); c50 = Fma.MultiplyAdd(ar, b0, c50); c51 = Fma.MultiplyAdd(ar, b1, c51); }
            }
            {
            var b0 = Vector256.Load(b + 8);
            var b1 = Vector256.Load(b + 12);
            { var ar = Vector256.Create(a[6]); c00 = Fma.MultiplyAdd(ar, b0, c00); c01 = Fma.MultiplyAdd(ar, b1, c01); }
            { var ar = Vector256.Create(a[7]); c10 = Fma.MultiplyAdd(ar, b0, c10); c11 = Fma.MultiplyAdd(ar, b1, c11); }
            { var ar = Vector256.Create(a[8]); c20 = Fma.MultiplyAdd(ar, b0, c20); c21 = Fma.MultiplyAdd(ar, b1, c21); }
            { var ar = Vector256.Create(a[9]); c30 = Fma.MultiplyAdd(ar, b0, c30); c31 = Fma.MultiplyAdd(ar, b1, c31); }
            { var ar = Vector256.Create(a[10]); c40 = Fma.MultiplyAdd(ar, b0, c40); c41 = Fma.MultiplyAdd(ar, b1, c41); }
            { var ar = Vector256.Create(a[11]); c50 = Fma.MultiplyAdd(ar, b0, c50); c51 = Fma.MultiplyAdd(ar, b1, c51); }
            }
            {
            var b0 = Vector256.Load(b + 16);
            var b1 = Vector256.Load(b + 20);
            { var ar = Vector256.Create(a[12]); c00 = Fma.MultiplyAdd(ar, b0, c00); c01 = Fma.MultiplyAdd(ar, b1, c01); }
            { var ar = Vector256.Create(a[13]); c10 = Fma.MultiplyAdd(ar, b0, c10); c11 = Fma.MultiplyAdd(ar, b1, c11); }
            { var ar = Vector256.Create(a[14]); c20 = Fma.MultiplyAdd(ar, b0, c20); c21 = Fma.MultiplyAdd(ar, b1, c21); }
            { var ar = Vector256.Create(a[15]); c30 = Fma.MultiplyAdd(ar, b0, c30); c31 = Fma.MultiplyAdd(ar, b1, c31); }
            { var ar = Vector256.Create(a[16]); c40 = Fma.MultiplyAdd(ar, b0, c40); c41 = Fma.MultiplyAdd(ar, b1, c41); }
            { var ar = Vector256.Create(a[17]); c50 = Fma.MultiplyAdd(ar, b0, c50); c51 = Fma.MultiplyAdd(ar, b1, c51); }
            }
            {
            var b0 = Vector256.Load(b + 24);
            var b1 = Vector256.Load(b + 28);
            { var ar = Vector256.Create(a[18]); c00 = Fma.MultiplyAdd(ar, b0, c00); c01 = Fma.MultiplyAdd(ar, b1, c01); }
            { var ar = Vector256.Create(a[19]); c10 = Fma.MultiplyAdd(ar, b0, c10); c11 = Fma.MultiplyAdd(ar, b1, c11); }
            { var ar = Vector256.Create(a[20]); c20 = Fma.MultiplyAdd(ar, b0, c20); c21 = Fma.MultiplyAdd(ar, b1, c21); }
            { var ar = Vector256.Create(a[21]); c30 = Fma.MultiplyAdd(ar, b0, c30); c31 = Fma.MultiplyAdd(ar, b1, c31); }
            { var ar = Vector256.Create(a[22]); c40 = Fma.MultiplyAdd(ar, b0, c40); c41 = Fma.MultiplyAdd(ar, b1, c41); }
            { var ar = Vector256.Create(a[23]); c50 = Fma.MultiplyAdd(ar, b0, c50); c51 = Fma.MultiplyAdd(ar, b1, c51); }
            }
            a += 24; b += 32;
        }
        for (; p < kc; p++)
        {
            {
            var b0 = Vector256.Load(b + 0);
            var b1 = Vector256.Load(b + 4);
            { var ar = Vector256.Create(a[0]); c00 = Fma.MultiplyAdd(ar, b0, c00); c01 = Fma.MultiplyAdd(ar, b1, c01); }
            { var ar = Vector256.Create(a[1]); c10 = Fma.MultiplyAdd(ar, b0, c10); c11 = Fma.MultiplyAdd(ar, b1, c11); }
            { var ar = Vector256.Create(a[2]); c20 = Fma.MultiplyAdd(ar, b0, c20); c21 = Fma.MultiplyAdd(ar, b1, c21); }
            { var ar = Vector256.Create(a[3]); c30 = Fma.MultiplyAdd(ar, b0, c30); c31 = Fma.MultiplyAdd(ar, b1, c31); }
            { var ar = Vector256.Create(a[4]); c40 = Fma.MultiplyAdd(ar, b0, c40); c41 = Fma.MultiplyAdd(ar, b1, c41); }
            { var ar = Vector256.Create(a[5]); c50 = Fma.MultiplyAdd(ar, b0, c50); c51 = Fma.MultiplyAdd(ar, b1, c51); }
            }
            a += 6; b += 8;
        }
        var va = Vector256.Create(alpha);
        if (overwrite)
        {
            { double* cr = c + 0 * ldc; Vector256.Store(c00 * va, cr + 0); Vector256.Store(c01 * va, cr + 4); }
            { double* cr = c + 1 * ldc; Vector256.Store(c10 * va, cr + 0); Vector256.Store(c11 * va, cr + 4); }
            { double* cr = c + 2 * ldc; Vector256.Store(c20 * va, cr + 0); Vector256.Store(c21 * va, cr + 4); }
            { double* cr = c + 3 * ldc; Vector256.Store(c30 * va, cr + 0); Vector256.Store(c31 * va, cr + 4); }
            { double* cr = c + 4 * ldc; Vector256.Store(c40 * va, cr + 0); Vector256.Store(c41 * va, cr + 4); }
            { double* cr = c + 5 * ldc; Vector256.Store(c50 * va, cr + 0); Vector256.Store(c51 * va, cr + 4); }
        }
        else
        {
            var vb = Vector256.Create(beta);
            { double* cr = c + 0 * ldc; Vector256.Store(Fma.MultiplyAdd(Vector256.Load(cr + 0), vb, c00 * va), cr + 0); Vector256.Store(Fma.MultiplyAdd(Vector256.Load(cr + 4), vb, c01 * va), cr + 4); }
            { double* cr = c + 1 * ldc; Vector256.Store(Fma.MultiplyAdd(Vector256.Load(cr + 0), vb, c10 * va), cr + 0); Vector256.Store(Fma.MultiplyAdd(Vector256.Load(cr + 4), vb, c11 * va), cr + 4); }
            { double* cr = c + 2 * ldc; Vector256.Store(Fma.MultiplyAdd(Vector256.Load(cr + 0), vb, c20 * va), cr + 0); Vector256.Store(Fma.MultiplyAdd(Vector256.Load(cr + 4), vb, c21 * va), cr + 4); }
            { double* cr = c + 3 * ldc; Vector256.Store(Fma.MultiplyAdd(Vector256.Load(cr + 0), vb, c30 * va), cr + 0); Vector256.Store(Fma.MultiplyAdd(Vector256.Load(cr + 4), vb, c31 * va), cr + 4); }
            { double* cr = c + 4 * ldc; Vector256.Store(Fma.MultiplyAdd(Vector256.Load(cr + 0), vb, c40 * va), cr + 0); Vector256.Store(Fma.MultiplyAdd(Vector256.Load(cr + 4), vb, c41 * va), cr + 4); }
            { double* cr = c + 5 * ldc; Vector256.Store(Fma.MultiplyAdd(Vector256.Load(cr + 0), vb, c50 * va), cr + 0); Vector256.Store(Fma.MultiplyAdd(Vector256.Load(cr + 4), vb, c51 * va), cr + 4); }
        }
    }

    /// <summary>
    /// The last 4 rows of a panel (the frozen map's single-vector products have 64 = 10·6 + 4 rows): 4×8 with 8
    /// accumulators, A read at the 6-row panel stride, written straight into C.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static bool RunRows(int rows, int kc, double* a, double* b, double* c, long ldc, double alpha, double beta, bool overwrite)
    {
        if (rows != 4) return false;
        Vector256<double> c00 = default, c01 = default, c10 = default, c11 = default;
        Vector256<double> c20 = default, c21 = default, c30 = default, c31 = default;
        int p = 0;
        for (; p + 2 <= kc; p += 2, a += 12, b += 16)
        {
            var b0 = Vector256.Load(b);
            var b1 = Vector256.Load(b + 4);
            var ar = Vector256.Create(a[0]); c00 = Fma.MultiplyAdd(ar, b0, c00); c01 = Fma.MultiplyAdd(ar, b1, c01);
            ar = Vector256.Create(a[1]); c10 = Fma.MultiplyAdd(ar, b0, c10); c11 = Fma.MultiplyAdd(ar, b1, c11);
            ar = Vector256.Create(a[2]); c20 = Fma.MultiplyAdd(ar, b0, c20); c21 = Fma.MultiplyAdd(ar, b1, c21);
            ar = Vector256.Create(a[3]); c30 = Fma.MultiplyAdd(ar, b0, c30); c31 = Fma.MultiplyAdd(ar, b1, c31);
            b0 = Vector256.Load(b + 8);
            b1 = Vector256.Load(b + 12);
            ar = Vector256.Create(a[6]); c00 = Fma.MultiplyAdd(ar, b0, c00); c01 = Fma.MultiplyAdd(ar, b1, c01);
            ar = Vector256.Create(a[7]); c10 = Fma.MultiplyAdd(ar, b0, c10); c11 = Fma.MultiplyAdd(ar, b1, c11);
            ar = Vector256.Create(a[8]); c20 = Fma.MultiplyAdd(ar, b0, c20); c21 = Fma.MultiplyAdd(ar, b1, c21);
            ar = Vector256.Create(a[9]); c30 = Fma.MultiplyAdd(ar, b0, c30); c31 = Fma.MultiplyAdd(ar, b1, c31);
        }
        for (; p < kc; p++, a += 6, b += 8)
        {
            var b0 = Vector256.Load(b);
            var b1 = Vector256.Load(b + 4);
            var ar = Vector256.Create(a[0]); c00 = Fma.MultiplyAdd(ar, b0, c00); c01 = Fma.MultiplyAdd(ar, b1, c01);
            ar = Vector256.Create(a[1]); c10 = Fma.MultiplyAdd(ar, b0, c10); c11 = Fma.MultiplyAdd(ar, b1, c11);
            ar = Vector256.Create(a[2]); c20 = Fma.MultiplyAdd(ar, b0, c20); c21 = Fma.MultiplyAdd(ar, b1, c21);
            ar = Vector256.Create(a[3]); c30 = Fma.MultiplyAdd(ar, b0, c30); c31 = Fma.MultiplyAdd(ar, b1, c31);
        }
        var va = Vector256.Create(alpha);
        double* r0 = c, r1 = c + ldc, r2 = c + 2 * ldc, r3 = c + 3 * ldc;
        if (overwrite)
        {
            Vector256.Store(c00 * va, r0); Vector256.Store(c01 * va, r0 + 4);
            Vector256.Store(c10 * va, r1); Vector256.Store(c11 * va, r1 + 4);
            Vector256.Store(c20 * va, r2); Vector256.Store(c21 * va, r2 + 4);
            Vector256.Store(c30 * va, r3); Vector256.Store(c31 * va, r3 + 4);
        }
        else
        {
            var vb = Vector256.Create(beta);
            Vector256.Store(Fma.MultiplyAdd(Vector256.Load(r0), vb, c00 * va), r0); Vector256.Store(Fma.MultiplyAdd(Vector256.Load(r0 + 4), vb, c01 * va), r0 + 4);
            Vector256.Store(Fma.MultiplyAdd(Vector256.Load(r1), vb, c10 * va), r1); Vector256.Store(Fma.MultiplyAdd(Vector256.Load(r1 + 4), vb, c11 * va), r1 + 4);
            Vector256.Store(Fma.MultiplyAdd(Vector256.Load(r2), vb, c20 * va), r2); Vector256.Store(Fma.MultiplyAdd(Vector256.Load(r2 + 4), vb, c21 * va), r2 + 4);
            Vector256.Store(Fma.MultiplyAdd(Vector256.Load(r3), vb, c30 * va), r3); Vector256.Store(Fma.MultiplyAdd(Vector256.Load(r3 + 4), vb, c31 * va), r3 + 4);
        }
        return true;
    }
}

/// <summary>Vector256&lt;float&gt; micro-kernel: 6×16 tile (6 rows × 2 vectors), 12 accumulators.</summary>
internal readonly unsafe struct Avx2KernelF32 : IGemmKernel<float>
{
    public static int MR => 6;
    public static int NR => 16;
    public static int KC => 256;
    public static int MC => 240;
    public static int NC => 4080;

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Run(int kc, float* a, float* b, float* c, long ldc, float alpha, float beta, bool overwrite)
    {
        Vector256<float> c00 = default; Vector256<float> c01 = default;
        Vector256<float> c10 = default; Vector256<float> c11 = default;
        Vector256<float> c20 = default; Vector256<float> c21 = default;
        Vector256<float> c30 = default; Vector256<float> c31 = default;
        Vector256<float> c40 = default; Vector256<float> c41 = default;
        Vector256<float> c50 = default; Vector256<float> c51 = default;
        if (Sse.IsSupported)
        {
            Sse.Prefetch0(c + 0 * ldc); Sse.Prefetch0(c + 0 * ldc + 15);
            Sse.Prefetch0(c + 1 * ldc); Sse.Prefetch0(c + 1 * ldc + 15);
            Sse.Prefetch0(c + 2 * ldc); Sse.Prefetch0(c + 2 * ldc + 15);
            Sse.Prefetch0(c + 3 * ldc); Sse.Prefetch0(c + 3 * ldc + 15);
            Sse.Prefetch0(c + 4 * ldc); Sse.Prefetch0(c + 4 * ldc + 15);
            Sse.Prefetch0(c + 5 * ldc); Sse.Prefetch0(c + 5 * ldc + 15);
        }
        int p = 0;
        for (; p + 4 <= kc; p += 4)
        {
            if (Sse.IsSupported) Sse.Prefetch0(a + 192);
            {
            var b0 = Vector256.Load(b + 0);
            var b1 = Vector256.Load(b + 8);
            { var ar = Vector256.Create(a[0]); c00 = Fma.MultiplyAdd(ar, b0, c00); c01 = Fma.MultiplyAdd(ar, b1, c01); }
            { var ar = Vector256.Create(a[1]); c10 = Fma.MultiplyAdd(ar, b0, c10); c11 = Fma.MultiplyAdd(ar, b1, c11); }
            { var ar = Vector256.Create(a[2]); c20 = Fma.MultiplyAdd(ar, b0, c20); c21 = Fma.MultiplyAdd(ar, b1, c21); }
            { var ar = Vector256.Create(a[3]); c30 = Fma.MultiplyAdd(ar, b0, c30); c31 = Fma.MultiplyAdd(ar, b1, c31); }
            { var ar = Vector256.Create(a[4]); c40 = Fma.MultiplyAdd(ar, b0, c40); c41 = Fma.MultiplyAdd(ar, b1, c41); }
            { var ar = Vector256.Create(a[5]); c50 = Fma.MultiplyAdd(ar, b0, c50); c51 = Fma.MultiplyAdd(ar, b1, c51); }
            }
            {
            var b0 = Vector256.Load(b + 16);
            var b1 = Vector256.Load(b + 24);
            { var ar = Vector256.Create(a[6]); c00 = Fma.MultiplyAdd(ar, b0, c00); c01 = Fma.MultiplyAdd(ar, b1, c01); }
            { var ar = Vector256.Create(a[7]); c10 = Fma.MultiplyAdd(ar, b0, c10); c11 = Fma.MultiplyAdd(ar, b1, c11); }
            { var ar = Vector256.Create(a[8]); c20 = Fma.MultiplyAdd(ar, b0, c20); c21 = Fma.MultiplyAdd(ar, b1, c21); }
            { var ar = Vector256.Create(a[9]); c30 = Fma.MultiplyAdd(ar, b0, c30); c31 = Fma.MultiplyAdd(ar, b1, c31); }
            { var ar = Vector256.Create(a[10]); c40 = Fma.MultiplyAdd(ar, b0, c40); c41 = Fma.MultiplyAdd(ar, b1, c41); }
            { var ar = Vector256.Create(a[11]); c50 = Fma.MultiplyAdd(ar, b0, c50); c51 = Fma.MultiplyAdd(ar, b1, c51); }
            }
            {
            var b0 = Vector256.Load(b + 32);
            var b1 = Vector256.Load(b + 40);
            { var ar = Vector256.Create(a[12]); c00 = Fma.MultiplyAdd(ar, b0, c00); c01 = Fma.MultiplyAdd(ar, b1, c01); }
            { var ar = Vector256.Create(a[13]); c10 = Fma.MultiplyAdd(ar, b0, c10); c11 = Fma.MultiplyAdd(ar, b1, c11); }
            { var ar = Vector256.Create(a[14]); c20 = Fma.MultiplyAdd(ar, b0, c20); c21 = Fma.MultiplyAdd(ar, b1, c21); }
            { var ar = Vector256.Create(a[15]); c30 = Fma.MultiplyAdd(ar, b0, c30); c31 = Fma.MultiplyAdd(ar, b1, c31); }
            { var ar = Vector256.Create(a[16]); c40 = Fma.MultiplyAdd(ar, b0, c40); c41 = Fma.MultiplyAdd(ar, b1, c41); }
            { var ar = Vector256.Create(a[17]); c50 = Fma.MultiplyAdd(ar, b0, c50); c51 = Fma.MultiplyAdd(ar, b1, c51); }
            }
            {
            var b0 = Vector256.Load(b + 48);
            var b1 = Vector256.Load(b + 56);
            { var ar = Vector256.Create(a[18]); c00 = Fma.MultiplyAdd(ar, b0, c00); c01 = Fma.MultiplyAdd(ar, b1, c01); }
            { var ar = Vector256.Create(a[19]); c10 = Fma.MultiplyAdd(ar, b0, c10); c11 = Fma.MultiplyAdd(ar, b1, c11); }
            { var ar = Vector256.Create(a[20]); c20 = Fma.MultiplyAdd(ar, b0, c20); c21 = Fma.MultiplyAdd(ar, b1, c21); }
            { var ar = Vector256.Create(a[21]); c30 = Fma.MultiplyAdd(ar, b0, c30); c31 = Fma.MultiplyAdd(ar, b1, c31); }
            { var ar = Vector256.Create(a[22]); c40 = Fma.MultiplyAdd(ar, b0, c40); c41 = Fma.MultiplyAdd(ar, b1, c41); }
            { var ar = Vector256.Create(a[23]); c50 = Fma.MultiplyAdd(ar, b0, c50); c51 = Fma.MultiplyAdd(ar, b1, c51); }
            }
            a += 24; b += 64;
        }
        for (; p < kc; p++)
        {
            {
            var b0 = Vector256.Load(b + 0);
            var b1 = Vector256.Load(b + 8);
            { var ar = Vector256.Create(a[0]); c00 = Fma.MultiplyAdd(ar, b0, c00); c01 = Fma.MultiplyAdd(ar, b1, c01); }
            { var ar = Vector256.Create(a[1]); c10 = Fma.MultiplyAdd(ar, b0, c10); c11 = Fma.MultiplyAdd(ar, b1, c11); }
            { var ar = Vector256.Create(a[2]); c20 = Fma.MultiplyAdd(ar, b0, c20); c21 = Fma.MultiplyAdd(ar, b1, c21); }
            { var ar = Vector256.Create(a[3]); c30 = Fma.MultiplyAdd(ar, b0, c30); c31 = Fma.MultiplyAdd(ar, b1, c31); }
            { var ar = Vector256.Create(a[4]); c40 = Fma.MultiplyAdd(ar, b0, c40); c41 = Fma.MultiplyAdd(ar, b1, c41); }
            { var ar = Vector256.Create(a[5]); c50 = Fma.MultiplyAdd(ar, b0, c50); c51 = Fma.MultiplyAdd(ar, b1, c51); }
            }
            a += 6; b += 16;
        }
        var va = Vector256.Create(alpha);
        if (overwrite)
        {
            { float* cr = c + 0 * ldc; Vector256.Store(c00 * va, cr + 0); Vector256.Store(c01 * va, cr + 8); }
            { float* cr = c + 1 * ldc; Vector256.Store(c10 * va, cr + 0); Vector256.Store(c11 * va, cr + 8); }
            { float* cr = c + 2 * ldc; Vector256.Store(c20 * va, cr + 0); Vector256.Store(c21 * va, cr + 8); }
            { float* cr = c + 3 * ldc; Vector256.Store(c30 * va, cr + 0); Vector256.Store(c31 * va, cr + 8); }
            { float* cr = c + 4 * ldc; Vector256.Store(c40 * va, cr + 0); Vector256.Store(c41 * va, cr + 8); }
            { float* cr = c + 5 * ldc; Vector256.Store(c50 * va, cr + 0); Vector256.Store(c51 * va, cr + 8); }
        }
        else
        {
            var vb = Vector256.Create(beta);
            { float* cr = c + 0 * ldc; Vector256.Store(Fma.MultiplyAdd(Vector256.Load(cr + 0), vb, c00 * va), cr + 0); Vector256.Store(Fma.MultiplyAdd(Vector256.Load(cr + 8), vb, c01 * va), cr + 8); }
            { float* cr = c + 1 * ldc; Vector256.Store(Fma.MultiplyAdd(Vector256.Load(cr + 0), vb, c10 * va), cr + 0); Vector256.Store(Fma.MultiplyAdd(Vector256.Load(cr + 8), vb, c11 * va), cr + 8); }
            { float* cr = c + 2 * ldc; Vector256.Store(Fma.MultiplyAdd(Vector256.Load(cr + 0), vb, c20 * va), cr + 0); Vector256.Store(Fma.MultiplyAdd(Vector256.Load(cr + 8), vb, c21 * va), cr + 8); }
            { float* cr = c + 3 * ldc; Vector256.Store(Fma.MultiplyAdd(Vector256.Load(cr + 0), vb, c30 * va), cr + 0); Vector256.Store(Fma.MultiplyAdd(Vector256.Load(cr + 8), vb, c31 * va), cr + 8); }
            { float* cr = c + 4 * ldc; Vector256.Store(Fma.MultiplyAdd(Vector256.Load(cr + 0), vb, c40 * va), cr + 0); Vector256.Store(Fma.MultiplyAdd(Vector256.Load(cr + 8), vb, c41 * va), cr + 8); }
            { float* cr = c + 5 * ldc; Vector256.Store(Fma.MultiplyAdd(Vector256.Load(cr + 0), vb, c50 * va), cr + 0); Vector256.Store(Fma.MultiplyAdd(Vector256.Load(cr + 8), vb, c51 * va), cr + 8); }
        }
    }
}

/// <summary>Vector512&lt;double&gt; micro-kernel: 12×16 tile (12 rows × 2 vectors), 24 accumulators.</summary>
internal readonly unsafe struct Avx512KernelF64 : IGemmKernel<double>
{
    public static int MR => 12;
    public static int NR => 16;
    public static int KC => 256;
    public static int MC => 144;
    public static int NC => 4080;

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Run(int kc, double* a, double* b, double* c, long ldc, double alpha, double beta, bool overwrite)
    {
        Vector512<double> c00 = default; Vector512<double> c01 = default;
        Vector512<double> c10 = default; Vector512<double> c11 = default;
        Vector512<double> c20 = default; Vector512<double> c21 = default;
        Vector512<double> c30 = default; Vector512<double> c31 = default;
        Vector512<double> c40 = default; Vector512<double> c41 = default;
        Vector512<double> c50 = default; Vector512<double> c51 = default;
        Vector512<double> c60 = default; Vector512<double> c61 = default;
        Vector512<double> c70 = default; Vector512<double> c71 = default;
        Vector512<double> c80 = default; Vector512<double> c81 = default;
        Vector512<double> c90 = default; Vector512<double> c91 = default;
        Vector512<double> c100 = default; Vector512<double> c101 = default;
        Vector512<double> c110 = default; Vector512<double> c111 = default;
        if (Sse.IsSupported)
        {
            Sse.Prefetch0(c + 0 * ldc); Sse.Prefetch0(c + 0 * ldc + 15);
            Sse.Prefetch0(c + 1 * ldc); Sse.Prefetch0(c + 1 * ldc + 15);
            Sse.Prefetch0(c + 2 * ldc); Sse.Prefetch0(c + 2 * ldc + 15);
            Sse.Prefetch0(c + 3 * ldc); Sse.Prefetch0(c + 3 * ldc + 15);
            Sse.Prefetch0(c + 4 * ldc); Sse.Prefetch0(c + 4 * ldc + 15);
            Sse.Prefetch0(c + 5 * ldc); Sse.Prefetch0(c + 5 * ldc + 15);
            Sse.Prefetch0(c + 6 * ldc); Sse.Prefetch0(c + 6 * ldc + 15);
            Sse.Prefetch0(c + 7 * ldc); Sse.Prefetch0(c + 7 * ldc + 15);
            Sse.Prefetch0(c + 8 * ldc); Sse.Prefetch0(c + 8 * ldc + 15);
            Sse.Prefetch0(c + 9 * ldc); Sse.Prefetch0(c + 9 * ldc + 15);
            Sse.Prefetch0(c + 10 * ldc); Sse.Prefetch0(c + 10 * ldc + 15);
            Sse.Prefetch0(c + 11 * ldc); Sse.Prefetch0(c + 11 * ldc + 15);
        }
        int p = 0;
        for (; p + 4 <= kc; p += 4)
        {
            if (Sse.IsSupported) Sse.Prefetch0(a + 384);
            {
            var b0 = Vector512.Load(b + 0);
            var b1 = Vector512.Load(b + 8);
            { var ar = Vector512.Create(a[0]); c00 = Vector512.FusedMultiplyAdd(ar, b0, c00); c01 = Vector512.FusedMultiplyAdd(ar, b1, c01); }
            { var ar = Vector512.Create(a[1]); c10 = Vector512.FusedMultiplyAdd(ar, b0, c10); c11 = Vector512.FusedMultiplyAdd(ar, b1, c11); }
            { var ar = Vector512.Create(a[2]); c20 = Vector512.FusedMultiplyAdd(ar, b0, c20); c21 = Vector512.FusedMultiplyAdd(ar, b1, c21); }
            { var ar = Vector512.Create(a[3]); c30 = Vector512.FusedMultiplyAdd(ar, b0, c30); c31 = Vector512.FusedMultiplyAdd(ar, b1, c31); }
            { var ar = Vector512.Create(a[4]); c40 = Vector512.FusedMultiplyAdd(ar, b0, c40); c41 = Vector512.FusedMultiplyAdd(ar, b1, c41); }
            { var ar = Vector512.Create(a[5]); c50 = Vector512.FusedMultiplyAdd(ar, b0, c50); c51 = Vector512.FusedMultiplyAdd(ar, b1, c51); }
            { var ar = Vector512.Create(a[6]); c60 = Vector512.FusedMultiplyAdd(ar, b0, c60); c61 = Vector512.FusedMultiplyAdd(ar, b1, c61); }
            { var ar = Vector512.Create(a[7]); c70 = Vector512.FusedMultiplyAdd(ar, b0, c70); c71 = Vector512.FusedMultiplyAdd(ar, b1, c71); }
            { var ar = Vector512.Create(a[8]); c80 = Vector512.FusedMultiplyAdd(ar, b0, c80); c81 = Vector512.FusedMultiplyAdd(ar, b1, c81); }
            { var ar = Vector512.Create(a[9]); c90 = Vector512.FusedMultiplyAdd(ar, b0, c90); c91 = Vector512.FusedMultiplyAdd(ar, b1, c91); }
            { var ar = Vector512.Create(a[10]); c100 = Vector512.FusedMultiplyAdd(ar, b0, c100); c101 = Vector512.FusedMultiplyAdd(ar, b1, c101); }
            { var ar = Vector512.Create(a[11]); c110 = Vector512.FusedMultiplyAdd(ar, b0, c110); c111 = Vector512.FusedMultiplyAdd(ar, b1, c111); }
            }
            {
            var b0 = Vector512.Load(b + 16);
            var b1 = Vector512.Load(b + 24);
            { var ar = Vector512.Create(a[12]); c00 = Vector512.FusedMultiplyAdd(ar, b0, c00); c01 = Vector512.FusedMultiplyAdd(ar, b1, c01); }
            { var ar = Vector512.Create(a[13]); c10 = Vector512.FusedMultiplyAdd(ar, b0, c10); c11 = Vector512.FusedMultiplyAdd(ar, b1, c11); }
            { var ar = Vector512.Create(a[14]); c20 = Vector512.FusedMultiplyAdd(ar, b0, c20); c21 = Vector512.FusedMultiplyAdd(ar, b1, c21); }
            { var ar = Vector512.Create(a[15]); c30 = Vector512.FusedMultiplyAdd(ar, b0, c30); c31 = Vector512.FusedMultiplyAdd(ar, b1, c31); }
            { var ar = Vector512.Create(a[16]); c40 = Vector512.FusedMultiplyAdd(ar, b0, c40); c41 = Vector512.FusedMultiplyAdd(ar, b1, c41); }
            { var ar = Vector512.Create(a[17]); c50 = Vector512.FusedMultiplyAdd(ar, b0, c50); c51 = Vector512.FusedMultiplyAdd(ar, b1, c51); }
            { var ar = Vector512.Create(a[18]); c60 = Vector512.FusedMultiplyAdd(ar, b0, c60); c61 = Vector512.FusedMultiplyAdd(ar, b1, c61); }
            { var ar = Vector512.Create(a[19]); c70 = Vector512.FusedMultiplyAdd(ar, b0, c70); c71 = Vector512.FusedMultiplyAdd(ar, b1, c71); }
            { var ar = Vector512.Create(a[20]); c80 = Vector512.FusedMultiplyAdd(ar, b0, c80); c81 = Vector512.FusedMultiplyAdd(ar, b1, c81); }
            { var ar = Vector512.Create(a[21]); c90 = Vector512.FusedMultiplyAdd(ar, b0, c90); c91 = Vector512.FusedMultiplyAdd(ar, b1, c91); }
            { var ar = Vector512.Create(a[22]); c100 = Vector512.FusedMultiplyAdd(ar, b0, c100); c101 = Vector512.FusedMultiplyAdd(ar, b1, c101); }
            { var ar = Vector512.Create(a[23]); c110 = Vector512.FusedMultiplyAdd(ar, b0, c110); c111 = Vector512.FusedMultiplyAdd(ar, b1, c111); }
            }
            {
            var b0 = Vector512.Load(b + 32);
            var b1 = Vector512.Load(b + 40);
            { var ar = Vector512.Create(a[24]); c00 = Vector512.FusedMultiplyAdd(ar, b0, c00); c01 = Vector512.FusedMultiplyAdd(ar, b1, c01); }
            { var ar = Vector512.Create(a[25]); c10 = Vector512.FusedMultiplyAdd(ar, b0, c10); c11 = Vector512.FusedMultiplyAdd(ar, b1, c11); }
            { var ar = Vector512.Create(a[26]); c20 = Vector512.FusedMultiplyAdd(ar, b0, c20); c21 = Vector512.FusedMultiplyAdd(ar, b1, c21); }
            { var ar = Vector512.Create(a[27]); c30 = Vector512.FusedMultiplyAdd(ar, b0, c30); c31 = Vector512.FusedMultiplyAdd(ar, b1, c31); }
            { var ar = Vector512.Create(a[28]); c40 = Vector512.FusedMultiplyAdd(ar, b0, c40); c41 = Vector512.FusedMultiplyAdd(ar, b1, c41); }
            { var ar = Vector512.Create(a[29]); c50 = Vector512.FusedMultiplyAdd(ar, b0, c50); c51 = Vector512.FusedMultiplyAdd(ar, b1, c51); }
            { var ar = Vector512.Create(a[30]); c60 = Vector512.FusedMultiplyAdd(ar, b0, c60); c61 = Vector512.FusedMultiplyAdd(ar, b1, c61); }
            { var ar = Vector512.Create(a[31]); c70 = Vector512.FusedMultiplyAdd(ar, b0, c70); c71 = Vector512.FusedMultiplyAdd(ar, b1, c71); }
            { var ar = Vector512.Create(a[32]); c80 = Vector512.FusedMultiplyAdd(ar, b0, c80); c81 = Vector512.FusedMultiplyAdd(ar, b1, c81); }
            { var ar = Vector512.Create(a[33]); c90 = Vector512.FusedMultiplyAdd(ar, b0, c90); c91 = Vector512.FusedMultiplyAdd(ar, b1, c91); }
            { var ar = Vector512.Create(a[34]); c100 = Vector512.FusedMultiplyAdd(ar, b0, c100); c101 = Vector512.FusedMultiplyAdd(ar, b1, c101); }
            { var ar = Vector512.Create(a[35]); c110 = Vector512.FusedMultiplyAdd(ar, b0, c110); c111 = Vector512.FusedMultiplyAdd(ar, b1, c111); }
            }
            {
            var b0 = Vector512.Load(b + 48);
            var b1 = Vector512.Load(b + 56);
            { var ar = Vector512.Create(a[36]); c00 = Vector512.FusedMultiplyAdd(ar, b0, c00); c01 = Vector512.FusedMultiplyAdd(ar, b1, c01); }
            { var ar = Vector512.Create(a[37]); c10 = Vector512.FusedMultiplyAdd(ar, b0, c10); c11 = Vector512.FusedMultiplyAdd(ar, b1, c11); }
            { var ar = Vector512.Create(a[38]); c20 = Vector512.FusedMultiplyAdd(ar, b0, c20); c21 = Vector512.FusedMultiplyAdd(ar, b1, c21); }
            { var ar = Vector512.Create(a[39]); c30 = Vector512.FusedMultiplyAdd(ar, b0, c30); c31 = Vector512.FusedMultiplyAdd(ar, b1, c31); }
            { var ar = Vector512.Create(a[40]); c40 = Vector512.FusedMultiplyAdd(ar, b0, c40); c41 = Vector512.FusedMultiplyAdd(ar, b1, c41); }
            { var ar = Vector512.Create(a[41]); c50 = Vector512.FusedMultiplyAdd(ar, b0, c50); c51 = Vector512.FusedMultiplyAdd(ar, b1, c51); }
            { var ar = Vector512.Create(a[42]); c60 = Vector512.FusedMultiplyAdd(ar, b0, c60); c61 = Vector512.FusedMultiplyAdd(ar, b1, c61); }
            { var ar = Vector512.Create(a[43]); c70 = Vector512.FusedMultiplyAdd(ar, b0, c70); c71 = Vector512.FusedMultiplyAdd(ar, b1, c71); }
            { var ar = Vector512.Create(a[44]); c80 = Vector512.FusedMultiplyAdd(ar, b0, c80); c81 = Vector512.FusedMultiplyAdd(ar, b1, c81); }
            { var ar = Vector512.Create(a[45]); c90 = Vector512.FusedMultiplyAdd(ar, b0, c90); c91 = Vector512.FusedMultiplyAdd(ar, b1, c91); }
            { var ar = Vector512.Create(a[46]); c100 = Vector512.FusedMultiplyAdd(ar, b0, c100); c101 = Vector512.FusedMultiplyAdd(ar, b1, c101); }
            { var ar = Vector512.Create(a[47]); c110 = Vector512.FusedMultiplyAdd(ar, b0, c110); c111 = Vector512.FusedMultiplyAdd(ar, b1, c111); }
            }
            a += 48; b += 64;
        }
        for (; p < kc; p++)
        {
            {
            var b0 = Vector512.Load(b + 0);
            var b1 = Vector512.Load(b + 8);
            { var ar = Vector512.Create(a[0]); c00 = Vector512.FusedMultiplyAdd(ar, b0, c00); c01 = Vector512.FusedMultiplyAdd(ar, b1, c01); }
            { var ar = Vector512.Create(a[1]); c10 = Vector512.FusedMultiplyAdd(ar, b0, c10); c11 = Vector512.FusedMultiplyAdd(ar, b1, c11); }
            { var ar = Vector512.Create(a[2]); c20 = Vector512.FusedMultiplyAdd(ar, b0, c20); c21 = Vector512.FusedMultiplyAdd(ar, b1, c21); }
            { var ar = Vector512.Create(a[3]); c30 = Vector512.FusedMultiplyAdd(ar, b0, c30); c31 = Vector512.FusedMultiplyAdd(ar, b1, c31); }
            { var ar = Vector512.Create(a[4]); c40 = Vector512.FusedMultiplyAdd(ar, b0, c40); c41 = Vector512.FusedMultiplyAdd(ar, b1, c41); }
            { var ar = Vector512.Create(a[5]); c50 = Vector512.FusedMultiplyAdd(ar, b0, c50); c51 = Vector512.FusedMultiplyAdd(ar, b1, c51); }
            { var ar = Vector512.Create(a[6]); c60 = Vector512.FusedMultiplyAdd(ar, b0, c60); c61 = Vector512.FusedMultiplyAdd(ar, b1, c61); }
            { var ar = Vector512.Create(a[7]); c70 = Vector512.FusedMultiplyAdd(ar, b0, c70); c71 = Vector512.FusedMultiplyAdd(ar, b1, c71); }
            { var ar = Vector512.Create(a[8]); c80 = Vector512.FusedMultiplyAdd(ar, b0, c80); c81 = Vector512.FusedMultiplyAdd(ar, b1, c81); }
            { var ar = Vector512.Create(a[9]); c90 = Vector512.FusedMultiplyAdd(ar, b0, c90); c91 = Vector512.FusedMultiplyAdd(ar, b1, c91); }
            { var ar = Vector512.Create(a[10]); c100 = Vector512.FusedMultiplyAdd(ar, b0, c100); c101 = Vector512.FusedMultiplyAdd(ar, b1, c101); }
            { var ar = Vector512.Create(a[11]); c110 = Vector512.FusedMultiplyAdd(ar, b0, c110); c111 = Vector512.FusedMultiplyAdd(ar, b1, c111); }
            }
            a += 12; b += 16;
        }
        var va = Vector512.Create(alpha);
        if (overwrite)
        {
            { double* cr = c + 0 * ldc; Vector512.Store(c00 * va, cr + 0); Vector512.Store(c01 * va, cr + 8); }
            { double* cr = c + 1 * ldc; Vector512.Store(c10 * va, cr + 0); Vector512.Store(c11 * va, cr + 8); }
            { double* cr = c + 2 * ldc; Vector512.Store(c20 * va, cr + 0); Vector512.Store(c21 * va, cr + 8); }
            { double* cr = c + 3 * ldc; Vector512.Store(c30 * va, cr + 0); Vector512.Store(c31 * va, cr + 8); }
            { double* cr = c + 4 * ldc; Vector512.Store(c40 * va, cr + 0); Vector512.Store(c41 * va, cr + 8); }
            { double* cr = c + 5 * ldc; Vector512.Store(c50 * va, cr + 0); Vector512.Store(c51 * va, cr + 8); }
            { double* cr = c + 6 * ldc; Vector512.Store(c60 * va, cr + 0); Vector512.Store(c61 * va, cr + 8); }
            { double* cr = c + 7 * ldc; Vector512.Store(c70 * va, cr + 0); Vector512.Store(c71 * va, cr + 8); }
            { double* cr = c + 8 * ldc; Vector512.Store(c80 * va, cr + 0); Vector512.Store(c81 * va, cr + 8); }
            { double* cr = c + 9 * ldc; Vector512.Store(c90 * va, cr + 0); Vector512.Store(c91 * va, cr + 8); }
            { double* cr = c + 10 * ldc; Vector512.Store(c100 * va, cr + 0); Vector512.Store(c101 * va, cr + 8); }
            { double* cr = c + 11 * ldc; Vector512.Store(c110 * va, cr + 0); Vector512.Store(c111 * va, cr + 8); }
        }
        else
        {
            var vb = Vector512.Create(beta);
            { double* cr = c + 0 * ldc; Vector512.Store(Vector512.FusedMultiplyAdd(Vector512.Load(cr + 0), vb, c00 * va), cr + 0); Vector512.Store(Vector512.FusedMultiplyAdd(Vector512.Load(cr + 8), vb, c01 * va), cr + 8); }
            { double* cr = c + 1 * ldc; Vector512.Store(Vector512.FusedMultiplyAdd(Vector512.Load(cr + 0), vb, c10 * va), cr + 0); Vector512.Store(Vector512.FusedMultiplyAdd(Vector512.Load(cr + 8), vb, c11 * va), cr + 8); }
            { double* cr = c + 2 * ldc; Vector512.Store(Vector512.FusedMultiplyAdd(Vector512.Load(cr + 0), vb, c20 * va), cr + 0); Vector512.Store(Vector512.FusedMultiplyAdd(Vector512.Load(cr + 8), vb, c21 * va), cr + 8); }
            { double* cr = c + 3 * ldc; Vector512.Store(Vector512.FusedMultiplyAdd(Vector512.Load(cr + 0), vb, c30 * va), cr + 0); Vector512.Store(Vector512.FusedMultiplyAdd(Vector512.Load(cr + 8), vb, c31 * va), cr + 8); }
            { double* cr = c + 4 * ldc; Vector512.Store(Vector512.FusedMultiplyAdd(Vector512.Load(cr + 0), vb, c40 * va), cr + 0); Vector512.Store(Vector512.FusedMultiplyAdd(Vector512.Load(cr + 8), vb, c41 * va), cr + 8); }
            { double* cr = c + 5 * ldc; Vector512.Store(Vector512.FusedMultiplyAdd(Vector512.Load(cr + 0), vb, c50 * va), cr + 0); Vector512.Store(Vector512.FusedMultiplyAdd(Vector512.Load(cr + 8), vb, c51 * va), cr + 8); }
            { double* cr = c + 6 * ldc; Vector512.Store(Vector512.FusedMultiplyAdd(Vector512.Load(cr + 0), vb, c60 * va), cr + 0); Vector512.Store(Vector512.FusedMultiplyAdd(Vector512.Load(cr + 8), vb, c61 * va), cr + 8); }
            { double* cr = c + 7 * ldc; Vector512.Store(Vector512.FusedMultiplyAdd(Vector512.Load(cr + 0), vb, c70 * va), cr + 0); Vector512.Store(Vector512.FusedMultiplyAdd(Vector512.Load(cr + 8), vb, c71 * va), cr + 8); }
            { double* cr = c + 8 * ldc; Vector512.Store(Vector512.FusedMultiplyAdd(Vector512.Load(cr + 0), vb, c80 * va), cr + 0); Vector512.Store(Vector512.FusedMultiplyAdd(Vector512.Load(cr + 8), vb, c81 * va), cr + 8); }
            { double* cr = c + 9 * ldc; Vector512.Store(Vector512.FusedMultiplyAdd(Vector512.Load(cr + 0), vb, c90 * va), cr + 0); Vector512.Store(Vector512.FusedMultiplyAdd(Vector512.Load(cr + 8), vb, c91 * va), cr + 8); }
            { double* cr = c + 10 * ldc; Vector512.Store(Vector512.FusedMultiplyAdd(Vector512.Load(cr + 0), vb, c100 * va), cr + 0); Vector512.Store(Vector512.FusedMultiplyAdd(Vector512.Load(cr + 8), vb, c101 * va), cr + 8); }
            { double* cr = c + 11 * ldc; Vector512.Store(Vector512.FusedMultiplyAdd(Vector512.Load(cr + 0), vb, c110 * va), cr + 0); Vector512.Store(Vector512.FusedMultiplyAdd(Vector512.Load(cr + 8), vb, c111 * va), cr + 8); }
        }
    }
}

/// <summary>Vector512&lt;float&gt; micro-kernel: 12×32 tile (12 rows × 2 vectors), 24 accumulators.</summary>
internal readonly unsafe struct Avx512KernelF32 : IGemmKernel<float>
{
    public static int MR => 12;
    public static int NR => 32;
    public static int KC => 256;
    public static int MC => 144;
    public static int NC => 4096;

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Run(int kc, float* a, float* b, float* c, long ldc, float alpha, float beta, bool overwrite)
    {
        Vector512<float> c00 = default; Vector512<float> c01 = default;
        Vector512<float> c10 = default; Vector512<float> c11 = default;
        Vector512<float> c20 = default; Vector512<float> c21 = default;
        Vector512<float> c30 = default; Vector512<float> c31 = default;
        Vector512<float> c40 = default; Vector512<float> c41 = default;
        Vector512<float> c50 = default; Vector512<float> c51 = default;
        Vector512<float> c60 = default; Vector512<float> c61 = default;
        Vector512<float> c70 = default; Vector512<float> c71 = default;
        Vector512<float> c80 = default; Vector512<float> c81 = default;
        Vector512<float> c90 = default; Vector512<float> c91 = default;
        Vector512<float> c100 = default; Vector512<float> c101 = default;
        Vector512<float> c110 = default; Vector512<float> c111 = default;
        if (Sse.IsSupported)
        {
            Sse.Prefetch0(c + 0 * ldc); Sse.Prefetch0(c + 0 * ldc + 31);
            Sse.Prefetch0(c + 1 * ldc); Sse.Prefetch0(c + 1 * ldc + 31);
            Sse.Prefetch0(c + 2 * ldc); Sse.Prefetch0(c + 2 * ldc + 31);
            Sse.Prefetch0(c + 3 * ldc); Sse.Prefetch0(c + 3 * ldc + 31);
            Sse.Prefetch0(c + 4 * ldc); Sse.Prefetch0(c + 4 * ldc + 31);
            Sse.Prefetch0(c + 5 * ldc); Sse.Prefetch0(c + 5 * ldc + 31);
            Sse.Prefetch0(c + 6 * ldc); Sse.Prefetch0(c + 6 * ldc + 31);
            Sse.Prefetch0(c + 7 * ldc); Sse.Prefetch0(c + 7 * ldc + 31);
            Sse.Prefetch0(c + 8 * ldc); Sse.Prefetch0(c + 8 * ldc + 31);
            Sse.Prefetch0(c + 9 * ldc); Sse.Prefetch0(c + 9 * ldc + 31);
            Sse.Prefetch0(c + 10 * ldc); Sse.Prefetch0(c + 10 * ldc + 31);
            Sse.Prefetch0(c + 11 * ldc); Sse.Prefetch0(c + 11 * ldc + 31);
        }
        int p = 0;
        for (; p + 4 <= kc; p += 4)
        {
            if (Sse.IsSupported) Sse.Prefetch0(a + 384);
            {
            var b0 = Vector512.Load(b + 0);
            var b1 = Vector512.Load(b + 16);
            { var ar = Vector512.Create(a[0]); c00 = Vector512.FusedMultiplyAdd(ar, b0, c00); c01 = Vector512.FusedMultiplyAdd(ar, b1, c01); }
            { var ar = Vector512.Create(a[1]); c10 = Vector512.FusedMultiplyAdd(ar, b0, c10); c11 = Vector512.FusedMultiplyAdd(ar, b1, c11); }
            { var ar = Vector512.Create(a[2]); c20 = Vector512.FusedMultiplyAdd(ar, b0, c20); c21 = Vector512.FusedMultiplyAdd(ar, b1, c21); }
            { var ar = Vector512.Create(a[3]); c30 = Vector512.FusedMultiplyAdd(ar, b0, c30); c31 = Vector512.FusedMultiplyAdd(ar, b1, c31); }
            { var ar = Vector512.Create(a[4]); c40 = Vector512.FusedMultiplyAdd(ar, b0, c40); c41 = Vector512.FusedMultiplyAdd(ar, b1, c41); }
            { var ar = Vector512.Create(a[5]); c50 = Vector512.FusedMultiplyAdd(ar, b0, c50); c51 = Vector512.FusedMultiplyAdd(ar, b1, c51); }
            { var ar = Vector512.Create(a[6]); c60 = Vector512.FusedMultiplyAdd(ar, b0, c60); c61 = Vector512.FusedMultiplyAdd(ar, b1, c61); }
            { var ar = Vector512.Create(a[7]); c70 = Vector512.FusedMultiplyAdd(ar, b0, c70); c71 = Vector512.FusedMultiplyAdd(ar, b1, c71); }
            { var ar = Vector512.Create(a[8]); c80 = Vector512.FusedMultiplyAdd(ar, b0, c80); c81 = Vector512.FusedMultiplyAdd(ar, b1, c81); }
            { var ar = Vector512.Create(a[9]); c90 = Vector512.FusedMultiplyAdd(ar, b0, c90); c91 = Vector512.FusedMultiplyAdd(ar, b1, c91); }
            { var ar = Vector512.Create(a[10]); c100 = Vector512.FusedMultiplyAdd(ar, b0, c100); c101 = Vector512.FusedMultiplyAdd(ar, b1, c101); }
            { var ar = Vector512.Create(a[11]); c110 = Vector512.FusedMultiplyAdd(ar, b0, c110); c111 = Vector512.FusedMultiplyAdd(ar, b1, c111); }
            }
            {
            var b0 = Vector512.Load(b + 32);
            var b1 = Vector512.Load(b + 48);
            { var ar = Vector512.Create(a[12]); c00 = Vector512.FusedMultiplyAdd(ar, b0, c00); c01 = Vector512.FusedMultiplyAdd(ar, b1, c01); }
            { var ar = Vector512.Create(a[13]); c10 = Vector512.FusedMultiplyAdd(ar, b0, c10); c11 = Vector512.FusedMultiplyAdd(ar, b1, c11); }
            { var ar = Vector512.Create(a[14]); c20 = Vector512.FusedMultiplyAdd(ar, b0, c20); c21 = Vector512.FusedMultiplyAdd(ar, b1, c21); }
            { var ar = Vector512.Create(a[15]); c30 = Vector512.FusedMultiplyAdd(ar, b0, c30); c31 = Vector512.FusedMultiplyAdd(ar, b1, c31); }
            { var ar = Vector512.Create(a[16]); c40 = Vector512.FusedMultiplyAdd(ar, b0, c40); c41 = Vector512.FusedMultiplyAdd(ar, b1, c41); }
            { var ar = Vector512.Create(a[17]); c50 = Vector512.FusedMultiplyAdd(ar, b0, c50); c51 = Vector512.FusedMultiplyAdd(ar, b1, c51); }
            { var ar = Vector512.Create(a[18]); c60 = Vector512.FusedMultiplyAdd(ar, b0, c60); c61 = Vector512.FusedMultiplyAdd(ar, b1, c61); }
            { var ar = Vector512.Create(a[19]); c70 = Vector512.FusedMultiplyAdd(ar, b0, c70); c71 = Vector512.FusedMultiplyAdd(ar, b1, c71); }
            { var ar = Vector512.Create(a[20]); c80 = Vector512.FusedMultiplyAdd(ar, b0, c80); c81 = Vector512.FusedMultiplyAdd(ar, b1, c81); }
            { var ar = Vector512.Create(a[21]); c90 = Vector512.FusedMultiplyAdd(ar, b0, c90); c91 = Vector512.FusedMultiplyAdd(ar, b1, c91); }
            { var ar = Vector512.Create(a[22]); c100 = Vector512.FusedMultiplyAdd(ar, b0, c100); c101 = Vector512.FusedMultiplyAdd(ar, b1, c101); }
            { var ar = Vector512.Create(a[23]); c110 = Vector512.FusedMultiplyAdd(ar, b0, c110); c111 = Vector512.FusedMultiplyAdd(ar, b1, c111); }
            }
            {
            var b0 = Vector512.Load(b + 64);
            var b1 = Vector512.Load(b + 80);
            { var ar = Vector512.Create(a[24]); c00 = Vector512.FusedMultiplyAdd(ar, b0, c00); c01 = Vector512.FusedMultiplyAdd(ar, b1, c01); }
            { var ar = Vector512.Create(a[25]); c10 = Vector512.FusedMultiplyAdd(ar, b0, c10); c11 = Vector512.FusedMultiplyAdd(ar, b1, c11); }
            { var ar = Vector512.Create(a[26]); c20 = Vector512.FusedMultiplyAdd(ar, b0, c20); c21 = Vector512.FusedMultiplyAdd(ar, b1, c21); }
            { var ar = Vector512.Create(a[27]); c30 = Vector512.FusedMultiplyAdd(ar, b0, c30); c31 = Vector512.FusedMultiplyAdd(ar, b1, c31); }
            { var ar = Vector512.Create(a[28]); c40 = Vector512.FusedMultiplyAdd(ar, b0, c40); c41 = Vector512.FusedMultiplyAdd(ar, b1, c41); }
            { var ar = Vector512.Create(a[29]); c50 = Vector512.FusedMultiplyAdd(ar, b0, c50); c51 = Vector512.FusedMultiplyAdd(ar, b1, c51); }
            { var ar = Vector512.Create(a[30]); c60 = Vector512.FusedMultiplyAdd(ar, b0, c60); c61 = Vector512.FusedMultiplyAdd(ar, b1, c61); }
            { var ar = Vector512.Create(a[31]); c70 = Vector512.FusedMultiplyAdd(ar, b0, c70); c71 = Vector512.FusedMultiplyAdd(ar, b1, c71); }
            { var ar = Vector512.Create(a[32]); c80 = Vector512.FusedMultiplyAdd(ar, b0, c80); c81 = Vector512.FusedMultiplyAdd(ar, b1, c81); }
            { var ar = Vector512.Create(a[33]); c90 = Vector512.FusedMultiplyAdd(ar, b0, c90); c91 = Vector512.FusedMultiplyAdd(ar, b1, c91); }
            { var ar = Vector512.Create(a[34]); c100 = Vector512.FusedMultiplyAdd(ar, b0, c100); c101 = Vector512.FusedMultiplyAdd(ar, b1, c101); }
            { var ar = Vector512.Create(a[35]); c110 = Vector512.FusedMultiplyAdd(ar, b0, c110); c111 = Vector512.FusedMultiplyAdd(ar, b1, c111); }
            }
            {
            var b0 = Vector512.Load(b + 96);
            var b1 = Vector512.Load(b + 112);
            { var ar = Vector512.Create(a[36]); c00 = Vector512.FusedMultiplyAdd(ar, b0, c00); c01 = Vector512.FusedMultiplyAdd(ar, b1, c01); }
            { var ar = Vector512.Create(a[37]); c10 = Vector512.FusedMultiplyAdd(ar, b0, c10); c11 = Vector512.FusedMultiplyAdd(ar, b1, c11); }
            { var ar = Vector512.Create(a[38]); c20 = Vector512.FusedMultiplyAdd(ar, b0, c20); c21 = Vector512.FusedMultiplyAdd(ar, b1, c21); }
            { var ar = Vector512.Create(a[39]); c30 = Vector512.FusedMultiplyAdd(ar, b0, c30); c31 = Vector512.FusedMultiplyAdd(ar, b1, c31); }
            { var ar = Vector512.Create(a[40]); c40 = Vector512.FusedMultiplyAdd(ar, b0, c40); c41 = Vector512.FusedMultiplyAdd(ar, b1, c41); }
            { var ar = Vector512.Create(a[41]); c50 = Vector512.FusedMultiplyAdd(ar, b0, c50); c51 = Vector512.FusedMultiplyAdd(ar, b1, c51); }
            { var ar = Vector512.Create(a[42]); c60 = Vector512.FusedMultiplyAdd(ar, b0, c60); c61 = Vector512.FusedMultiplyAdd(ar, b1, c61); }
            { var ar = Vector512.Create(a[43]); c70 = Vector512.FusedMultiplyAdd(ar, b0, c70); c71 = Vector512.FusedMultiplyAdd(ar, b1, c71); }
            { var ar = Vector512.Create(a[44]); c80 = Vector512.FusedMultiplyAdd(ar, b0, c80); c81 = Vector512.FusedMultiplyAdd(ar, b1, c81); }
            { var ar = Vector512.Create(a[45]); c90 = Vector512.FusedMultiplyAdd(ar, b0, c90); c91 = Vector512.FusedMultiplyAdd(ar, b1, c91); }
            { var ar = Vector512.Create(a[46]); c100 = Vector512.FusedMultiplyAdd(ar, b0, c100); c101 = Vector512.FusedMultiplyAdd(ar, b1, c101); }
            { var ar = Vector512.Create(a[47]); c110 = Vector512.FusedMultiplyAdd(ar, b0, c110); c111 = Vector512.FusedMultiplyAdd(ar, b1, c111); }
            }
            a += 48; b += 128;
        }
        for (; p < kc; p++)
        {
            {
            var b0 = Vector512.Load(b + 0);
            var b1 = Vector512.Load(b + 16);
            { var ar = Vector512.Create(a[0]); c00 = Vector512.FusedMultiplyAdd(ar, b0, c00); c01 = Vector512.FusedMultiplyAdd(ar, b1, c01); }
            { var ar = Vector512.Create(a[1]); c10 = Vector512.FusedMultiplyAdd(ar, b0, c10); c11 = Vector512.FusedMultiplyAdd(ar, b1, c11); }
            { var ar = Vector512.Create(a[2]); c20 = Vector512.FusedMultiplyAdd(ar, b0, c20); c21 = Vector512.FusedMultiplyAdd(ar, b1, c21); }
            { var ar = Vector512.Create(a[3]); c30 = Vector512.FusedMultiplyAdd(ar, b0, c30); c31 = Vector512.FusedMultiplyAdd(ar, b1, c31); }
            { var ar = Vector512.Create(a[4]); c40 = Vector512.FusedMultiplyAdd(ar, b0, c40); c41 = Vector512.FusedMultiplyAdd(ar, b1, c41); }
            { var ar = Vector512.Create(a[5]); c50 = Vector512.FusedMultiplyAdd(ar, b0, c50); c51 = Vector512.FusedMultiplyAdd(ar, b1, c51); }
            { var ar = Vector512.Create(a[6]); c60 = Vector512.FusedMultiplyAdd(ar, b0, c60); c61 = Vector512.FusedMultiplyAdd(ar, b1, c61); }
            { var ar = Vector512.Create(a[7]); c70 = Vector512.FusedMultiplyAdd(ar, b0, c70); c71 = Vector512.FusedMultiplyAdd(ar, b1, c71); }
            { var ar = Vector512.Create(a[8]); c80 = Vector512.FusedMultiplyAdd(ar, b0, c80); c81 = Vector512.FusedMultiplyAdd(ar, b1, c81); }
            { var ar = Vector512.Create(a[9]); c90 = Vector512.FusedMultiplyAdd(ar, b0, c90); c91 = Vector512.FusedMultiplyAdd(ar, b1, c91); }
            { var ar = Vector512.Create(a[10]); c100 = Vector512.FusedMultiplyAdd(ar, b0, c100); c101 = Vector512.FusedMultiplyAdd(ar, b1, c101); }
            { var ar = Vector512.Create(a[11]); c110 = Vector512.FusedMultiplyAdd(ar, b0, c110); c111 = Vector512.FusedMultiplyAdd(ar, b1, c111); }
            }
            a += 12; b += 32;
        }
        var va = Vector512.Create(alpha);
        if (overwrite)
        {
            { float* cr = c + 0 * ldc; Vector512.Store(c00 * va, cr + 0); Vector512.Store(c01 * va, cr + 16); }
            { float* cr = c + 1 * ldc; Vector512.Store(c10 * va, cr + 0); Vector512.Store(c11 * va, cr + 16); }
            { float* cr = c + 2 * ldc; Vector512.Store(c20 * va, cr + 0); Vector512.Store(c21 * va, cr + 16); }
            { float* cr = c + 3 * ldc; Vector512.Store(c30 * va, cr + 0); Vector512.Store(c31 * va, cr + 16); }
            { float* cr = c + 4 * ldc; Vector512.Store(c40 * va, cr + 0); Vector512.Store(c41 * va, cr + 16); }
            { float* cr = c + 5 * ldc; Vector512.Store(c50 * va, cr + 0); Vector512.Store(c51 * va, cr + 16); }
            { float* cr = c + 6 * ldc; Vector512.Store(c60 * va, cr + 0); Vector512.Store(c61 * va, cr + 16); }
            { float* cr = c + 7 * ldc; Vector512.Store(c70 * va, cr + 0); Vector512.Store(c71 * va, cr + 16); }
            { float* cr = c + 8 * ldc; Vector512.Store(c80 * va, cr + 0); Vector512.Store(c81 * va, cr + 16); }
            { float* cr = c + 9 * ldc; Vector512.Store(c90 * va, cr + 0); Vector512.Store(c91 * va, cr + 16); }
            { float* cr = c + 10 * ldc; Vector512.Store(c100 * va, cr + 0); Vector512.Store(c101 * va, cr + 16); }
            { float* cr = c + 11 * ldc; Vector512.Store(c110 * va, cr + 0); Vector512.Store(c111 * va, cr + 16); }
        }
        else
        {
            var vb = Vector512.Create(beta);
            { float* cr = c + 0 * ldc; Vector512.Store(Vector512.FusedMultiplyAdd(Vector512.Load(cr + 0), vb, c00 * va), cr + 0); Vector512.Store(Vector512.FusedMultiplyAdd(Vector512.Load(cr + 16), vb, c01 * va), cr + 16); }
            { float* cr = c + 1 * ldc; Vector512.Store(Vector512.FusedMultiplyAdd(Vector512.Load(cr + 0), vb, c10 * va), cr + 0); Vector512.Store(Vector512.FusedMultiplyAdd(Vector512.Load(cr + 16), vb, c11 * va), cr + 16); }
            { float* cr = c + 2 * ldc; Vector512.Store(Vector512.FusedMultiplyAdd(Vector512.Load(cr + 0), vb, c20 * va), cr + 0); Vector512.Store(Vector512.FusedMultiplyAdd(Vector512.Load(cr + 16), vb, c21 * va), cr + 16); }
            { float* cr = c + 3 * ldc; Vector512.Store(Vector512.FusedMultiplyAdd(Vector512.Load(cr + 0), vb, c30 * va), cr + 0); Vector512.Store(Vector512.FusedMultiplyAdd(Vector512.Load(cr + 16), vb, c31 * va), cr + 16); }
            { float* cr = c + 4 * ldc; Vector512.Store(Vector512.FusedMultiplyAdd(Vector512.Load(cr + 0), vb, c40 * va), cr + 0); Vector512.Store(Vector512.FusedMultiplyAdd(Vector512.Load(cr + 16), vb, c41 * va), cr + 16); }
            { float* cr = c + 5 * ldc; Vector512.Store(Vector512.FusedMultiplyAdd(Vector512.Load(cr + 0), vb, c50 * va), cr + 0); Vector512.Store(Vector512.FusedMultiplyAdd(Vector512.Load(cr + 16), vb, c51 * va), cr + 16); }
            { float* cr = c + 6 * ldc; Vector512.Store(Vector512.FusedMultiplyAdd(Vector512.Load(cr + 0), vb, c60 * va), cr + 0); Vector512.Store(Vector512.FusedMultiplyAdd(Vector512.Load(cr + 16), vb, c61 * va), cr + 16); }
            { float* cr = c + 7 * ldc; Vector512.Store(Vector512.FusedMultiplyAdd(Vector512.Load(cr + 0), vb, c70 * va), cr + 0); Vector512.Store(Vector512.FusedMultiplyAdd(Vector512.Load(cr + 16), vb, c71 * va), cr + 16); }
            { float* cr = c + 8 * ldc; Vector512.Store(Vector512.FusedMultiplyAdd(Vector512.Load(cr + 0), vb, c80 * va), cr + 0); Vector512.Store(Vector512.FusedMultiplyAdd(Vector512.Load(cr + 16), vb, c81 * va), cr + 16); }
            { float* cr = c + 9 * ldc; Vector512.Store(Vector512.FusedMultiplyAdd(Vector512.Load(cr + 0), vb, c90 * va), cr + 0); Vector512.Store(Vector512.FusedMultiplyAdd(Vector512.Load(cr + 16), vb, c91 * va), cr + 16); }
            { float* cr = c + 10 * ldc; Vector512.Store(Vector512.FusedMultiplyAdd(Vector512.Load(cr + 0), vb, c100 * va), cr + 0); Vector512.Store(Vector512.FusedMultiplyAdd(Vector512.Load(cr + 16), vb, c101 * va), cr + 16); }
            { float* cr = c + 11 * ldc; Vector512.Store(Vector512.FusedMultiplyAdd(Vector512.Load(cr + 0), vb, c110 * va), cr + 0); Vector512.Store(Vector512.FusedMultiplyAdd(Vector512.Load(cr + 16), vb, c111 * va), cr + 16); }
        }
    }
}
