using LinearLens.Linearization;
using LinearLens.Models;

namespace LinearLens.Tests.Linearization;

/// <summary>The ordinary Jacobian is the true derivative of the real network (central finite differences), and it does not reconstruct y.</summary>
public class OrdinaryJacobianTests
{
    static readonly int[] Ids = [1, 5, 9, 22, 7, 3, 50, 11];

    [Theory]
    [InlineData("tiny-llama")]
    [InlineData("tiny-qwen3")]
    [InlineData("tiny-gemma3")]
    public void EqualsCentralFiniteDifferencesOfTheRealForwardPass(string preset)
    {
        using var tmp = new TempCheckpoint(preset);
        var model = new Transformer<double>(tmp.Checkpoint);
        var run = model.Forward(Ids, nonlinear: true);
        var ord = new OrdinaryJacobian<double>(model, run.Trace!);
        int n = Ids.Length, d = model.Hidden, L = model.Config.NumLayers;
        var targets = new List<JacobianTarget> { JacobianTarget.Output(L), new(1, OutputKey.Attn), new(L, OutputKey.Mlp, FinalNorm: false), new(2, OutputKey.Layer) };
        foreach (var t in targets)
        {
            var J = ord.Compute(t);
            var x = run.Trace!.Embeddings;
            foreach (var (i, j) in new[] { (0, 1), (2, 10), (n - 1, d - 1), (n - 3, 7) })
            {
                const double eps = 1e-5;
                double[] F(double delta)
                {
                    var xp = (double[])x.Clone();
                    xp[i * d + j] += delta;
                    var r = model.ForwardEmbeddings(xp, n, trace: true);
                    return new FrozenMap<double>(model, r.Trace!).Output(t);
                }
                var fp = F(eps); var fm = F(-eps);
                var fd = new double[d]; var col = new double[d];
                for (int k = 0; k < d; k++) { fd[k] = (fp[k] - fm[k]) / (2 * eps); col[k] = J.At(k, i, j); }
                var (rel, _) = DetachedJacobian.Errors<double>(col, fd);
                Assert.True(rel <= 1e-6, $"{preset} {t.Describe()} column ({i},{j}): ordinary J vs finite differences {rel:E2}");
            }
            if (t.Key == OutputKey.Layer && t.FinalNorm)
                Assert.True(J.RelativeError > 1e-3, $"the ordinary Jacobian should not reconstruct y, yet Σ Jᵢxᵢ is within {J.RelativeError:E2}");
        }
    }

    [Fact]
    public void DiffersFromTheDetachedJacobian()
    {
        using var tmp = new TempCheckpoint("tiny-llama");
        var model = new Transformer<double>(tmp.Checkpoint);
        var run = model.Forward(Ids, nonlinear: true);
        var t = JacobianTarget.Output(model.Config.NumLayers);
        var ordinary = new OrdinaryJacobian<double>(model, run.Trace!).Compute(t);
        var detached = DetachedJacobian.Compute(new FrozenMap<double>(model, run.Trace!), t);
        var (rel, _) = DetachedJacobian.Errors<double>(ordinary.J, detached.J);
        Assert.True(rel > 1e-3, $"ordinary and detached Jacobians agree to {rel:E2}");
        Assert.True(detached.RelativeError < 1e-13);
    }

    [Fact]
    public void LayerwiseOfTheFirstLayerIsCumulative()
    {
        using var tmp = new TempCheckpoint("tiny-qwen3");
        var model = new Transformer<double>(tmp.Checkpoint);
        var run = model.Forward(Ids, nonlinear: true);
        var ord = new OrdinaryJacobian<double>(model, run.Trace!);
        var a = ord.Compute(new JacobianTarget(1, OutputKey.Mlp, JacobianMode.Layerwise));
        var b = ord.Compute(new JacobianTarget(1, OutputKey.Mlp, JacobianMode.Cumulative));
        Assert.Equal(a.J, b.J);
    }
}
