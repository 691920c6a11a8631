using LinearLens.Analysis;
using LinearLens.Linearization;
using LinearLens.Loading;
using LinearLens.Models;
using LinearLens.Tests.Linearization;
using LinearLens.Tests.Support;

namespace LinearLens.Tests.Analysis;

/// <summary>
/// Issue 7 acceptance: matrix-free top-k singular triplets of the detached Jacobian (Lanczos / randomized over batched
/// JVP/VJP products, J never formed) agree with the dense SVD of the full J — singular values to 1e-8 relative, singular
/// subspaces to 1e-6 (largest principal angle) — per token and for the combined [J₀|…|J_{n−1}].
/// </summary>
public class MatrixFreeTests
{
    static readonly int[] Ids = [1, 5, 9, 22, 7, 3, 50, 11];

    /// <summary>Jᵢ (d×d row-major) out of J [d, n, d].</summary>
    static double[] PerToken(double[] j, int n, int d, int i)
    {
        var m = new double[d * d];
        for (int r = 0; r < d; r++) j.AsSpan((r * n + i) * d, d).CopyTo(m.AsSpan(r * d));
        return m;
    }

    /// <summary>The k ≤ kMax with the widest relative gap σ_k / σ_{k+1} (so that span of the top k is well defined).</summary>
    static int GapK(double[] sv, int kMax)
    {
        if (sv[0] == 0) return 0;   // Jᵢ = 0 (a token outside a sliding window)
        int best = 1;
        double ratio = 0;
        for (int k = 1; k <= Math.Min(kMax, sv.Length - 1); k++)
            if (sv[k - 1] / Math.Max(sv[k], 1e-300) > ratio) { ratio = sv[k - 1] / Math.Max(sv[k], 1e-300); best = k; }
        Assert.True(ratio > 1.01, $"no spectral gap among the top {kMax}");
        return best;
    }

    static void AssertAgree(SingularTriplets dense, SingularTriplets t, int k, string what)
    {
        if (k == 0) { Assert.All(t.Values, v => Assert.True(v <= 1e-12, $"{what}: σ = {v} of a zero matrix")); return; }
        Assert.True(t.Count >= k, $"{what}: {t.Count} triplets");
        for (int i = 0; i < k; i++)
            Assert.True(Math.Abs(t.Values[i] - dense.Values[i]) <= 1e-8 * dense.Values[i],
                $"{what} ({t.Method}): σ{i} = {t.Values[i]:R} vs dense {dense.Values[i]:R}");
        double su = SvdTests.SubspaceSine(t.U, dense.U, dense.Rows, k), sv = SvdTests.SubspaceSine(t.V, dense.V, dense.Cols, k);
        Assert.True(su <= 1e-6, $"{what} ({t.Method}): U subspace angle sin = {su:E2}");
        Assert.True(sv <= 1e-6, $"{what} ({t.Method}): V subspace angle sin = {sv:E2}");
        Assert.NotNull(t.Residuals);
        for (int i = 0; i < k; i++)
            Assert.True(t.Residuals![i] <= 1e-8 * dense.Values[0], $"{what} ({t.Method}): residual {i} = {t.Residuals[i]:E2}");
    }

    static void AssertMatrixFreeMatchesDense(Checkpoint ckpt, int[] ids, JacobianTarget? target = null, int kMax = 6)
    {
        var model = new Transformer<double>(ckpt);
        var map = new FrozenMap<double>(model, model.Forward(ids, trace: true).Trace!);
        var t = target ?? JacobianTarget.Output(ckpt.Config.NumLayers);
        int n = ids.Length, d = model.Hidden;
        var J = DetachedJacobian.Compute(map, t).J;

        // combined [J₀|…|J_{n−1}] = J itself (d × n·d row-major)
        var denseC = Svd.Dense(J, d, n * d, d);
        int kc = GapK(denseC.Values, kMax);
        var op = JacobianOperators.Combined(map, t);
        Assert.Equal(d, op.Rows); Assert.Equal(n * d, op.Cols);
        AssertAgree(denseC, Svd.Lanczos(op, kc), kc, "combined");
        AssertAgree(denseC, JacobianOperators.CombinedTopK(map, t, kc, blockSize: 1), kc, "combined, single-vector");
        // randomized (HMT) is an approximation whose accuracy follows (σ_{l+1}/σ_k)^(2q+1): a looser check
        var rnd = Svd.Randomized(op, kc, oversampling: 20, powerIterations: 10);
        for (int i = 0; i < kc; i++)
            Assert.True(Math.Abs(rnd.Values[i] - denseC.Values[i]) <= 1e-6 * denseC.Values[i], $"combined (randomized): σ{i} = {rnd.Values[i]:R} vs {denseC.Values[i]:R}");
        Assert.True(SvdTests.SubspaceSine(rnd.U, denseC.U, d, kc) <= 1e-3);
        Assert.All(rnd.Residuals!, r => Assert.True(r <= 1e-3 * denseC.Values[0]));

        // per token: one operator at a time, and all tokens in lockstep
        var ks = new int[n];
        var dense = new SingularTriplets[n];
        for (int i = 0; i < n; i++) { dense[i] = Svd.Dense(PerToken(J, n, d, i), d, d, d); ks[i] = GapK(dense[i].Values, kMax); }
        foreach (int i in new[] { 0, n / 2, n - 1 })
            AssertAgree(dense[i], Svd.Lanczos(JacobianOperators.PerToken(map, t, i), Math.Max(ks[i], 1)), ks[i], $"token {i}");
        int kAll = Math.Max(1, ks.Max());
        var all = JacobianOperators.PerTokenTopK(map, t, Enumerable.Range(0, n).ToArray(), kAll);
        for (int i = 0; i < n; i++) AssertAgree(dense[i], all[i], ks[i], $"token {i} (lockstep)");
        var single = JacobianOperators.PerTokenTopK(map, t, Enumerable.Range(0, n).ToArray(), kAll, blockSize: 1);
        for (int i = 0; i < n; i++) AssertAgree(dense[i], single[i], ks[i], $"token {i} (lockstep, single-vector)");
    }

    [Theory]
    [InlineData("tiny-llama")]
    [InlineData("tiny-qwen3")]
    [InlineData("tiny-gemma3")]
    public void TinyRandomMatchesDense(string preset)
    {
        using var tmp = new TempCheckpoint(preset);
        AssertMatrixFreeMatchesDense(tmp.Checkpoint, Ids);
    }

    [Fact]
    public void IntermediateLayerwiseTargetMatchesDense()
    {
        using var tmp = new TempCheckpoint("tiny-gemma3");
        AssertMatrixFreeMatchesDense(tmp.Checkpoint, Ids, new JacobianTarget(2, OutputKey.Attn, JacobianMode.Layerwise, FinalNorm: false));
    }

    [SharedFact("models", "stories260K", "hf", "model.safetensors")]
    public void Stories260KMatchesDense()
    {
        using var ckpt = Checkpoint.Open(SharedData.Stories260K);
        AssertMatrixFreeMatchesDense(ckpt, ckpt.RequireTokenizer().Encode("Lily went to the park. She saw a big"));
    }

    /// <summary>float32 products agree with the float32 J to rounding: a tolerance, never digit rounding (which flips at ties).</summary>
    static void Close(double expected, double actual) =>
        Assert.True(Math.Abs(expected - actual) <= 1e-4 * Math.Max(1, Math.Abs(expected)), $"{actual} vs {expected}");

    [Fact]
    public void OperatorsAreJacobianProducts()
    {
        using var tmp = new TempCheckpoint("tiny-qwen3");
        var model = new Transformer<float>(tmp.Checkpoint);
        var map = new FrozenMap<float>(model, model.Forward(Ids, trace: true).Trace!);
        var t = JacobianTarget.Output(tmp.Checkpoint.Config.NumLayers);
        int n = Ids.Length, d = model.Hidden, k = 3;
        var J = DetachedJacobian.Compute(map, t).J;
        var rng = new Random(4);
        var x = Enumerable.Range(0, n * d * k).Select(_ => rng.NextDouble() - 0.5).ToArray();
        var u = Enumerable.Range(0, d * k).Select(_ => rng.NextDouble() - 0.5).ToArray();
        var comb = JacobianOperators.Combined(map, t);
        var y = new double[d * k];
        comb.Multiply(x, k, y);
        var g = new double[n * d * k];
        comb.MultiplyTransposed(u, k, g);
        for (int c = 0; c < k; c++)
            for (int r = 0; r < d; r++)
            {
                double s = 0;
                for (int col = 0; col < n * d; col++) s += J[r * n * d + col] * x[c * n * d + col];
                Close(s, y[c * d + r]);
            }
        for (int c = 0; c < k; c++)
            for (int col = 0; col < n * d; col++)
            {
                double s = 0;
                for (int r = 0; r < d; r++) s += J[r * n * d + col] * u[c * d + r];
                Close(s, g[c * n * d + col]);
            }
        // per token: position 3's block
        var pt = JacobianOperators.PerToken(map, t, 3);
        var yi = new double[d * k];
        pt.Multiply(x.AsSpan(0, d * k), k, yi);
        for (int c = 0; c < k; c++)
            for (int r = 0; r < d; r++)
            {
                double s = 0;
                for (int j = 0; j < d; j++) s += J[(r * n + 3) * d + j] * x[c * d + j];
                Close(s, yi[c * d + r]);
            }
        Assert.Throws<LinearLensException>(() => JacobianOperators.PerToken(map, t, n));
    }

    [Fact]
    public void CliMatrixFreeMatchesFull()
    {
        using var tmp = new TempCheckpoint("tiny-llama");
        string[] common = ["jacobian", "--model", tmp.Folder, "--token-ids", "1,5,9,22,7", "--components", "3", "--json"];
        var free = CliRunner.Run([.. common, "--method", "matrix-free"]);
        var full = CliRunner.Run([.. common, "--method", "full"]);
        Assert.Equal(0, free.ExitCode);
        Assert.Equal(0, full.ExitCode);
        using var a = System.Text.Json.JsonDocument.Parse(free.Stdout);
        using var b = System.Text.Json.JsonDocument.Parse(full.Stdout);
        Assert.Equal("matrix-free", a.RootElement.GetProperty("method").GetString());
        Assert.Equal("full", b.RootElement.GetProperty("method").GetString());
        Assert.True(a.RootElement.GetProperty("reconstruction").GetProperty("relative_error").GetDouble() <= 1e-13);
        var sa = a.RootElement.GetProperty("svd").GetProperty("combined").GetProperty("singular_values").EnumerateArray().Select(e => e.GetDouble()).ToArray();
        var sb = b.RootElement.GetProperty("svd").GetProperty("combined").GetProperty("singular_values").EnumerateArray().Select(e => e.GetDouble()).ToArray();
        Assert.Equal(3, sa.Length);
        for (int i = 0; i < 3; i++) Assert.True(Math.Abs(sa[i] - sb[i]) <= 1e-8 * sb[i]);
        Assert.Contains("method: matrix-free", free.Stderr);
        // auto on a tiny model forms J and says why
        var auto = CliRunner.Run("jacobian", "--model", tmp.Folder, "--token-ids", "1,5", "--json");
        using var c = System.Text.Json.JsonDocument.Parse(auto.Stdout);
        Assert.Equal("full", c.RootElement.GetProperty("method").GetString());
        Assert.False(string.IsNullOrEmpty(c.RootElement.GetProperty("method_reason").GetString()));
        // bad values: one error line
        var bad = CliRunner.Run("jacobian", "--model", tmp.Folder, "--token-ids", "1,5", "--method", "sideways");
        Assert.Equal(2, bad.ExitCode);
        Assert.Single(bad.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
    }
}
