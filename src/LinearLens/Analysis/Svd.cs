using System.Numerics;
using System.Numerics.Tensors;
using LinearLens.Numerics;

namespace LinearLens.Analysis;

/// <summary>
/// A linear operator A (Rows × Cols) known through batched products. Blocks of vectors are column-major:
/// column c of a Rows×k block occupies [c·Rows, (c+1)·Rows).
/// </summary>
public interface ILinearOperator
{
    int Rows { get; }
    int Cols { get; }
    /// <summary>y (Rows×k) = A·x (Cols×k).</summary>
    void Multiply(ReadOnlySpan<double> x, int k, Span<double> y);
    /// <summary>x (Cols×k) = Aᵀ·y (Rows×k).</summary>
    void MultiplyTransposed(ReadOnlySpan<double> y, int k, Span<double> x);
}

public enum SvdMethod { Full, MatrixFree, Auto }

/// <summary>
/// Top-k singular triplets, σ descending; U Rows×K and V Cols×K column-major; Residuals[i] = ‖A vᵢ − σᵢ uᵢ‖ (null if not
/// computed); Method says how they were obtained ("dense", "lanczos", "randomized").
/// </summary>
public sealed record SingularTriplets(int Rows, int Cols, double[] Values, double[] U, double[] V, double[]? Residuals, string Method)
{
    public int Count => Values.Length;
    /// <summary>uᵢ (length Rows).</summary>
    public ReadOnlySpan<double> Left(int i) => U.AsSpan(i * Rows, Rows);
    /// <summary>vᵢ (length Cols).</summary>
    public ReadOnlySpan<double> Right(int i) => V.AsSpan(i * Cols, Cols);
    /// <summary>Products with A (columns) spent by a matrix-free method; 0 for dense.</summary>
    public int Products { get; init; }
    /// <summary>Products with Aᵀ (columns) spent by a matrix-free method; 0 for dense.</summary>
    public int TransposedProducts { get; init; }
    /// <summary>Krylov / sketch dimension reached (0 for dense).</summary>
    public int Subspace { get; init; }
    /// <summary>False when a Lanczos run stopped at its iteration limit before the residual test passed.</summary>
    public bool Converged { get; init; } = true;
}

/// <summary>A dense row-major matrix as an <see cref="ILinearOperator"/>; products through the GEMM.</summary>
public sealed unsafe class DenseOperator : ILinearOperator
{
    readonly double[] a;
    public int Rows { get; }
    public int Cols { get; }

    public DenseOperator(double[] rowMajor, int rows, int cols)
    {
        if ((long)rows * cols > rowMajor.Length) throw new ArgumentException("matrix smaller than rows × cols", nameof(rowMajor));
        Rows = rows; Cols = cols;
        // the GEMM needs a fixed address: keep a pinned copy unless the array already is one
        a = Pinned.Array<double>((long)rows * cols);
        rowMajor.AsSpan(0, rows * cols).CopyTo(a);
    }

    /// <summary>y (col-major Rows×k, i.e. row-major k×Rows) = (A·X)ᵀ = Xᵀ·Aᵀ where X col-major Cols×k = row-major k×Cols.</summary>
    public void Multiply(ReadOnlySpan<double> x, int k, Span<double> y)
    {
        fixed (double* px = x) fixed (double* py = y)
            Gemm.Multiply(MatrixView.Of(px, k, Cols), false, Pinned.View(a, Rows, Cols), true, py, Rows);
    }

    public void MultiplyTransposed(ReadOnlySpan<double> y, int k, Span<double> x)
    {
        fixed (double* px = x) fixed (double* py = y)
            Gemm.Multiply(MatrixView.Of(py, k, Rows), false, Pinned.View(a, Rows, Cols), false, px, Cols);
    }
}

/// <summary>
/// Singular value decompositions for the analyses, all in double: exact dense (one-sided Jacobi after an LQ
/// reduction; Gram matrix + symmetric QL for large matrices), Halko–Martinsson–Tropp randomized, and block
/// Golub–Kahan–Lanczos with full reorthogonalization on both sides. Callers orient the vectors (no sign convention here).
/// </summary>
public static unsafe class Svd
{
    /// <summary>Above this min(rows, cols) the dense SVD goes through the Gram matrix and a symmetric eigensolver.</summary>
    public const int JacobiLimit = 512;

    // =====================================================================================================
    // Dense
    // =====================================================================================================

    /// <summary>
    /// A decomposition of values that are not all finite has no meaning (and the rotations would throw on Math.Sign(NaN)):
    /// one clear error instead. NaN/∞ here come from non-finite weights or an overflowing forward pass.
    /// </summary>
    internal static void RequireFinite(ReadOnlySpan<double> x, string what)
    {
        if (x.Length > 0 && !double.IsFinite(TensorPrimitives.MaxMagnitude(x)))
            throw new LinearLensException($"{what} holds NaN or ±∞ values, so no SVD of it is meaningful; the model's weights or activations are not finite (check the checkpoint for NaN/∞ weights)");
    }

    /// <summary>
    /// Exact top-k of a dense row-major matrix (all of them when k ≥ min(rows, cols)). For min(rows, cols) ≤ 512: LQ
    /// (Householder) reduction then one-sided Jacobi — singular values to ~1e-15 relative of σ₁ and U, V orthonormal to
    /// ~1e-14. Above: Gram matrix by the GEMM and Householder tridiagonalization + implicit QL (σᵢ to ~ε·σ₁²/σᵢ).
    /// </summary>
    public static SingularTriplets Dense(ReadOnlySpan<double> a, int rows, int cols, int k)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(rows);
        ArgumentOutOfRangeException.ThrowIfNegative(cols);
        if (a.Length < (long)rows * cols) throw new ArgumentException("matrix smaller than rows × cols", nameof(a));
        RequireFinite(a[..(rows * cols)], "the matrix to decompose");
        int p = Math.Min(rows, cols);
        k = Math.Clamp(k, 0, p);
        if (k == 0) return new SingularTriplets(rows, cols, [], [], [], null, "dense");
        bool wide = rows <= cols;
        int q = Math.Max(rows, cols);
        // canonical form: W (p × q, p ≤ q, row-major); W = Ũ Σ Ṽᵀ; for a wide A, Ũ = U and Ṽ = V, for a tall one swapped.
        double[] sigma, left, right; // left: Ũ col-major p×k; right: Ṽ col-major q×k
        if (p > JacobiLimit)
            (sigma, left, right) = GramSvd(a, rows, cols, k);
        else
        {
            var w = Pinned.Array<double>((long)p * q);
            if (wide) a[..(p * q)].CopyTo(w);
            else Transpose(a, rows, cols, w);
            (sigma, left, right) = JacobiSvd(w, p, q, k);
        }
        return wide
            ? new SingularTriplets(rows, cols, sigma, left, right, null, "dense")
            : new SingularTriplets(rows, cols, sigma, right, left, null, "dense");
    }

    /// <summary>
    /// Top-k of an explicit matrix: <see cref="Dense"/> when it is small (min(rows, cols) ≤ <see cref="JacobiLimit"/>) or k
    /// is a sizable part of it; otherwise block Lanczos on the matrix itself to residuals ≤ 1e-12·σ₁ (so σ to 1e-12
    /// relative or better), falling back to <see cref="Dense"/> if that does not converge. For the top few of a
    /// 1024×1024 Jᵢ that is a few dozen reads of the matrix instead of a Gram matrix and a full eigendecomposition.
    /// </summary>
    public static SingularTriplets TopK(double[] a, int rows, int cols, int k)
    {
        int p = Math.Min(rows, cols);
        if (p <= JacobiLimit || 8 * k > p) return Dense(a, rows, cols, k);
        var t = Lanczos(new DenseOperator(a, rows, cols), k, 1e-12, blockSize: Math.Clamp(k, 1, 4));
        return t.Converged ? t : Dense(a, rows, cols, k);
    }

    static void Transpose(ReadOnlySpan<double> a, int rows, int cols, Span<double> t)
    {
        const int bs = 32;
        for (int i0 = 0; i0 < rows; i0 += bs)
            for (int j0 = 0; j0 < cols; j0 += bs)
                for (int i = i0; i < Math.Min(rows, i0 + bs); i++)
                    for (int j = j0; j < Math.Min(cols, j0 + bs); j++)
                        t[j * rows + i] = a[i * cols + j];
    }

    /// <summary>W (p×q row-major, p ≤ q, overwritten): LQ, then one-sided Jacobi on the rows of L.</summary>
    static (double[] sigma, double[] left, double[] right) JacobiSvd(double[] w, int p, int q, int k)
    {
        // --- LQ: W·H₀·H₁⋯H_{p−1} = [L 0]; reflector i (unit vᵢ over columns i…q−1) stored in hv
        double[] l;
        double[][]? hv = null;
        if (q > p)
        {
            hv = new double[p][];
            for (int i = 0; i < p; i++)
            {
                var x = w.AsSpan(i * q + i, q - i);
                double norm = Math.Sqrt(TensorPrimitives.SumOfSquares<double>(x));
                var v = new double[q - i];
                if (norm == 0) { v[0] = 1; hv[i] = v; continue; } // H = I − 2e₀e₀ᵀ flips a zero row: harmless
                double beta = x[0] > 0 ? -norm : norm;
                x.CopyTo(v);
                v[0] -= beta;
                double vn = Math.Sqrt(TensorPrimitives.SumOfSquares<double>(v));
                TensorPrimitives.Divide(v, vn, v);
                hv[i] = v;
                x.Clear(); x[0] = beta;
                int ii = i;
                int remaining = p - i - 1;
                if (remaining > 0)
                {
                    void Apply(int r)
                    {
                        var row = w.AsSpan(r * q + ii, q - ii);
                        double s = 2 * TensorPrimitives.Dot<double>(row, v);
                        if (s != 0) TensorPrimitives.MultiplyAdd(v, -s, row, row);
                    }
                    if ((long)remaining * (q - i) > 1 << 16) Parallel.For(i + 1, p, Apply);
                    else for (int r = i + 1; r < p; r++) Apply(r);
                }
            }
            l = new double[p * p];
            for (int i = 0; i < p; i++) w.AsSpan(i * q, i + 1).CopyTo(l.AsSpan(i * p));
        }
        else l = w;

        // --- one-sided Jacobi on the rows of L: G·L = Σ Vlᵀ; Ũ = Gᵀ (column i of Ũ = row i of G)
        var g = new double[p * p];
        for (int i = 0; i < p; i++) g[i * p + i] = 1;
        JacobiRows(l, g, p, p);

        // --- sort by row norm, normalize, complete null rows, map back through the reflectors
        var norms = new double[p];
        for (int i = 0; i < p; i++) norms[i] = Math.Sqrt(TensorPrimitives.SumOfSquares<double>(l.AsSpan(i * p, p)));
        var order = Enumerable.Range(0, p).OrderByDescending(i => norms[i]).ThenBy(i => i).ToArray();
        var sigma = new double[k];
        var left = new double[p * k];
        var vl = new double[k * p];
        double tiny = (norms[order[0]] == 0 ? 1 : norms[order[0]]) * 1e-300;
        var done = new List<int>();
        for (int c = 0; c < k; c++)
        {
            int i = order[c];
            sigma[c] = norms[i];
            g.AsSpan(i * p, p).CopyTo(left.AsSpan(c * p));
            var row = vl.AsSpan(c * p, p);
            if (norms[i] > tiny) TensorPrimitives.Divide(l.AsSpan(i * p, p), norms[i], row);
            else { sigma[c] = 0; Complete(vl, p, c, done); }
            done.Add(c);
        }
        var right = new double[q * k];
        if (hv is null) vl.CopyTo(right, 0);
        else
            Parallel.For(0, k, c =>
            {
                var row = right.AsSpan(c * q, q);
                vl.AsSpan(c * p, p).CopyTo(row);
                for (int i = p - 1; i >= 0; i--)
                {
                    var seg = row[i..];
                    double s = 2 * TensorPrimitives.Dot<double>(seg, hv[i]);
                    if (s != 0) TensorPrimitives.MultiplyAdd(hv[i], -s, seg, seg);
                }
            });
        return (sigma, left, right);
    }

    /// <summary>Row c of rows (length len) := a unit vector orthogonal to the rows listed in done (Gram–Schmidt on eⱼ).</summary>
    static void Complete(double[] rows, int len, int c, List<int> done)
    {
        var row = rows.AsSpan(c * len, len);
        for (int e = 0; e < len; e++)
        {
            row.Clear(); row[e] = 1;
            for (int pass = 0; pass < 2; pass++)
                foreach (int o in done)
                {
                    var other = rows.AsSpan(o * len, len);
                    TensorPrimitives.MultiplyAdd(other, -TensorPrimitives.Dot<double>(row, other), row, row);
                }
            double nrm = Math.Sqrt(TensorPrimitives.SumOfSquares<double>(row));
            if (nrm > 0.5) { TensorPrimitives.Divide(row, nrm, row); return; }
        }
    }

    /// <summary>
    /// Hestenes one-sided Jacobi: rotates pairs of rows of w (p × len) until every pair is orthogonal to
    /// |wᵢ·wⱼ| ≤ tol·‖wᵢ‖‖wⱼ‖, applying the same rotations to the rows of acc (p × accLen). Round-robin ordering, so
    /// the p/2 rotations of a round are independent (parallel when large).
    /// </summary>
    static void JacobiRows(double[] w, double[] acc, int p, int len)
    {
        if (p < 2) return;
        int accLen = acc.Length / p;
        double tol = Math.Max(p, 16) * 2.220446049250313e-16;
        int P = p + (p & 1);
        var pairs = new (int, int)[P / 2];
        bool parallel = (long)p * len >= 1 << 14 && p >= 32;
        for (int sweep = 0; sweep < 80; sweep++)
        {
            int rotations = 0;
            for (int round = 0; round < P - 1; round++)
            {
                // circle method: element 0 fixed, elements 1…P−1 rotate through slots 1…P−1; pairs (0, slot P−1) and
                // (slot s, slot P−1−s): every pair exactly once per sweep, no element twice in a round
                int Elem(int slot) => (slot - 1 + round) % (P - 1) + 1;
                for (int s = 0; s < P / 2; s++)
                {
                    int x = s == 0 ? 0 : Elem(s);
                    int y = s == 0 ? Elem(P - 1) : Elem(P - 1 - s);
                    pairs[s] = (Math.Min(x, y), Math.Max(x, y));
                }
                if (parallel)
                {
                    int count = 0;
                    Parallel.For(0, P / 2, () => 0, (s, _, local) => local + Rotate(w, acc, pairs[s], p, len, accLen, tol), local => Interlocked.Add(ref count, local));
                    rotations += count;
                }
                else
                    for (int s = 0; s < P / 2; s++) rotations += Rotate(w, acc, pairs[s], p, len, accLen, tol);
            }
            if (rotations == 0) return;
        }
    }

    static int Rotate(double[] w, double[] acc, (int, int) pair, int p, int len, int accLen, double tol)
    {
        var (i, j) = pair;
        if (j >= p || i == j) return 0;
        var wi = w.AsSpan(i * len, len);
        var wj = w.AsSpan(j * len, len);
        var (a, b, c) = Dots(wi, wj);
        if (a == 0 || b == 0 || Math.Abs(c) <= tol * Math.Sqrt(a) * Math.Sqrt(b)) return 0;
        double zeta = (b - a) / (2 * c);
        double t = Math.Sign(zeta) / (Math.Abs(zeta) + Math.Sqrt(1 + zeta * zeta));
        if (zeta == 0) t = 1;
        double cs = 1 / Math.Sqrt(1 + t * t), sn = cs * t;
        Rot(wi, wj, cs, sn);
        Rot(acc.AsSpan(i * accLen, accLen), acc.AsSpan(j * accLen, accLen), cs, sn);
        return 1;
    }

    static (double, double, double) Dots(ReadOnlySpan<double> x, ReadOnlySpan<double> y)
    {
        int n = x.Length, i = 0;
        var va = Vector<double>.Zero; var vb = Vector<double>.Zero; var vc = Vector<double>.Zero;
        int vs = Vector<double>.Count;
        for (; i + vs <= n; i += vs)
        {
            var xv = new Vector<double>(x[i..]); var yv = new Vector<double>(y[i..]);
            va += xv * xv; vb += yv * yv; vc += xv * yv;
        }
        double a = Vector.Sum(va), b = Vector.Sum(vb), c = Vector.Sum(vc);
        for (; i < n; i++) { a += x[i] * x[i]; b += y[i] * y[i]; c += x[i] * y[i]; }
        return (a, b, c);
    }

    /// <summary>[x; y] ← [[cs, −sn], [sn, cs]]·[x; y].</summary>
    static void Rot(Span<double> x, Span<double> y, double cs, double sn)
    {
        int n = x.Length, i = 0, vs = Vector<double>.Count;
        var vcs = new Vector<double>(cs); var vsn = new Vector<double>(sn);
        for (; i + vs <= n; i += vs)
        {
            var xv = new Vector<double>(x[i..]); var yv = new Vector<double>(y[i..]);
            (vcs * xv - vsn * yv).CopyTo(x[i..]);
            (vsn * xv + vcs * yv).CopyTo(y[i..]);
        }
        for (; i < n; i++) { double xi = x[i], yi = y[i]; x[i] = cs * xi - sn * yi; y[i] = sn * xi + cs * yi; }
    }

    /// <summary>Large matrices: eigen-decomposition of the p×p Gram matrix (GEMM), then the other side by one GEMM.</summary>
    static (double[] sigma, double[] left, double[] right) GramSvd(ReadOnlySpan<double> a, int rows, int cols, int k)
    {
        bool wide = rows <= cols;
        int p = Math.Min(rows, cols), q = Math.Max(rows, cols);
        var gram = new double[p * p];
        var right = new double[q * k];
        double[] sigma = new double[k], left = new double[p * k];
        fixed (double* pa = a) fixed (double* pg = gram)
        {
            var view = MatrixView.Of(pa, rows, cols);
            if (wide) Gemm.Multiply(view, false, view, true, pg, p);
            else Gemm.Multiply(view, true, view, false, pg, p);
            // symmetrize exactly
            for (int i = 0; i < p; i++) for (int j = 0; j < i; j++) { double m = 0.5 * (gram[i * p + j] + gram[j * p + i]); gram[i * p + j] = m; gram[j * p + i] = m; }
            var (lambda, vecs) = SymmetricEigen(gram, p);   // descending; vecs rows = eigenvectors
            for (int c = 0; c < k; c++) { sigma[c] = Math.Sqrt(Math.Max(lambda[c], 0)); vecs.AsSpan(c * p, p).CopyTo(left.AsSpan(c * p)); }
            // right (row-major k×q) = leftᵀ(k×p)·W where W = A (wide) or Aᵀ (tall)
            fixed (double* pl = left) fixed (double* pr = right)
                Gemm.Multiply(MatrixView.Of(pl, k, p), false, view, !wide, pr, q);
        }
        double tiny = sigma[0] * 1e-300;
        var done = new List<int>();
        for (int c = 0; c < k; c++)
        {
            var row = right.AsSpan(c * q, q);
            double nrm = Math.Sqrt(TensorPrimitives.SumOfSquares<double>(row));
            if (sigma[c] > tiny && nrm > 0) { TensorPrimitives.Divide(row, nrm, row); sigma[c] = Math.Max(sigma[c], 0); }
            else { sigma[c] = 0; Complete(right, q, c, done); }
            done.Add(c);
        }
        // σ from the computed product (‖Wᵀu‖) is more accurate than √λ for the small ones
        return (sigma, left, right);
    }

    /// <summary>
    /// Eigenvalues (descending) and eigenvectors (rows of the returned p×p array) of a symmetric matrix: Householder
    /// tridiagonalization and implicit QL (EISPACK tred2/tql2), with the vectors stored transposed so every inner loop is contiguous.
    /// </summary>
    public static (double[] values, double[] vectors) SymmetricEigen(double[] symmetric, int n)
    {
        RequireFinite(symmetric, "the matrix to decompose");
        // vt[j*n + k] holds V[k][j] (V of the EISPACK routines).
        var vt = (double[])symmetric.Clone();
        var d = new double[n];
        var e = new double[n];
        Tred2(vt, n, d, e);
        Tql2(vt, n, d, e);
        var order = Enumerable.Range(0, n).OrderByDescending(i => d[i]).ToArray();
        var values = new double[n];
        var vectors = new double[n * n];
        for (int c = 0; c < n; c++) { values[c] = d[order[c]]; vt.AsSpan(order[c] * n, n).CopyTo(vectors.AsSpan(c * n)); }
        return (values, vectors);
    }

    static void Tred2(double[] vt, int n, double[] d, double[] e)
    {
        // V[k][j] ≡ vt[j*n + k]
        for (int j = 0; j < n; j++) d[j] = vt[j * n + n - 1];
        for (int i = n - 1; i > 0; i--)
        {
            double scale = 0, h = 0;
            for (int k = 0; k < i; k++) scale += Math.Abs(d[k]);
            if (scale == 0)
            {
                e[i] = d[i - 1];
                for (int j = 0; j < i; j++) { d[j] = vt[j * n + i - 1]; vt[j * n + i] = 0; vt[i * n + j] = 0; }
            }
            else
            {
                for (int k = 0; k < i; k++) { d[k] /= scale; h += d[k] * d[k]; }
                double f = d[i - 1], g = Math.Sqrt(h);
                if (f > 0) g = -g;
                e[i] = scale * g;
                h -= f * g;
                d[i - 1] = f - g;
                Array.Clear(e, 0, i);
                for (int j = 0; j < i; j++)
                {
                    f = d[j];
                    vt[i * n + j] = f;                      // V[j][i] = f
                    var colj = vt.AsSpan(j * n, i);          // V[k][j] for k < i
                    g = e[j] + colj[j] * f;
                    if (j + 1 <= i - 1)
                    {
                        var seg = colj[(j + 1)..i];
                        g += TensorPrimitives.Dot<double>(seg, d.AsSpan(j + 1, i - j - 1));
                        var es = e.AsSpan(j + 1, i - j - 1);
                        TensorPrimitives.MultiplyAdd(seg, f, es, es);
                    }
                    e[j] = g;
                }
                f = 0;
                for (int j = 0; j < i; j++) { e[j] /= h; f += e[j] * d[j]; }
                double hh = f / (h + h);
                for (int j = 0; j < i; j++) e[j] -= hh * d[j];
                for (int j = 0; j < i; j++)
                {
                    f = d[j]; g = e[j];
                    var seg = vt.AsSpan(j * n + j, i - j);   // V[k][j], k = j … i−1
                    TensorPrimitives.MultiplyAdd(e.AsSpan(j, i - j), -f, seg, seg);
                    TensorPrimitives.MultiplyAdd(d.AsSpan(j, i - j), -g, seg, seg);
                    d[j] = vt[j * n + i - 1];
                    vt[j * n + i] = 0;                     // V[i][j] = 0
                }
            }
            d[i] = h;
        }
        // accumulate the transformations
        for (int i = 0; i < n - 1; i++)
        {
            vt[i * n + n - 1] = vt[i * n + i];              // V[n−1][i] = V[i][i]
            vt[i * n + i] = 1;
            double h = d[i + 1];
            var col = vt.AsSpan((i + 1) * n, i + 1);         // V[k][i+1], k ≤ i
            if (h != 0)
            {
                for (int k = 0; k <= i; k++) d[k] = col[k] / h;
                int ii = i;
                void Column(int j)
                {
                    var cj = vt.AsSpan(j * n, ii + 1);
                    double g = TensorPrimitives.Dot<double>(vt.AsSpan((ii + 1) * n, ii + 1), cj);
                    TensorPrimitives.MultiplyAdd(d.AsSpan(0, ii + 1), -g, cj, cj);
                }
                if (i >= 256) Parallel.For(0, i + 1, Column);
                else for (int j = 0; j <= i; j++) Column(j);
            }
            col.Clear();
        }
        for (int j = 0; j < n; j++) { d[j] = vt[j * n + n - 1]; vt[j * n + n - 1] = 0; }
        vt[(n - 1) * n + n - 1] = 1;
        e[0] = 0;
    }

    static void Tql2(double[] vt, int n, double[] d, double[] e)
    {
        for (int i = 1; i < n; i++) e[i - 1] = e[i];
        e[n - 1] = 0;
        double f = 0, tst1 = 0, eps = Math.Pow(2, -52);
        for (int l = 0; l < n; l++)
        {
            tst1 = Math.Max(tst1, Math.Abs(d[l]) + Math.Abs(e[l]));
            int m = l;
            while (m < n) { if (Math.Abs(e[m]) <= eps * tst1) break; m++; }
            if (m == n) m = n - 1;
            if (m > l)
            {
                int iter = 0;
                do
                {
                    if (++iter > 60) break;
                    double g = d[l];
                    double p = (d[l + 1] - g) / (2 * e[l]);
                    double r = Hypot(p, 1);
                    if (p < 0) r = -r;
                    d[l] = e[l] / (p + r);
                    d[l + 1] = e[l] * (p + r);
                    double dl1 = d[l + 1];
                    double h = g - d[l];
                    for (int i = l + 2; i < n; i++) d[i] -= h;
                    f += h;
                    p = d[m];
                    double c = 1, c2 = c, c3 = c, el1 = e[l + 1], s = 0, s2 = 0;
                    for (int i = m - 1; i >= l; i--)
                    {
                        c3 = c2; c2 = c; s2 = s;
                        g = c * e[i];
                        h = c * p;
                        r = Hypot(p, e[i]);
                        e[i + 1] = s * r;
                        s = e[i] / r;
                        c = p / r;
                        p = c * d[i] - s * g;
                        d[i + 1] = h + s * (c * g + s * d[i]);
                        // V[k][i+1] = s V[k][i] + c h;  V[k][i] = c V[k][i] − s h   (rows i, i+1 of vt)
                        Rot(vt.AsSpan(i * n, n), vt.AsSpan((i + 1) * n, n), c, s);
                    }
                    p = -s * s2 * c3 * el1 * e[l] / dl1;
                    e[l] = s * p;
                    d[l] = c * p;
                } while (Math.Abs(e[l]) > eps * tst1);
            }
            d[l] += f;
            e[l] = 0;
        }
    }

    static double Hypot(double a, double b)
    {
        double x = Math.Abs(a), y = Math.Abs(b);
        if (x < y) (x, y) = (y, x);
        if (x == 0) return 0;
        double r = y / x;
        return x * Math.Sqrt(1 + r * r);
    }

    // =====================================================================================================
    // Block helpers (column-major blocks = row-major arrays of vectors)
    // =====================================================================================================

    /// <summary>Fills with N(0, 1) samples (Box–Muller) from rng.</summary>
    internal static void Gaussian(Span<double> x, Random rng)
    {
        for (int i = 0; i < x.Length; i += 2)
        {
            double u1 = 1.0 - rng.NextDouble(), u2 = rng.NextDouble();
            double r = Math.Sqrt(-2 * Math.Log(u1));
            x[i] = r * Math.Cos(2 * Math.PI * u2);
            if (i + 1 < x.Length) x[i + 1] = r * Math.Sin(2 * Math.PI * u2);
        }
    }

    /// <summary>
    /// Orthonormalizes the b columns of block (len × b, col-major) against the first m columns of basis (len × m, col-major,
    /// orthonormal) and among themselves (block classical Gram–Schmidt twice through the GEMM, then MGS twice).
    /// coeff (optional, (m + b) × b col-major): the coefficients, so that block_in = [basis | block_out]·coeff.
    /// Columns that vanish are replaced by random vectors orthogonal to everything (their coefficient row stays 0).
    /// </summary>
    internal static void Orthonormalize(double[] block, int len, int b, double[] basis, int m, double[]? coeff, Random rng)
    {
        if (coeff is not null) Array.Clear(coeff, 0, (m + b) * b);
        var norms0 = new double[b];
        for (int c = 0; c < b; c++) norms0[c] = Math.Sqrt(TensorPrimitives.SumOfSquares<double>(block.AsSpan(c * len, len)));
        if (m > 0)
        {
            var h = Pinned.Array<double>((long)m * b);
            for (int pass = 0; pass < 2; pass++)
            {
                // H (m×b row-major) = Basisᵀ (m×len) · Block (b×len)ᵀ ;  Block (b×len) −= Hᵀ·Basis
                fixed (double* pb = basis) fixed (double* px = block)
                {
                    var bv = MatrixView.Of(pb, m, len);
                    var xv = MatrixView.Of(px, b, len);
                    Gemm.Multiply(bv, false, xv, true, Pinned.Pointer(h), b);
                    Gemm.Multiply(Pinned.View(h, m, b), true, bv, false, px, len, -1.0, 1.0);
                }
                if (coeff is not null)
                    for (int i = 0; i < m; i++) for (int c = 0; c < b; c++) coeff[c * (m + b) + i] += h[i * b + c];
            }
        }
        for (int c = 0; c < b; c++)
        {
            var col = block.AsSpan(c * len, len);
            for (int pass = 0; pass < 2; pass++)
                for (int o = 0; o < c; o++)
                {
                    var other = block.AsSpan(o * len, len);
                    double r = TensorPrimitives.Dot<double>(col, other);
                    TensorPrimitives.MultiplyAdd(other, -r, col, col);
                    if (coeff is not null) coeff[c * (m + b) + m + o] += r;
                }
            double nrm = Math.Sqrt(TensorPrimitives.SumOfSquares<double>(col));
            if (nrm > 1e-13 * Math.Max(norms0[c], double.Epsilon) && nrm > 0)
            {
                TensorPrimitives.Divide(col, nrm, col);
                if (coeff is not null) coeff[c * (m + b) + m + c] = nrm;
            }
            else
            {
                // deflated: a random direction orthogonal to the basis and the earlier columns
                for (int attempt = 0; attempt < 4; attempt++)
                {
                    Gaussian(col, rng);
                    for (int pass = 0; pass < 2; pass++)
                    {
                        for (int o = 0; o < m; o++) { var other = basis.AsSpan(o * len, len); TensorPrimitives.MultiplyAdd(other, -TensorPrimitives.Dot<double>(col, other), col, col); }
                        for (int o = 0; o < c; o++) { var other = block.AsSpan(o * len, len); TensorPrimitives.MultiplyAdd(other, -TensorPrimitives.Dot<double>(col, other), col, col); }
                    }
                    nrm = Math.Sqrt(TensorPrimitives.SumOfSquares<double>(col));
                    if (nrm > 1e-8) break;
                }
                if (nrm > 0) TensorPrimitives.Divide(col, nrm, col);
            }
        }
    }

    /// <summary>C (col-major len×k) = Basis (col-major len×m) · X (col-major m×k).</summary>
    internal static void Combine(double[] basis, int len, int m, ReadOnlySpan<double> x, int k, Span<double> c)
    {
        // row-major: Cᵀ (k×len) = Xᵀ (k×m) · Basisᵀ (m×len)
        fixed (double* pb = basis) fixed (double* px = x) fixed (double* pc = c)
            Gemm.Multiply(MatrixView.Of(px, k, m), false, MatrixView.Of(pb, m, len), false, pc, len);
    }

    // =====================================================================================================
    // Randomized (Halko–Martinsson–Tropp)
    // =====================================================================================================

    /// <summary>
    /// Halko–Martinsson–Tropp randomized SVD: range sketch Y = AΩ, power iterations with re-orthonormalization on both
    /// sides, then B = QᵀA through the transpose product (Bᵀ = AᵀQ) and its exact SVD; fixed seed; residuals
    /// ‖A vᵢ − σᵢ uᵢ‖ reported (one extra block product).
    /// </summary>
    public static SingularTriplets Randomized(ILinearOperator op, int k, int oversampling = 10, int powerIterations = 4, int seed = 0)
    {
        int m = op.Rows, n = op.Cols, p = Math.Min(m, n);
        k = Math.Clamp(k, 0, p);
        if (k == 0) return new SingularTriplets(m, n, [], [], [], [], "randomized");
        int l = Math.Min(k + Math.Max(oversampling, 0), p);
        var rng = new Random(seed);
        var omega = Pinned.Array<double>((long)n * l);
        var y = Pinned.Array<double>((long)m * l);
        Gaussian(omega, rng);
        int products = 0, tproducts = 0;
        op.Multiply(omega, l, y); products += l;
        RequireFinite(y, "a Jacobian product");
        Orthonormalize(y, m, l, [], 0, null, rng);
        for (int it = 0; it < powerIterations; it++)
        {
            op.MultiplyTransposed(y, l, omega); tproducts += l;
            Orthonormalize(omega, n, l, [], 0, null, rng);
            op.Multiply(omega, l, y); products += l;
            Orthonormalize(y, m, l, [], 0, null, rng);
        }
        // Bᵀ = AᵀQ (n×l col-major = l×n row-major = B col-major?) — B = QᵀA is l×n; Bᵀ col-major n×l is B row-major l×n.
        op.MultiplyTransposed(y, l, omega); tproducts += l;
        var small = Dense(omega, l, n, k);   // B (l×n row-major)
        var u = new double[m * k];
        Combine(y, m, l, small.U, k, u);
        var result = new SingularTriplets(m, n, small.Values, u, small.V, null, "randomized")
        { Products = products, TransposedProducts = tproducts, Subspace = l };
        return result with { Residuals = Residuals(op, result), Products = products + k };
    }

    /// <summary>‖A vᵢ − σᵢ uᵢ‖ for every triplet (one block product).</summary>
    public static double[] Residuals(ILinearOperator op, SingularTriplets t)
    {
        int k = t.Count, m = op.Rows;
        var av = Pinned.Array<double>((long)m * Math.Max(k, 1));
        if (k > 0) op.Multiply(t.V, k, av);
        var r = new double[k];
        for (int i = 0; i < k; i++)
        {
            var col = av.AsSpan(i * m, m);
            TensorPrimitives.MultiplyAdd(t.Left(i), -t.Values[i], col, col);
            r[i] = Math.Sqrt(TensorPrimitives.SumOfSquares<double>(col));
        }
        return r;
    }

    // =====================================================================================================
    // Lanczos (block Golub–Kahan with full reorthogonalization)
    // =====================================================================================================

    /// <summary>
    /// Block Golub–Kahan–Lanczos bidiagonalization with full reorthogonalization on both sides, extended until the top-k
    /// residual estimates ‖Aᵀuᵢ − σᵢvᵢ‖ ≤ tol·σ₁ (or the Krylov space is the whole space / maxIterations blocks are used);
    /// Ritz triplets from the exact SVD of the projected matrix; fixed seed; the true residuals ‖A vᵢ − σᵢ uᵢ‖ are
    /// computed at the end with one block product. blockSize 0: min(k, 4).
    /// </summary>
    public static SingularTriplets Lanczos(ILinearOperator op, int k, double tolerance = 1e-10, int maxIterations = 0, int seed = 0, int blockSize = 0)
    {
        // The recurrence makes one side exact by construction (see BlockLanczos); it is run on Aᵀ so that the exact side is
        // Aᵀu = σv and the reported residual ‖A v − σ u‖ is the one that measures convergence.
        var run = new BlockLanczos(op.Cols, op.Rows, k, tolerance, maxIterations, seed, blockSize);
        while (!run.Done)
        {
            var buf = run.OutputBuffer;
            if (run.NeedsMultiply) op.MultiplyTransposed(run.Pending, run.PendingCount, buf);
            else op.Multiply(run.Pending, run.PendingCount, buf);
            run.Supply(buf);
        }
        var result = run.Result();
        var t = Swap(result);
        // ‖A v − σ u‖ from the Aᵀ·(basis) products already made (A v = (A·basis)·coordinates); one more product otherwise
        return run.TransposeResiduals(result) is { } r ? t with { Residuals = r } : t with { Residuals = Residuals(op, t), Products = t.Products + t.Count };
    }

    /// <summary>
    /// Top-k triplets of a wide A (Rows ≪ Cols: the combined [J₀|…|J_{n−1}], d × n·d) by block Lanczos on its Gram matrix
    /// A·Aᵀ (Rows × Rows) with full reorthogonalization. Each block costs one Aᵀ and one A product and spans the same
    /// Krylov space as a Golub–Kahan step, but the basis is Rows-long: Golub–Kahan's Cols-long basis is n·d·(10k + 100)
    /// numbers — gigabytes for a long input. Ritz pairs (λ, u) of the projected QᵀAAᵀQ; the residual estimate
    /// ‖AAᵀu − λu‖/σ = ‖A v − σ u‖ for v = Aᵀu/σ costs nothing extra (‖R·y_last‖, R the triangular factor of the next
    /// block). At the end σ = ‖Aᵀu‖ (more accurate than √λ for the smaller ones), v = Aᵀu/σ and the true residuals
    /// ‖A v − σ u‖: from the products already made (Aᵀu = (AᵀQ)·y, AAᵀu = (AAᵀQ)·y) while the AᵀQ columns fit
    /// <paramref name="keptProductBytes"/>, else with one more Aᵀ and one more A product per vector. blockSize 0: min(k, 4).
    /// </summary>
    public static SingularTriplets GramLanczos(ILinearOperator op, int k, double tolerance = 1e-10, int maxIterations = 0, int seed = 0, int blockSize = 0,
        Action<double>? progress = null, double keptProductBytes = KeptProductBytes)
    {
        int m = op.Rows, n = op.Cols, p = Math.Min(m, n);
        k = Math.Clamp(k, 0, p);
        if (k == 0) return new SingularTriplets(m, n, [], [], [], [], "lanczos");
        int b = Math.Max(1, Math.Min(blockSize > 0 ? blockSize : Math.Clamp(k, 1, 4), p));
        int maxCols = Math.Min(p, maxIterations > 0 ? (int)Math.Min((long)maxIterations * b, int.MaxValue) : Math.Max(10 * k + 100, 20 * b));
        maxCols = Math.Max(maxCols, k);
        int ld = maxCols + b;                                   // leading dimension of H (col-major)
        var rng = new Random(seed);
        var q = Pinned.Array<double>((long)m * ld);             // the basis Q, Rows-long columns
        var h = new double[(long)ld * ld];                      // H = QᵀAAᵀQ, col-major
        var atq = Pinned.Array<double>((long)n * b);
        var w = Pinned.Array<double>((long)m * b);
        // the products per block, kept when the Cols-long ones fit: AᵀQ (Cols × bc) and AAᵀQ (Rows × bc)
        bool keep = 8.0 * n * maxCols <= keptProductBytes;
        var keptAtq = new List<double[]>(); var keptW = new List<double[]>();
        var first = new double[m * b];
        Gaussian(first, rng);
        Orthonormalize(first, m, b, [], 0, null, rng);
        first.CopyTo(q, 0);
        int cols = b, used = 0, products = 0, tproducts = 0;
        bool converged = false;
        double[] values = [], vectors = [];
        while (true)
        {
            int bc = cols - used;   // the newest block
            op.MultiplyTransposed(q.AsSpan(used * m, bc * m), bc, atq); tproducts += bc;
            op.Multiply(atq, bc, w); products += bc;
            RequireFinite(w.AsSpan(0, m * bc), "a Jacobian product");
            if (keep) { keptAtq.Add(atq.AsSpan(0, n * bc).ToArray()); keptW.Add(w.AsSpan(0, m * bc).ToArray()); }
            var coeff = new double[(cols + bc) * bc];
            Orthonormalize(w, m, bc, q, cols, coeff, rng);
            for (int c = 0; c < bc; c++)
                for (int i = 0; i < cols + bc; i++) h[(long)(used + c) * ld + i] = coeff[c * (cols + bc) + i];
            used = cols;
            progress?.Invoke(Math.Min(0.99, (double)used / maxCols));   // the column budget: a converging run ends earlier
            // Ritz pairs of the symmetric part of the leading used×used block
            var s = new double[used * used];
            for (int i = 0; i < used; i++)
                for (int j = 0; j < used; j++) s[i * used + j] = 0.5 * (h[(long)j * ld + i] + h[(long)i * ld + j]);
            (values, vectors) = SymmetricEigen(s, used);
            int kk = Math.Min(k, used);
            double s1 = Math.Sqrt(Math.Max(values[0], 0));
            bool all = used >= k;
            for (int i = 0; i < kk && all; i++)
            {
                // ‖R·y_last‖: R (bc × bc) is rows cols…cols+bc of the new block's coefficients
                double ss = 0;
                for (int r = 0; r < bc; r++)
                {
                    double acc = 0;
                    for (int c = 0; c < bc; c++) acc += coeff[c * (cols + bc) + cols + r] * vectors[i * used + used - bc + c];
                    ss += acc * acc;
                }
                double sigma = Math.Sqrt(Math.Max(values[i], 0));
                all = Math.Sqrt(ss) <= tolerance * s1 * Math.Max(sigma, double.Epsilon * s1);
            }
            if (all || used >= p) { converged = true; break; }
            if (used >= maxCols) break;
            int nb = Math.Min(bc, p - cols);
            w.AsSpan(0, nb * m).CopyTo(q.AsSpan(cols * m));
            cols += nb;
        }
        int count = Math.Min(k, used);
        var u = new double[m * count];
        Combine(q, m, used, vectors.AsSpan(0, count * used), count, u);
        // Aᵀu and AAᵀu: from the kept products, or (long inputs) by products in blocks of the run's own size — a wider
        // block would make the frozen map allocate buffers for it (0.6 GB for 4 vectors at 2,048 Qwen3-0.6B tokens)
        var v = Pinned.Array<double>((long)n * count);
        var aau = new double[m * count];
        if (keep)
            for (int i = 0; i < count; i++)
            {
                var y = vectors.AsSpan(i * used, used);
                for (int blk = 0, j0 = 0; blk < keptAtq.Count; j0 += keptW[blk].Length / m, blk++)
                    for (int c = 0; c < keptW[blk].Length / m; c++)
                    {
                        TensorPrimitives.MultiplyAdd(keptAtq[blk].AsSpan(c * n, n), y[j0 + c], v.AsSpan(i * n, n), v.AsSpan(i * n, n));
                        TensorPrimitives.MultiplyAdd(keptW[blk].AsSpan(c * m, m), y[j0 + c], aau.AsSpan(i * m, m), aau.AsSpan(i * m, m));
                    }
            }
        else
            for (int c0 = 0; c0 < count; c0 += b)
            {
                int bc = Math.Min(b, count - c0);
                op.MultiplyTransposed(u.AsSpan(c0 * m, bc * m), bc, v.AsSpan(c0 * n, bc * n)); tproducts += bc;
            }
        var sig = new double[count];
        for (int i = 0; i < count; i++) sig[i] = Math.Sqrt(TensorPrimitives.SumOfSquares<double>(v.AsSpan(i * n, n)));
        // σ from ‖Aᵀu‖ may reorder near-ties: descending
        var order = Enumerable.Range(0, count).OrderByDescending(i => sig[i]).ToArray();
        var us = new double[m * count]; var vs = new double[(long)n * count]; var sv = new double[count]; var av = new double[m * count];
        for (int r = 0; r < count; r++)
        {
            int i = order[r];
            sv[r] = sig[i];
            u.AsSpan(i * m, m).CopyTo(us.AsSpan(r * m));
            var vr = vs.AsSpan(r * n, n);
            v.AsSpan(i * n, n).CopyTo(vr);
            if (sv[r] > 0) TensorPrimitives.Divide(vr, sv[r], vr);
            if (keep && sv[r] > 0) TensorPrimitives.Divide(aau.AsSpan(i * m, m), sv[r], av.AsSpan(r * m, m));   // A v = AAᵀu/σ
        }
        if (!keep)
            for (int c0 = 0; c0 < count; c0 += b)
            {
                int bc = Math.Min(b, count - c0);
                op.Multiply(vs.AsSpan(c0 * n, bc * n), bc, av.AsSpan(c0 * m, bc * m)); products += bc;
            }
        var residuals = new double[count];
        for (int r = 0; r < count; r++)
        {
            var col = av.AsSpan(r * m, m);
            TensorPrimitives.MultiplyAdd(us.AsSpan(r * m, m), -sv[r], col, col);
            residuals[r] = Math.Sqrt(TensorPrimitives.SumOfSquares<double>(col));
        }
        return new SingularTriplets(m, n, sv, us, vs, residuals, "lanczos")
        { Subspace = used, Converged = converged, Products = products, TransposedProducts = tproducts };
    }

    /// <summary>Bytes of Cols-long products a <see cref="GramLanczos"/> run keeps to finish without further products.</summary>
    public const double KeptProductBytes = 256e6;

    /// <summary>Triplets of Aᵀ as triplets of A (U and V exchanged, product counts exchanged).</summary>
    internal static SingularTriplets Swap(SingularTriplets t) =>
        new SingularTriplets(t.Cols, t.Rows, t.Values, t.V, t.U, t.Residuals, t.Method)
        { Products = t.TransposedProducts, TransposedProducts = t.Products, Subspace = t.Subspace, Converged = t.Converged };
}

/// <summary>
/// One block Golub–Kahan–Lanczos run as a state machine, so that several runs (one per operator, e.g. per token) can
/// share batched products: the caller reads <see cref="Pending"/> (a block to multiply by A when
/// <see cref="NeedsMultiply"/>, else by Aᵀ), writes the product into <see cref="OutputBuffer"/> and calls
/// <see cref="Supply"/>, until <see cref="Done"/>.
///
/// With full reorthogonalization, A·Vⱼ = Σ_{i≤j} Uᵢ·Cᵢⱼ (the Gram–Schmidt coefficients of A·Vⱼ against the U basis), so
/// A·V = U·C with C = UᵀAV block upper triangular, and a Ritz triplet (σ, x, y) of C gives u = Ux, v = Vy with
/// A v = σ u exactly and Aᵀu − σv = V_{s+1}·Lₛ·xₛ, where Lₛ is the triangular factor of the next V block (from the
/// Gram–Schmidt of Aᵀ·Uₛ) and xₛ the last block of x: the convergence test ‖Lₛxₛ‖ ≤ tol·σ₁ costs nothing extra.
/// When the Krylov space reaches min(Rows, Cols) the result is exact (for Rows &lt; Cols through one last Aᵀ·U product).
/// Callers that want ‖A v − σ u‖ to be the informative residual run it on Aᵀ (as <see cref="Svd.Lanczos"/> does).
/// </summary>
public sealed unsafe class BlockLanczos
{
    readonly int rows, cols, k, b, p, maxCols;
    readonly double tol;
    readonly Random rng;
    // bases, col-major, grown as the run needs columns (doubling, up to maxCols): a long input's n·d-long vectors make a
    // basis allocated for all 10k + 100 columns gigabytes that a converging run never fills
    double[] ub, vb;                // ub rows × capacity, vb cols × (capacity + b)
    readonly double[] cm;           // C = Uᵀ A V, maxCols × maxCols, col-major
    readonly double[] pending, outBuf;
    double[] mtu;                   // the raw Aᵀ·U products, cols × capacity: Aᵀu of any u in span(U) without another product
    int capacity;
    int mtuCols;
    int ucols, vcols, lastU;
    enum Phase { A, At, FinalAt, Done }
    Phase phase = Phase.A;
    SingularTriplets? ritz;         // Ritz triplets of C (x, y in basis coordinates)
    double[]? estimates;
    SingularTriplets? exact;

    public int Products { get; private set; }
    public int TransposedProducts { get; private set; }
    public bool Done => phase == Phase.Done;
    public bool Converged { get; private set; }
    public bool NeedsMultiply => phase == Phase.A;
    public int PendingCount { get; private set; }
    /// <summary>The block to multiply (col-major, Cols×PendingCount for A, Rows×PendingCount for Aᵀ).</summary>
    public ReadOnlySpan<double> Pending => pending.AsSpan(0, PendingCount * (NeedsMultiply ? cols : rows));
    /// <summary>Where the caller may write the product (large enough for either side).</summary>
    public double[] OutputBuffer => outBuf;
    public int Rows => rows;
    public int Cols => cols;
    /// <summary>Columns of the Krylov bases so far.</summary>
    public int Subspace => ucols;

    /// <param name="maxIterations">Blocks at most (0: enough for 10k + 100 columns, at least 20 blocks, capped at min(Rows, Cols)).</param>
    /// <param name="blockSize">Vectors per product (0: min(k, 4)).</param>
    public BlockLanczos(int rows, int cols, int k, double tolerance = 1e-10, int maxIterations = 0, int seed = 0, int blockSize = 0)
    {
        this.rows = rows; this.cols = cols;
        p = Math.Min(rows, cols);
        this.k = k = Math.Clamp(k, 0, p);
        tol = tolerance;
        b = Math.Max(1, Math.Min(blockSize > 0 ? blockSize : Math.Clamp(k, 1, 4), Math.Max(p, 1)));
        int autoCols = Math.Max(10 * k + 100, 20 * b);
        maxCols = Math.Min(p, maxIterations > 0 ? (int)Math.Min((long)maxIterations * b, int.MaxValue) : autoCols);
        maxCols = Math.Max(maxCols, k);
        rng = new Random(seed);
        int bufCols = Math.Max(b, rows < cols ? maxCols : 0);
        pending = Pinned.Array<double>((long)Math.Max(rows, cols) * bufCols);
        outBuf = Pinned.Array<double>((long)Math.Max(rows, cols) * bufCols);
        capacity = Math.Max(1, Math.Min(maxCols, Math.Max(32, 2 * k + 4 * b)));
        ub = Pinned.Array<double>((long)rows * capacity);
        vb = Pinned.Array<double>((long)cols * (capacity + b));
        cm = new double[checked(maxCols * maxCols)];
        mtu = Pinned.Array<double>((long)cols * capacity);
        if (k == 0) { phase = Phase.Done; Converged = true; return; }
        var first = new double[cols * b];
        Svd.Gaussian(first, rng);
        Svd.Orthonormalize(first, cols, b, [], 0, null, rng);
        first.CopyTo(vb, 0);
        vcols = b;
        PrepareA();
    }

    /// <summary>Makes room for `columns` basis columns (U, Aᵀ·U; V has b more), keeping the ones there.</summary>
    void Reserve(int columns)
    {
        if (columns <= capacity) return;
        int grown = Math.Min(maxCols, Math.Max(columns, 2 * capacity));
        ub = Grow(ub, (long)rows * grown, (long)rows * ucols);
        vb = Grow(vb, (long)cols * (grown + b), (long)cols * vcols);
        mtu = Grow(mtu, (long)cols * grown, (long)cols * mtuCols);
        capacity = grown;
    }

    static double[] Grow(double[] a, long length, long used)
    {
        var g = Pinned.Array<double>(length);
        a.AsSpan(0, (int)used).CopyTo(g);
        return g;
    }

    void PrepareA()
    {
        PendingCount = Math.Min(b, Math.Min(vcols, maxCols) - ucols);
        vb.AsSpan(ucols * cols, PendingCount * cols).CopyTo(pending);
    }

    /// <summary>Hands in the product of the pending block (A·Pending or Aᵀ·Pending, col-major).</summary>
    public void Supply(ReadOnlySpan<double> product)
    {
        int bc = PendingCount;
        Svd.RequireFinite(product, "a Jacobian product");
        switch (phase)
        {
            case Phase.A:
            {
                Products += bc;
                var blk = new double[rows * bc];
                product[..(rows * bc)].CopyTo(blk);
                var coeff = new double[(ucols + bc) * bc];
                Svd.Orthonormalize(blk, rows, bc, ub, ucols, coeff, rng);
                Reserve(ucols + bc);
                blk.CopyTo(ub, (long)ucols * rows);
                for (int c = 0; c < bc; c++)
                    for (int i = 0; i < ucols + bc; i++)
                        cm[(ucols + c) * maxCols + i] = coeff[c * (ucols + bc) + i];
                ucols += bc;
                lastU = bc;
                ComputeRitz();
                if (ucols >= p)
                {
                    if (vcols >= cols || rows >= cols) { estimates = new double[ritz!.Count]; Converged = true; phase = Phase.Done; return; }
                    // U spans R^rows: A = U·(UᵀA), and UᵀA = (AᵀU)ᵀ is one last transpose product.
                    phase = Phase.FinalAt;
                    PendingCount = ucols;
                    ub.AsSpan(0, ucols * rows).CopyTo(pending);
                    return;
                }
                phase = Phase.At;
                PendingCount = bc;
                ub.AsSpan((ucols - bc) * rows, bc * rows).CopyTo(pending);
                return;
            }
            case Phase.At:
            {
                TransposedProducts += bc;
                product[..(cols * bc)].CopyTo(mtu.AsSpan((ucols - bc) * cols));
                mtuCols = ucols;
                var blk = new double[cols * bc];
                product[..(cols * bc)].CopyTo(blk);
                var coeff = new double[(vcols + bc) * bc];
                Svd.Orthonormalize(blk, cols, bc, vb, vcols, coeff, rng);
                // residual estimates ‖L·x_last‖, L = the triangular factor of the new block
                int kk = ritz!.Count;
                estimates = new double[kk];
                for (int i = 0; i < kk; i++)
                {
                    var x = ritz.Left(i).Slice(ucols - lastU, lastU);
                    double ss = 0;
                    for (int r = 0; r < bc; r++)
                    {
                        double acc = 0;
                        for (int c = 0; c < bc; c++) acc += coeff[c * (vcols + bc) + vcols + r] * x[c];
                        ss += acc * acc;
                    }
                    estimates[i] = Math.Sqrt(ss);
                }
                double s1 = ritz.Values.Length > 0 ? ritz.Values[0] : 0;
                if (ucols >= k && estimates.All(e => e <= tol * s1)) { Converged = true; phase = Phase.Done; return; }
                if (ucols >= maxCols) { phase = Phase.Done; return; }
                int nb = Math.Min(bc, cols - vcols);
                Reserve(vcols + nb - b);
                blk.AsSpan(0, nb * cols).CopyTo(vb.AsSpan(vcols * cols));
                vcols += nb;
                phase = Phase.A;
                PrepareA();
                if (PendingCount <= 0) phase = Phase.Done;
                return;
            }
            case Phase.FinalAt:
            {
                TransposedProducts += bc;
                // B = UᵀA (ucols × cols, row-major) is the col-major AᵀU
                var bm = product[..(cols * ucols)].ToArray();
                Reserve(ucols);
                bm.CopyTo(mtu, 0);
                mtuCols = ucols;
                exact = Svd.Dense(bm, ucols, cols, k);
                estimates = new double[exact.Count];
                Converged = true;
                phase = Phase.Done;
                return;
            }
            default: throw new InvalidOperationException("the Lanczos run is finished");
        }
    }

    void ComputeRitz()
    {
        int m = ucols;
        var c = new double[m * m];
        for (int i = 0; i < m; i++) for (int j = 0; j < m; j++) c[i * m + j] = cm[j * maxCols + i];
        ritz = Svd.Dense(c, m, m, Math.Min(k, m));
    }

    /// <summary>
    /// ‖Aᵀuᵢ − σᵢvᵢ‖ for the triplets <paramref name="t"/> of <see cref="Result"/>, the side that is not exact by
    /// construction, from the stored products Aᵀ·U: Aᵀuᵢ = (Aᵀ·U)·xᵢ with xᵢ the coordinates of uᵢ. Null when the last
    /// U block was never multiplied.
    /// </summary>
    public double[]? TransposeResiduals(SingularTriplets t)
    {
        if (k == 0) return [];
        if (mtuCols < ucols) return null;
        var small = exact ?? ritz ?? throw new InvalidOperationException("no Ritz values yet");
        var res = new double[t.Count];
        var w = new double[cols];
        for (int i = 0; i < t.Count; i++)
        {
            var x = small.Left(i);   // coordinates of uᵢ in the U basis
            Array.Clear(w);
            for (int j = 0; j < ucols; j++)
                System.Numerics.Tensors.TensorPrimitives.MultiplyAdd(mtu.AsSpan(j * cols, cols), x[j], w, w);
            var v = t.Right(i);
            double ss = 0;
            for (int c = 0; c < cols; c++) { double e = w[c] - t.Values[i] * v[c]; ss += e * e; }
            res[i] = Math.Sqrt(ss);
        }
        return res;
    }

    /// <summary>The Ritz triplets (residuals: the estimates ‖Aᵀuᵢ − σᵢvᵢ‖, not the true ‖A vᵢ − σᵢ uᵢ‖).</summary>
    public SingularTriplets Result()
    {
        if (k == 0) return new SingularTriplets(rows, cols, [], [], [], [], "lanczos");
        SingularTriplets t;
        if (exact is not null)
        {
            var u = new double[rows * exact.Count];
            Svd.Combine(ub, rows, ucols, exact.U, exact.Count, u);
            t = new SingularTriplets(rows, cols, exact.Values, u, exact.V, estimates, "lanczos");
        }
        else
        {
            var small = ritz ?? throw new InvalidOperationException("no Ritz values yet");
            int kk = small.Count;
            var u = new double[rows * kk];
            var v = new double[cols * kk];
            Svd.Combine(ub, rows, ucols, small.U, kk, u);
            Svd.Combine(vb, cols, ucols, small.V, kk, v);
            t = new SingularTriplets(rows, cols, small.Values, u, v, estimates, "lanczos");
        }
        return t with { Products = Products, TransposedProducts = TransposedProducts, Subspace = ucols, Converged = Converged };
    }
}
