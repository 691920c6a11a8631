using System.Runtime.InteropServices;

namespace LinearLens.Numerics;

/// <summary>
/// A system OpenBLAS (cblas_dgemm / cblas_sgemm), loaded at run time only so that <c>linearlens bench gemm --reference</c>
/// can time the same product with it on the same machine: the managed kernel's targets are stated relative to
/// OpenBLAS, and a GFLOP/s figure means little without the machine's own reference next to it. Nothing else uses it.
/// </summary>
public sealed unsafe class ReferenceBlas
{
    const int RowMajor = 101, NoTrans = 111, Trans = 112;

    readonly delegate* unmanaged<int, int, int, int, int, int, double, double*, int, double*, int, double, double*, int, void> dgemm;
    readonly delegate* unmanaged<int, int, int, int, int, int, float, float*, int, float*, int, float, float*, int, void> sgemm;

    /// <summary>Where the library was loaded from, and the core type OpenBLAS picked for its kernels (when it says).</summary>
    public string Description { get; }

    ReferenceBlas(nint lib, string name)
    {
        dgemm = (delegate* unmanaged<int, int, int, int, int, int, double, double*, int, double*, int, double, double*, int, void>)
            NativeLibrary.GetExport(lib, "cblas_dgemm");
        sgemm = (delegate* unmanaged<int, int, int, int, int, int, float, float*, int, float*, int, float, float*, int, void>)
            NativeLibrary.GetExport(lib, "cblas_sgemm");
        string core = NativeLibrary.TryGetExport(lib, "openblas_get_corename", out nint cn)
            ? Marshal.PtrToStringAnsi(((delegate* unmanaged<nint>)cn)()) ?? "?" : "?";
        // same thread count as the managed GEMM, so the two are compared on equal terms
        if (NativeLibrary.TryGetExport(lib, "openblas_set_num_threads", out nint st))
            ((delegate* unmanaged<int, void>)st)(Gemm.Threads);
        Description = $"{name} (kernels: {core}, {Gemm.Threads} threads)";
    }

    /// <summary>
    /// Loads OpenBLAS: <paramref name="library"/> "openblas" searches the usual names (libopenblas.so.0, …), anything else
    /// is a path. Throws <see cref="LinearLensException"/> with what to install when it is not there.
    /// </summary>
    public static ReferenceBlas Load(string library)
    {
        string[] names = library == "openblas"
            ? ["libopenblas.so.0", "libopenblas.so", "libopenblas.dylib", "libopenblas.dll", "openblas"]
            : [library];
        foreach (var name in names)
            if (NativeLibrary.TryLoad(name, out nint lib))
            {
                if (!NativeLibrary.TryGetExport(lib, "cblas_dgemm", out _) || !NativeLibrary.TryGetExport(lib, "cblas_sgemm", out _))
                    throw new LinearLensException($"{name} has no cblas_dgemm/cblas_sgemm: give the path of an OpenBLAS library with --reference");
                return new ReferenceBlas(lib, name);
            }
        throw new LinearLensException(library == "openblas"
            ? "OpenBLAS not found (tried libopenblas.so.0 and the usual names): install it (Debian: apt-get install libopenblas0) or give its path with --reference PATH"
            : $"cannot load the reference BLAS '{library}': check the path (a shared library exporting cblas_dgemm)");
    }

    /// <summary>C[m×n] = op(A)·op(B) for row-major operands of the compute type (lda/ldb/ldc in elements).</summary>
    public void Multiply(bool f64, int m, int n, int k, void* a, int lda, void* b, int ldb, bool transB, void* c, int ldc)
    {
        int tb = transB ? Trans : NoTrans;
        if (f64) dgemm(RowMajor, NoTrans, tb, m, n, k, 1.0, (double*)a, lda, (double*)b, ldb, 0.0, (double*)c, ldc);
        else sgemm(RowMajor, NoTrans, tb, m, n, k, 1f, (float*)a, lda, (float*)b, ldb, 0f, (float*)c, ldc);
    }
}
