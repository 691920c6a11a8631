using LinearLens.Analysis;

namespace LinearLens.Tests.Analysis;

/// <summary>Dense, randomized and Lanczos SVDs against matrices with known singular values.</summary>
public class SvdTests
{
    /// <summary>n×k column-major matrix with orthonormal columns (Gram–Schmidt twice of Gaussian columns).</summary>
    internal static double[] RandomOrthonormal(int n, int k, Random rng)
    {
        var q = new double[n * k];
        for (int c = 0; c < k; c++)
        {
            var col = q.AsSpan(c * n, n);
            for (int i = 0; i < n; i++) col[i] = Gauss(rng);
            for (int pass = 0; pass < 2; pass++)
                for (int o = 0; o < c; o++)
                {
                    var other = q.AsSpan(o * n, n);
                    double dot = 0;
                    for (int i = 0; i < n; i++) dot += col[i] * other[i];
                    for (int i = 0; i < n; i++) col[i] -= dot * other[i];
                }
            double nrm = Math.Sqrt(Dot(col, col));
            for (int i = 0; i < n; i++) col[i] /= nrm;
        }
        return q;
    }

    static double Gauss(Random rng) => Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble());

    static double Dot(ReadOnlySpan<double> a, ReadOnlySpan<double> b)
    {
        double s = 0;
        for (int i = 0; i < a.Length; i++) s += a[i] * b[i];
        return s;
    }

    /// <summary>A = U diag(σ) Vᵀ, row-major rows × cols.</summary>
    internal static double[] Build(int rows, int cols, double[] sigma, int seed, out double[] u, out double[] v)
    {
        var rng = new Random(seed);
        int r = sigma.Length;
        u = RandomOrthonormal(rows, r, rng);
        v = RandomOrthonormal(cols, r, rng);
        var a = new double[rows * cols];
        for (int c = 0; c < r; c++)
            for (int i = 0; i < rows; i++)
            {
                double s = sigma[c] * u[c * rows + i];
                for (int j = 0; j < cols; j++) a[i * cols + j] += s * v[c * cols + j];
            }
        return a;
    }

    /// <summary>max |QᵀQ − I| for n×k column-major Q.</summary>
    internal static double OrthonormalityError(double[] q, int n, int k)
    {
        double e = 0;
        for (int a = 0; a < k; a++)
            for (int b = 0; b <= a; b++)
                e = Math.Max(e, Math.Abs(Dot(q.AsSpan(a * n, n), q.AsSpan(b * n, n)) - (a == b ? 1 : 0)));
        return e;
    }

    /// <summary>sin of the largest principal angle between span(A) and span(B), both n×k orthonormal: ‖A − B(BᵀA)‖₂.</summary>
    internal static double SubspaceSine(ReadOnlySpan<double> a, ReadOnlySpan<double> b, int n, int k)
    {
        var r = a[..(n * k)].ToArray();
        for (int c = 0; c < k; c++)
            for (int o = 0; o < k; o++)
            {
                double dot = Dot(b.Slice(o * n, n), a.Slice(c * n, n));
                for (int i = 0; i < n; i++) r[c * n + i] -= dot * b[o * n + i];
            }
        // r is n×k col-major = k×n row-major: its largest singular value
        return Svd.Dense(r, k, n, 1).Values[0];
    }

    static double[] Decaying(int r, double ratio, double top = 3.0) => Enumerable.Range(0, r).Select(i => top * Math.Pow(ratio, i)).ToArray();

    [Theory]
    [InlineData(30, 50, 30, 30)]     // wide, full rank, all
    [InlineData(50, 30, 30, 30)]     // tall
    [InlineData(40, 40, 40, 7)]      // square, top 7
    [InlineData(40, 70, 12, 40)]     // rank-deficient, all (null directions completed)
    [InlineData(70, 40, 12, 20)]     // rank-deficient tall
    [InlineData(25, 60, 25, 1)]      // k = 1
    [InlineData(3, 200, 3, 3)]       // very wide
    [InlineData(1, 9, 1, 1)]
    public void DenseMatchesKnownDecomposition(int rows, int cols, int rank, int k)
    {
        var rng = new Random(rows * 1000 + cols);
        var sigma = Enumerable.Range(0, rank).Select(i => 10.0 * Math.Pow(0.8, i) * (1 + 0.1 * rng.NextDouble())).OrderDescending().ToArray();
        var a = Build(rows, cols, sigma, rows + cols + rank, out var u0, out var v0);
        var t = Svd.Dense(a, rows, cols, k);
        int kk = Math.Min(k, Math.Min(rows, cols));
        Assert.Equal(kk, t.Count);
        Assert.Equal("dense", t.Method);
        for (int i = 0; i < kk; i++)
        {
            double expected = i < rank ? sigma[i] : 0;
            Assert.True(Math.Abs(t.Values[i] - expected) <= 1e-13 * sigma[0], $"σ{i} = {t.Values[i]:R}, expected {expected:R}");
        }
        Assert.True(OrthonormalityError(t.U, rows, kk) <= 1e-12, $"U not orthonormal: {OrthonormalityError(t.U, rows, kk):E2}");
        Assert.True(OrthonormalityError(t.V, cols, kk) <= 1e-12, $"V not orthonormal: {OrthonormalityError(t.V, cols, kk):E2}");
        // the singular vectors of distinct σ match up to sign
        for (int i = 0; i < Math.Min(kk, rank); i++)
        {
            Assert.True(Math.Abs(Math.Abs(Dot(t.Left(i), u0.AsSpan(i * rows, rows))) - 1) <= 1e-10, $"u{i}");
            Assert.True(Math.Abs(Math.Abs(Dot(t.Right(i), v0.AsSpan(i * cols, cols))) - 1) <= 1e-10, $"v{i}");
            // the pair is consistent: A vᵢ = σᵢ uᵢ
            for (int r = 0; r < rows; r++)
            {
                double av = Dot(a.AsSpan(r * cols, cols), t.Right(i));
                Assert.True(Math.Abs(av - t.Values[i] * t.Left(i)[r]) <= 1e-12 * sigma[0]);
            }
        }
    }

    [Fact]
    public void TopKOfALargeMatrixTakesLanczosAndMatchesTheDenseSvd()
    {
        // 600×600 with a slowly decaying spectrum (σᵢ₊₁/σᵢ = 0.98, like a random model's Jᵢ): the top 3 by Lanczos on the
        // matrix agree with the full dense SVD to 1e-10 relative, their subspaces to 1e-8.
        int d = 600;
        var a = Build(d, d, Decaying(d, 0.98), 17, out _, out _);
        var top = Svd.TopK(a, d, d, 3);
        var dense = Svd.Dense(a, d, d, 3);
        Assert.Equal("lanczos", top.Method);
        for (int c = 0; c < 3; c++) Assert.Equal(dense.Values[c], top.Values[c], dense.Values[0] * 1e-10);
        Assert.True(SubspaceSine(top.U, dense.U, d, 3) < 1e-8);
        Assert.True(SubspaceSine(top.V, dense.V, d, 3) < 1e-8);
        Assert.Equal("dense", Svd.TopK(a, d, d, 100).Method);   // many components: the dense SVD
    }

    [Fact]
    public void DenseFullReconstructsGaussianMatrix()
    {
        var rng = new Random(3);
        int rows = 37, cols = 23;
        var a = new double[rows * cols];
        for (int i = 0; i < a.Length; i++) a[i] = Gauss(rng);
        var t = Svd.Dense(a, rows, cols, 100);
        Assert.Equal(23, t.Count);
        double maxErr = 0;
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < cols; j++)
            {
                double s = 0;
                for (int c = 0; c < t.Count; c++) s += t.U[c * rows + i] * t.Values[c] * t.V[c * cols + j];
                maxErr = Math.Max(maxErr, Math.Abs(s - a[i * cols + j]));
            }
        Assert.True(maxErr <= 1e-13 * t.Values[0], $"reconstruction error {maxErr:E2}");
        for (int c = 1; c < t.Count; c++) Assert.True(t.Values[c] <= t.Values[c - 1]);
    }

    [Theory]
    [InlineData(530, 600)]   // Gram + symmetric eigensolver path (min dimension above the Jacobi limit)
    [InlineData(600, 530)]
    public void DenseLargePathMatchesKnown(int rows, int cols)
    {
        var sigma = Decaying(40, 0.85, 5.0);
        var a = Build(rows, cols, sigma, 7, out var u0, out var v0);
        int k = 10;
        var t = Svd.Dense(a, rows, cols, k);
        for (int i = 0; i < k; i++) Assert.True(Math.Abs(t.Values[i] - sigma[i]) <= 1e-13 * sigma[0], $"σ{i} {t.Values[i]:R} vs {sigma[i]:R}");
        Assert.True(OrthonormalityError(t.U, rows, k) <= 1e-12, $"U {OrthonormalityError(t.U, rows, k):E2}");
        Assert.True(OrthonormalityError(t.V, cols, k) <= 1e-12, $"V {OrthonormalityError(t.V, cols, k):E2}");
        Assert.True(SubspaceSine(t.U, u0, rows, k) <= 1e-10);
        Assert.True(SubspaceSine(t.V, v0, cols, k) <= 1e-10);
    }

    [Theory]
    [InlineData(60)]
    [InlineData(300)]
    public void SymmetricEigenMatchesKnown(int n)
    {
        var rng = new Random(5);
        var q = RandomOrthonormal(n, n, rng);
        var lambda = Enumerable.Range(0, n).Select(i => 5.0 - 10.0 * i / n).ToArray();
        var m = new double[n * n];
        for (int c = 0; c < n; c++) for (int i = 0; i < n; i++) for (int j = 0; j < n; j++) m[i * n + j] += lambda[c] * q[c * n + i] * q[c * n + j];
        var (values, vectors) = Svd.SymmetricEigen(m, n);
        for (int i = 0; i < n; i++) Assert.True(Math.Abs(values[i] - lambda[i]) <= 1e-13 * 5, $"λ{i}");
        Assert.True(OrthonormalityError(vectors, n, n) <= 1e-13, $"{OrthonormalityError(vectors, n, n):E2}");
        Assert.True(SubspaceSine(vectors, q, n, 3) <= 1e-12, $"{SubspaceSine(vectors, q, n, 3):E2}");
    }

    public static TheoryData<int, int, int> Operators => new() { { 120, 200, 6 }, { 200, 120, 6 }, { 90, 90, 1 }, { 60, 300, 12 } };

    [Theory]
    [MemberData(nameof(Operators))]
    public void RandomizedAndLanczosMatchDense(int rows, int cols, int k)
    {
        var sigma = Decaying(Math.Min(rows, cols), 0.8, 4.0);
        var a = Build(rows, cols, sigma, rows * 7 + cols, out _, out _);
        var op = new DenseOperator(a, rows, cols);
        var dense = Svd.Dense(a, rows, cols, k);
        foreach (var t in new[] { Svd.Randomized(op, k), Svd.Lanczos(op, k), Svd.Lanczos(op, k, blockSize: 1),
                     Svd.GramLanczos(op, k), Svd.GramLanczos(op, k, blockSize: 1), Svd.GramLanczos(op, k, blockSize: 3),
                     Svd.GramLanczos(op, k, blockSize: 3, keptProductBytes: 0) })
        {
            Assert.Equal(k, t.Count);
            for (int i = 0; i < k; i++)
                Assert.True(Math.Abs(t.Values[i] - dense.Values[i]) <= 1e-8 * dense.Values[i], $"{t.Method}: σ{i} {t.Values[i]:R} vs {dense.Values[i]:R}");
            Assert.True(SubspaceSine(t.U, dense.U, rows, k) <= 1e-6, $"{t.Method}: U subspace {SubspaceSine(t.U, dense.U, rows, k):E2}");
            Assert.True(SubspaceSine(t.V, dense.V, cols, k) <= 1e-6, $"{t.Method}: V subspace {SubspaceSine(t.V, dense.V, cols, k):E2}");
            Assert.NotNull(t.Residuals);
            Assert.All(t.Residuals!, r => Assert.True(r <= 1e-8 * dense.Values[0], $"{t.Method}: residual {r:E2}"));
            Assert.True(OrthonormalityError(t.U, rows, k) <= 1e-10);
            Assert.True(OrthonormalityError(t.V, cols, k) <= 1e-10);
        }
    }

    [Theory]
    [InlineData(120, 200, 1)]
    [InlineData(200, 120, 3)]
    public void LanczosResidualsFromStoredProductsAreTheTrueOnes(int rows, int cols, int blockSize)
    {
        // a loose tolerance leaves residuals large enough to tell a wrong formula apart; they must equal ‖A v − σ u‖
        // computed with an explicit product, and cost no product of their own
        var sigma = Decaying(Math.Min(rows, cols), 0.9, 4.0);
        var a = Build(rows, cols, sigma, rows + cols, out _, out _);
        var op = new DenseOperator(a, rows, cols);
        var t = Svd.Lanczos(op, 4, tolerance: 1e-3, blockSize: blockSize);
        var explicitResiduals = Svd.Residuals(op, t);
        Assert.Contains(explicitResiduals, r => r > 1e-8 * t.Values[0]);
        for (int i = 0; i < t.Count; i++)
            Assert.True(Math.Abs(t.Residuals![i] - explicitResiduals[i]) <= 1e-12 * t.Values[0], $"residual {i}: {t.Residuals[i]:E3} vs {explicitResiduals[i]:E3}");
        Assert.Equal(t.Subspace, t.Products);
    }

    [Fact]
    public void GramLanczosConvergesLikeGolubKahanAndStopsAtItsTolerance()
    {
        // the same Krylov space per pair of products: the Gram run needs no more products than Golub–Kahan on a wide
        // operator (d × n·d, as the combined J), and a loose tolerance is met by its estimate, which the true residuals confirm
        int rows = 64, cols = 64 * 9;
        var a = Build(rows, cols, Decaying(rows, 0.85, 3.0), 5, out _, out _);
        var op = new DenseOperator(a, rows, cols);
        var dense = Svd.Dense(a, rows, cols, 4);
        var gk = Svd.Lanczos(op, 4, blockSize: 1);
        var gram = Svd.GramLanczos(op, 4, blockSize: 1);
        Assert.True(gram.Converged);
        Assert.True(gram.Subspace <= gk.Subspace + 1, $"Gram {gram.Subspace} vs Golub–Kahan {gk.Subspace} columns");
        for (int i = 0; i < 4; i++) Assert.True(Math.Abs(gram.Values[i] - dense.Values[i]) <= 1e-12 * dense.Values[0], $"σ{i}");
        Assert.All(gram.Residuals!, r => Assert.True(r <= 1e-10 * dense.Values[0], $"residual {r:E2}"));
        Assert.Equal(gram.Subspace, gram.Products);   // v and the residuals from the kept products: no product of their own
        var loose = Svd.GramLanczos(op, 4, tolerance: 1e-3, blockSize: 1);
        Assert.True(loose.Subspace < gram.Subspace);
        Assert.All(loose.Residuals!, r => Assert.True(r <= 2e-3 * loose.Values[0], $"residual {r:E2}"));
        Assert.Contains(loose.Residuals!, r => r > 1e-8 * loose.Values[0]);
        // the kept residuals are the true ‖A v − σ u‖, and the same as those of the run that makes the closing products
        var explicitResiduals = Svd.Residuals(op, loose);
        var long_ = Svd.GramLanczos(op, 4, tolerance: 1e-3, blockSize: 1, keptProductBytes: 0);
        Assert.Equal(loose.Subspace + 4, long_.Products);
        for (int i = 0; i < 4; i++)
        {
            Assert.True(Math.Abs(loose.Residuals![i] - explicitResiduals[i]) <= 1e-12 * loose.Values[0], $"residual {i}: {loose.Residuals[i]:E3} vs {explicitResiduals[i]:E3}");
            Assert.True(Math.Abs(long_.Residuals![i] - explicitResiduals[i]) <= 1e-12 * loose.Values[0], $"residual {i} (products)");
            Assert.True(Math.Abs(long_.Values[i] - loose.Values[i]) <= 1e-13 * loose.Values[0]);
        }
        // a Gaussian (flat) wide matrix: the Krylov space fills R^rows and the result is exact
        var rng = new Random(9);
        var g = new double[30 * 200];
        for (int i = 0; i < g.Length; i++) g[i] = Gauss(rng);
        var gd = Svd.Dense(g, 30, 200, 5);
        var gt = Svd.GramLanczos(new DenseOperator(g, 30, 200), 5, maxIterations: 1000);
        for (int i = 0; i < 5; i++) Assert.True(Math.Abs(gt.Values[i] - gd.Values[i]) <= 1e-10 * gd.Values[0]);
        Assert.All(gt.Residuals!, r => Assert.True(r <= 1e-9 * gd.Values[0]));
    }

    [Fact]
    public void LanczosOnFlatSpectrumStillExact()
    {
        // a Gaussian matrix has no decay: the Krylov space fills the whole space and the result is exact
        var rng = new Random(9);
        int rows = 40, cols = 70;
        var a = new double[rows * cols];
        for (int i = 0; i < a.Length; i++) a[i] = Gauss(rng);
        var dense = Svd.Dense(a, rows, cols, 5);
        var t = Svd.Lanczos(new DenseOperator(a, rows, cols), 5, maxIterations: 1000);
        for (int i = 0; i < 5; i++) Assert.True(Math.Abs(t.Values[i] - dense.Values[i]) <= 1e-10 * dense.Values[0]);
        Assert.All(t.Residuals!, r => Assert.True(r <= 1e-9 * dense.Values[0]));
    }

    [Fact]
    public void DenseOperatorProducts()
    {
        var rng = new Random(1);
        int rows = 7, cols = 5, k = 3;
        var a = new double[rows * cols];
        for (int i = 0; i < a.Length; i++) a[i] = Gauss(rng);
        var op = new DenseOperator(a, rows, cols);
        var x = new double[cols * k];
        for (int i = 0; i < x.Length; i++) x[i] = Gauss(rng);
        var y = new double[rows * k];
        op.Multiply(x, k, y);
        for (int c = 0; c < k; c++) for (int i = 0; i < rows; i++)
            Assert.Equal(Dot(a.AsSpan(i * cols, cols), x.AsSpan(c * cols, cols)), y[c * rows + i], 1e-12);
        var z = new double[cols * k];
        op.MultiplyTransposed(y, k, z);
        for (int c = 0; c < k; c++) for (int j = 0; j < cols; j++)
        {
            double s = 0;
            for (int i = 0; i < rows; i++) s += a[i * cols + j] * y[c * rows + i];
            Assert.Equal(s, z[c * cols + j], 1e-12);
        }
    }
}
