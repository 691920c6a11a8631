using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace LinearLens.Numerics;

/// <summary>Instruction-set level of the GEMM micro-kernel.</summary>
internal enum GemmIsa { Auto, Scalar, Avx2, Avx512 }

/// <summary>
/// General matrix product C = α·op(A)·op(B) + β·C, op(X) = X or Xᵀ, in float64 or float32.
/// A and B may be stored as F64, F32, BF16 or F16 and are widened to the compute type while they are read.
/// C is row-major m×n with row stride ldc. With β = 0, C is overwritten (its old contents are never read).
/// </summary>
/// <remarks>
/// Large products use a GotoBLAS/BLIS-style packed algorithm (B packed in kc×nc blocks, A in mc×kc blocks, a
/// register-blocked SIMD micro-kernel); when a task's rows fit one A block, each B micro-panel is packed right before
/// its use instead (it stays in L1). op(A) with at most <see cref="GemmSmall.MaxRows"/> rows (decode) and thin
/// products with few columns stream the big operand directly (dot / axpy kernels) without packing it.
/// Work is split over rows/columns of C only, at fixed tile boundaries, so each element's k-summation order — and hence
/// the result, bit for bit — does not depend on <see cref="Threads"/>.
/// </remarks>
public static unsafe class Gemm
{
    /// <summary>Threads used by one product; results are reproducible for a given value (and in fact independent of it).</summary>
    public static int Threads { get; set; } = Environment.ProcessorCount;

    [ThreadStatic] static GemmIsa t_forcedIsa;

    /// <summary>Test hook: forces the micro-kernel family for products started by the current thread (Auto = detect).</summary>
    internal static GemmIsa ForcedIsa { get => t_forcedIsa; set => t_forcedIsa = value; }

    static readonly GemmIsa s_detected =
        Vector512.IsHardwareAccelerated && Avx512F.IsSupported ? GemmIsa.Avx512
        : Avx2.IsSupported && Fma.IsSupported ? GemmIsa.Avx2
        : GemmIsa.Scalar;

    /// <summary>Micro-kernel family used by the packed path.</summary>
    internal static GemmIsa Isa => ForcedIsa != GemmIsa.Auto ? ForcedIsa : s_detected;

    public static void Multiply(MatrixView a, bool transA, MatrixView b, bool transB, double* c, long ldc, double alpha = 1.0, double beta = 0.0)
    {
        var p = Problem<double>.Create(a, transA, b, transB, c, ldc, alpha, beta);
        if (Trivial(p)) return;
        switch (Isa)
        {
            case GemmIsa.Avx512: Packed<double, Avx512KernelF64>(p); break;
            case GemmIsa.Avx2: Packed<double, Avx2KernelF64>(p); break;
            default: Packed<double, ScalarKernelF64>(p); break;
        }
    }

    public static void Multiply(MatrixView a, bool transA, MatrixView b, bool transB, float* c, long ldc, float alpha = 1f, float beta = 0f)
    {
        var p = Problem<float>.Create(a, transA, b, transB, c, ldc, alpha, beta);
        if (Trivial(p)) return;
        switch (Isa)
        {
            case GemmIsa.Avx512: Packed<float, Avx512KernelF32>(p); break;
            case GemmIsa.Avx2: Packed<float, Avx2KernelF32>(p); break;
            default: Packed<float, ScalarKernelF32>(p); break;
        }
    }

    /// <summary>Handles empty products, k = 0 and the streaming small-m / small-n cases; false when the packed path is needed.</summary>
    static bool Trivial<T>(in Problem<T> p) where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        if (p.M == 0 || p.N == 0) return true;
        if (p.K == 0)
        {
            for (int i = 0; i < p.M; i++)
            {
                T* ci = p.C + i * p.Ldc;
                for (int j = 0; j < p.N; j++) ci[j] = p.Beta == T.Zero ? T.Zero : p.Beta * ci[j];
            }
            return true;
        }
        if (p.M <= GemmSmall.MaxRows) { GemmSmall.FewRows(p); return true; }
        if (p.N <= GemmSmall.MaxRows && !p.TransA) { GemmSmall.FewCols(p); return true; }
        return false;
    }

    /// <summary>How many tasks a product of this size deserves (≥ ~128k multiply-adds each).</summary>
    internal static int TaskCount(long fmas, int limit)
    {
        long byWork = fmas >> 17;
        return (int)Math.Clamp(Math.Min(byWork, Math.Min(Threads, limit)), 1, int.MaxValue);
    }

    /// <summary>Splits [0, count) into <paramref name="parts"/> ranges whose boundaries are multiples of <paramref name="align"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static (int start, int end) Split(int count, int parts, int index, int align)
    {
        long units = (count + align - 1) / align;
        int s = (int)(units * index / parts) * align, e = (int)(units * (index + 1) / parts) * align;
        return (Math.Min(s, count), Math.Min(e, count));
    }

    static void Packed<T, K>(in Problem<T> p) where T : unmanaged, IBinaryFloatingPointIeee754<T> where K : IGemmKernel<T>
    {
        int mt = (p.M + K.MR - 1) / K.MR, nt = (p.N + K.NR - 1) / K.NR;
        int tasks = TaskCount((long)p.M * p.N * p.K, mt * nt);
        if (tasks == 1) { Block<T, K>(p, 0, p.M, 0, p.N); return; }

        // Choose a tm×tn grid of C blocks minimizing the per-task time: multiply-adds plus packing
        // (each task packs its own B columns once and its A rows once per nc-block of columns).
        int tm = 1, tn = tasks;
        double best = double.MaxValue;
        for (int gm = 1; gm <= tasks; gm++)
        {
            int gn = tasks / gm;
            if (gm > mt || gn > nt || gn == 0) continue;
            double cm = (double)((mt + gm - 1) / gm) * K.MR, cn = (double)((nt + gn - 1) / gn) * K.NR;
            double cost = cm * cn / 8 + 2 * (cn + cm * Math.Ceiling(cn / K.NC)) + (tasks - gm * gn) * 1e-3;
            if (cost < best) { best = cost; tm = gm; tn = gn; }
        }
        // Rows just over one A block: split them instead, so each task's rows fit one block and its B micro-panels are
        // packed right before use (Block) — each task then converts all of B, which costs less than B's round trip through L3.
        if (p.M > K.MC && (mt + tasks - 1) / tasks * K.MR <= K.MC) { tm = tasks; tn = 1; }
        var q = p;
        int gridN = tn;
        GemmParallel.For(tm * tn, t =>
        {
            var (i0, i1) = Split(q.M, tm, t / gridN, K.MR);
            var (j0, j1) = Split(q.N, gridN, t % gridN, K.NR);
            if (i0 < i1 && j0 < j1) Block<T, K>(q, i0, i1, j0, j1);
        });
    }

    /// <summary>Computes C[i0..i1, j0..j1) on the current thread with the packed algorithm.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Block<T, K>(in Problem<T> p, int i0, int i1, int j0, int j1) where T : unmanaged, IBinaryFloatingPointIeee754<T> where K : IGemmKernel<T>
    {
        int MR = K.MR, NR = K.NR;
        int kcMax = Math.Min(K.KC, p.K);
        int ncMax = Math.Min(K.NC, RoundUp(j1 - j0, NR));
        int mcMax = Math.Min(K.MC, RoundUp(i1 - i0, MR));
        MatrixView A = p.A, B = p.B;
        // A quantized operand is decoded block by block while it is packed. Used untransposed (the VJP's Γ·W) its
        // panels are NR columns wide — a fraction of a block — so its whole kc×nc block is decoded at once, row by row,
        // through a staging row (ContiguousQuant), never once per panel.
        bool aQuant = A.Type.IsQuantized(), bQuant = B.Type.IsQuantized();
        bool aStaged = aQuant && p.TransA, bStaged = bQuant && !p.TransB;
        // Few rows (one A block): each B micro-panel is packed right before its only use and stays in L1, instead of
        // the whole kc×nc block going out to L3 and back — products with few rows are bound by that traffic.
        bool fused = i1 - i0 <= mcMax && !bStaged;
        long bElems = RoundUp(fused ? (long)kcMax * NR : (long)kcMax * ncMax, 16), aElems = RoundUp((long)kcMax * mcMax, 16);
        long tmpElems = RoundUp((long)Math.Max(MR, NR) * kcMax, 16), tileElems = RoundUp(MR * NR, 16);
        long stageElems = aStaged || bStaged ? RoundUp(Math.Max(ncMax, mcMax), 16) : 0;
        T* bp = (T*)GemmScratch.Current.Get(GemmScratch.Work, (bElems + aElems + tmpElems + tileElems + stageElems) * sizeof(T));
        T* ap = bp + bElems, tmp = ap + aElems, tile = tmp + tmpElems, stage = tile + tileElems;

        int aSize = aQuant ? 0 : A.Type.Size(), bSize = bQuant ? 0 : B.Type.Size();
        byte* aData = (byte*)A.Data, bData = (byte*)B.Data;
        long lda = A.RowStride, ldb = B.RowStride, ldc = p.Ldc;
        long aRowBytes = A.RowBytes, bRowBytes = B.RowBytes;
        T alpha = p.Alpha;

        for (int jc = j0; jc < j1; jc += ncMax)
        {
            int nc = Math.Min(ncMax, j1 - jc);
            for (int pc = 0; pc < p.K; pc += kcMax)
            {
                int kc = Math.Min(kcMax, p.K - pc);
                bool overwrite = pc == 0 && p.Beta == T.Zero;
                T beta = pc == 0 ? p.Beta : T.One;

                bool transB = p.TransB;
                void PackB(int jr, T* panel)
                {
                    int cnt = Math.Min(NR, nc - jr);
                    if (bQuant) GemmPack.GatherQuant(bData + (jc + jr) * bRowBytes, B.Type, bRowBytes, pc, kc, cnt, NR, panel, tmp);
                    else if (!transB) GemmPack.Contiguous(bData + (pc * ldb + jc + jr) * bSize, B.Type, ldb, kc, cnt, NR, panel);
                    else GemmPack.Gather(bData + ((long)(jc + jr) * ldb + pc) * bSize, B.Type, ldb, kc, cnt, NR, panel, tmp);
                }
                if (bStaged) GemmPack.ContiguousQuant(bData + pc * bRowBytes, B.Type, bRowBytes, jc, kc, nc, NR, bp, stage);
                else if (!fused)
                    for (int jr = 0; jr < nc; jr += NR) PackB(jr, bp + (long)jr * kc);

                for (int ic = i0; ic < i1; ic += mcMax)
                {
                    int mc = Math.Min(mcMax, i1 - ic);
                    if (aStaged) GemmPack.ContiguousQuant(aData + pc * aRowBytes, A.Type, aRowBytes, ic, kc, mc, MR, ap, stage);
                    else for (int ir = 0; ir < mc; ir += MR)
                    {
                        int cnt = Math.Min(MR, mc - ir);
                        if (aQuant) GemmPack.GatherQuant(aData + (ic + ir) * aRowBytes, A.Type, aRowBytes, pc, kc, cnt, MR, ap + (long)ir * kc, tmp);
                        else if (!p.TransA) GemmPack.Gather(aData + ((long)(ic + ir) * lda + pc) * aSize, A.Type, lda, kc, cnt, MR, ap + (long)ir * kc, tmp);
                        else GemmPack.Contiguous(aData + (pc * lda + ic + ir) * aSize, A.Type, lda, kc, cnt, MR, ap + (long)ir * kc);
                    }

                    int rowPanels = (mc + MR - 1) / MR;
                    for (int jr = 0; jr < nc; jr += NR)
                    {
                        int nr = Math.Min(NR, nc - jr);
                        T* bPanel = fused ? bp : bp + (long)jr * kc;
                        if (fused) PackB(jr, bPanel);
                        T* cCol = p.C + jc + jr;
                        // While this micro-panel is in use, bring the next one towards the caches a slice at a time: packed
                        // (a kc×nc block) it is NR·kc contiguous elements; fused, it is still in the stored weight — kc rows
                        // of NR elements (untransposed, rows a whole weight row apart) or NR rows of kc elements — whose
                        // cache misses would otherwise stall the next packing.
                        byte* next; long nextStride; int nextRows, nextRowBytes;
                        if (jr + NR >= nc || !Sse.IsSupported) { next = null; nextStride = 0; nextRows = 0; nextRowBytes = 0; }
                        else if (!fused) { next = (byte*)(bPanel + (long)NR * kc); nextRows = 1; nextStride = 0; nextRowBytes = NR * kc * sizeof(T); }
                        else if (!transB)
                        {
                            next = bData + (pc * ldb + jc + jr + NR) * bSize; nextStride = ldb * bSize;
                            nextRows = kc; nextRowBytes = Math.Min(NR, nc - jr - NR) * bSize;
                            // narrow panels share cache lines (four bf16 panels of 8 per line): when every row's next
                            // panel lies in the lines this one's packing just read, there is nothing to fetch
                            if (nextStride % 64 == 0 && ((nint)next + nextRowBytes - 1) >> 6 == ((nint)next - 1) >> 6) nextRows = 0;
                        }
                        else if (bQuant)
                        {
                            next = bData + (jc + jr + NR) * bRowBytes + B.Type.ByteOffset(pc); nextStride = bRowBytes;
                            nextRows = Math.Min(NR, nc - jr - NR); nextRowBytes = (int)B.Type.ByteOffset(kc);
                        }
                        else
                        {
                            next = bData + ((long)(jc + jr + NR) * ldb + pc) * bSize; nextStride = ldb * bSize;
                            nextRows = Math.Min(NR, nc - jr - NR); nextRowBytes = kc * bSize;
                        }
                        int rowsPerSlice = (nextRows + rowPanels - 1) / rowPanels, bytesPerSlice = nextRows == 1 ? RoundUp(nextRowBytes / rowPanels + 1, 64) : nextRowBytes;
                        int nextRow = 0, nextByte = 0;
                        for (int ir = 0; ir < mc; ir += MR)
                        {
                            for (int r = 0; r < rowsPerSlice && nextRow < nextRows; r++)
                            {
                                byte* row = next + nextRow * nextStride;
                                int end = Math.Min(nextRowBytes, nextByte + bytesPerSlice);
                                // one touch per cache line from the slice's first byte to its last (rows need not start on a line)
                                for (nint line = (nint)(row + nextByte) & ~63; line < (nint)(row + end); line += 64) Sse.Prefetch0((void*)line);
                                if (end == nextRowBytes) { nextRow++; nextByte = 0; } else { nextByte = end; break; }
                            }
                            int mr = Math.Min(MR, mc - ir);
                            T* aPanel = ap + (long)ir * kc;
                            T* cTile = cCol + (ic + ir) * ldc;
                            if (mr == MR && nr == NR)
                                K.Run(kc, aPanel, bPanel, cTile, ldc, alpha, beta, overwrite);
                            else if (nr == NR && K.RunRows(mr, kc, aPanel, bPanel, cTile, ldc, alpha, beta, overwrite)) { }
                            else
                            {
                                K.Run(kc, aPanel, bPanel, tile, NR, T.One, T.Zero, true);
                                for (int i = 0; i < mr; i++)
                                    for (int j = 0; j < nr; j++)
                                    {
                                        T t = alpha * tile[i * NR + j];
                                        T* cij = cTile + i * ldc + j;
                                        *cij = overwrite ? t : T.FusedMultiplyAdd(*cij, beta, t);
                                    }
                            }
                        }
                    }
                }
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static int RoundUp(int x, int r) => (x + r - 1) / r * r;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static long RoundUp(long x, int r) => (x + r - 1) / r * r;
}

/// <summary>One product's operands, shape and scalars.</summary>
internal readonly unsafe struct Problem<T> where T : unmanaged
{
    public readonly MatrixView A, B;
    public readonly bool TransA, TransB;
    public readonly T* C;
    public readonly long Ldc;
    public readonly int M, N, K;
    public readonly T Alpha, Beta;

    Problem(MatrixView a, bool transA, MatrixView b, bool transB, T* c, long ldc, int m, int n, int k, T alpha, T beta)
    {
        A = a; TransA = transA; B = b; TransB = transB; C = c; Ldc = ldc; M = m; N = n; K = k; Alpha = alpha; Beta = beta;
    }

    public static Problem<T> Create(MatrixView a, bool transA, MatrixView b, bool transB, T* c, long ldc, T alpha, T beta)
    {
        int m = transA ? a.Cols : a.Rows, k = transA ? a.Rows : a.Cols;
        int kb = transB ? b.Cols : b.Rows, n = transB ? b.Rows : b.Cols;
        if (k != kb) throw new ArgumentException($"inner dimensions differ: op(A) is {m}x{k}, op(B) is {kb}x{n}");
        if (m > 0 && n > 0)
        {
            if (c == null) throw new ArgumentNullException(nameof(c));
            if (ldc < n && m > 1) throw new ArgumentException($"ldc {ldc} shorter than a row of C ({n})");
            if (k > 0 && (a.Data == null || b.Data == null)) throw new ArgumentNullException(a.Data == null ? nameof(a) : nameof(b));
        }
        return new Problem<T>(a, transA, b, transB, c, ldc, m, n, k, alpha, beta);
    }
}
