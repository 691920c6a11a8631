using LinearLens.Linearization;
using LinearLens.Models;

namespace LinearLens.Tests.Linearization;

/// <summary>
/// A trace that keeps q, k and each softmax row's maximum and normalizer instead of the n² probabilities per head (long
/// inputs) gives the same frozen map: every JVP, VJP (ragged batches, every layer, key and mode) and the formed J equal
/// those of the stored probabilities — bit for bit, since P is rebuilt by the forward pass's own operations. The same
/// for a trace that also leaves out q and the MLP coefficients γ and recomputes them from the residual streams.
/// </summary>
public class RecomputedProbabilitiesTests
{
    [Theory]
    [InlineData("tiny-gemma3", 37, false)]    // sliding window 3, GQA, blocks of 32 plus an edge block
    [InlineData("tiny-mistral", 33, false)]
    [InlineData("tiny-qwen3", 6, false)]      // fewer tokens than a block: rows and keys padded to the GEMM's packed path
    [InlineData("tiny-phi3", 40, false)]
    [InlineData("tiny-phi3", 9, true)]        // the paper's Phi freezing: γ = u ⊙ σ(g) recomputed from both projections
    [InlineData("tiny-olmo2", 11, false)]     // q norm over the whole projection, no pre-norms
    [InlineData("tiny-qwen2", 12, false)]     // q bias
    public void RecomputedProbabilitiesGiveTheStoredOnesResults(string preset, int n, bool referenceDetach)
    {
        using var tmp = new TempCheckpoint(preset);
        var model = new Transformer<double>(tmp.Checkpoint);
        var rng = new Random(n);
        int[] ids = Enumerable.Range(0, n).Select(_ => rng.Next(101)).ToArray();
        var detach = referenceDetach ? DetachPolicy.Reference : DetachPolicy.Ours;
        var stored = model.Forward(ids, trace: true, detach: detach, storeProbabilities: true).Trace!;
        var recomputed = model.Forward(ids, trace: true, detach: detach, storeProbabilities: false, storeCoefficients: true).Trace!;
        var lean = model.Forward(ids, trace: true, detach: detach, storeProbabilities: false, storeCoefficients: false).Trace!;
        Assert.False(stored.RecomputesProbabilities);
        Assert.True(recomputed.RecomputesProbabilities);
        Assert.False(recomputed.RecomputesCoefficients);
        Assert.True(lean.RecomputesCoefficients);
        Assert.All(recomputed.AttnProbs, p => Assert.Null(p));
        Assert.All(lean.AttnQ, p => Assert.Null(p));
        Assert.All(lean.MlpCoefficient, p => Assert.Null(p));
        var a = new FrozenMap<double>(model, stored);
        foreach (var other in new[] { recomputed, lean })
            SameProducts(model, a, new FrozenMap<double>(model, other), n, rng);
    }

    static void SameProducts(Transformer<double> model, FrozenMap<double> a, FrozenMap<double> b, int n, Random rng)
    {
        int d = model.Hidden, L = model.Config.NumLayers;
        int[] first = [0, n / 2, n - 1, 3];
        int B = first.Length;
        var targets = new[]
        {
            JacobianTarget.Output(L), new JacobianTarget(1, OutputKey.Attn), new JacobianTarget(L, OutputKey.Mlp, JacobianMode.Layerwise),
            new JacobianTarget(L, OutputKey.Attn, FinalNorm: false),
        };
        foreach (var t in targets)
        {
            var v = Enumerable.Range(0, n * B * d).Select(_ => rng.NextDouble() - 0.5).ToArray();
            for (int col = 0; col < B; col++)
                for (int p = 0; p < first[col]; p++) v.AsSpan((p * B + col) * d, d).Clear();   // ragged: column col starts at first[col]
            var ya = new double[B * d]; var yb = new double[B * d];
            a.Jvp(t, v, B, ya); b.Jvp(t, v, B, yb);
            Assert.Equal(ya, yb);
            var u = Enumerable.Range(0, B * d).Select(_ => rng.NextDouble() - 0.5).ToArray();
            var ga = new double[n * B * d]; var gb = new double[n * B * d];
            a.Vjp(t, u, B, ga, first); b.Vjp(t, u, B, gb, first);
            Assert.Equal(ga, gb);
        }
        var ja = DetachedJacobian.Compute(a, JacobianTarget.Output(L));
        var jb = DetachedJacobian.Compute(b, JacobianTarget.Output(L));
        Assert.Equal(ja.J, jb.J);
        Assert.True(jb.RelativeError <= 1e-13);
    }

    [Fact]
    public void LongTracesRecomputeByDefaultAndShortOnesStore()
    {
        using var tmp = new TempCheckpoint("tiny-llama");
        var model = new Transformer<double>(tmp.Checkpoint);
        Assert.False(model.Forward([1, 2, 3, 4, 5, 6], trace: true).Trace!.RecomputesProbabilities);
        // the ordinary Jacobian reads P itself: such a trace always stores it
        var c = model.Config;
        long n = (long)Math.Sqrt(FrozenTrace<double>.ProbabilityBudgetBytes / 8.0 / c.NumHeads / c.NumLayers) + 1;
        var big = new FrozenTrace<double>(c, (int)n);
        Assert.True(big.RecomputesProbabilities);
        Assert.False(new FrozenTrace<double>(c, (int)n, nonlinear: true).RecomputesProbabilities);
    }
}
