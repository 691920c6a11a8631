using System.Numerics;
using LinearLens.Linearization;
using LinearLens.Loading;
using LinearLens.Models;
using LinearLens.Tests.Support;

namespace LinearLens.Tests.Linearization;

/// <summary>The detached Jacobian reconstructs the real output exactly, for the model output and every layer, key and mode.</summary>
public class DetachedJacobianTests
{
    /// <summary>Every layer × key (layer, attn, mlp) × mode × final norm on/off.</summary>
    internal static IEnumerable<JacobianTarget> AllTargets(int layers)
    {
        foreach (var mode in new[] { JacobianMode.Cumulative, JacobianMode.Layerwise })
            for (int l = 1; l <= layers; l++)
                foreach (var key in new[] { OutputKey.Layer, OutputKey.Attn, OutputKey.Mlp })
                    foreach (bool norm in new[] { true, false })
                        yield return new JacobianTarget(l, key, mode, norm);
    }

    static void AssertReconstructs<T>(Checkpoint ckpt, int[] ids, double tolerance, bool allTargets = true)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        var model = new Transformer<T>(ckpt);
        var run = model.Forward(ids, trace: true);
        var map = new FrozenMap<T>(model, run.Trace!);
        var targets = allTargets ? AllTargets(ckpt.Config.NumLayers) : [JacobianTarget.Output(ckpt.Config.NumLayers)];
        foreach (var t in targets)
        {
            var r = DetachedJacobian.Compute(map, t);
            Assert.True(r.RelativeError <= tolerance, $"{t.Describe()}: relative error {r.RelativeError:E2} > {tolerance:E0}");
        }
        // The default target's output is the real final-normed hidden state of the last position.
        var y = map.Output(JacobianTarget.Output(ckpt.Config.NumLayers));
        Assert.Equal(run.Final.AsSpan((ids.Length - 1) * model.Hidden, model.Hidden).ToArray(), y);
    }

    [SharedFact("models", "stories260K", "hf", "model.safetensors")]
    public void Stories260KFloat64EveryTargetWithin1e13()
    {
        using var ckpt = Checkpoint.Open(SharedData.Stories260K);
        AssertReconstructs<double>(ckpt, ckpt.RequireTokenizer().Encode("Lily went to the park. She saw a big"), 1e-13);
    }

    [SharedFact("models", "stories260K", "hf", "model.safetensors")]
    public void Stories260KFloat32EveryTargetWithin1e5()
    {
        using var ckpt = Checkpoint.Open(SharedData.Stories260K);
        AssertReconstructs<float>(ckpt, ckpt.RequireTokenizer().Encode("Lily went to the park. She saw a big"), 1e-5);
    }

    [Theory]
    [InlineData("tiny-llama")]
    [InlineData("tiny-qwen3")]
    [InlineData("tiny-gemma3")]
    public void TinyRandomFloat64EveryTargetWithin1e13(string preset)
    {
        using var tmp = new TempCheckpoint(preset);
        AssertReconstructs<double>(tmp.Checkpoint, [1, 5, 9, 22, 7, 3, 50, 11], 1e-13);
    }

    [Theory]
    [InlineData("tiny-llama")]
    [InlineData("tiny-qwen3")]
    [InlineData("tiny-gemma3")]
    public void TinyRandomFloat32Within1e5(string preset)
    {
        using var tmp = new TempCheckpoint(preset);
        AssertReconstructs<float>(tmp.Checkpoint, [1, 5, 9, 22, 7, 3, 50, 11], 1e-5);
    }

    [Theory]
    [InlineData("tiny-llama")]
    [InlineData("tiny-gemma3")]
    public void AdjointIdentityHolds(string preset)
    {
        using var tmp = new TempCheckpoint(preset);
        var model = new Transformer<double>(tmp.Checkpoint);
        int[] ids = [1, 5, 9, 22, 7, 3, 50, 11];
        var map = new FrozenMap<double>(model, model.Forward(ids, trace: true).Trace!);
        int n = ids.Length, d = model.Hidden, B = 3;
        var rng = new Random(5);
        foreach (var t in AllTargets(model.Config.NumLayers).Where(t => t.FinalNorm))
        {
            var v = Enumerable.Range(0, n * B * d).Select(_ => rng.NextDouble() - 0.5).ToArray();
            var u = Enumerable.Range(0, B * d).Select(_ => rng.NextDouble() - 0.5).ToArray();
            var jv = new double[B * d];
            var jtu = new double[n * B * d];
            map.Jvp(t, v, B, jv);
            map.Vjp(t, u, B, jtu);
            for (int b = 0; b < B; b++)
            {
                double lhs = 0, rhs = 0;
                for (int k = 0; k < d; k++) lhs += jv[b * d + k] * u[b * d + k];
                for (int i = 0; i < n; i++)
                    for (int j = 0; j < d; j++) rhs += v[(i * B + b) * d + j] * jtu[(i * B + b) * d + j];
                Assert.True(Math.Abs(lhs - rhs) <= 1e-12 * Math.Max(1, Math.Abs(lhs)), $"{t.Describe()}: ⟨Jv,u⟩ = {lhs}, ⟨v,Jᵀu⟩ = {rhs}");
            }
        }
    }

    [Theory]
    [InlineData("tiny-qwen3")]
    [InlineData("tiny-gemma3")]
    public void FrozenMapAtTheRealInputReproducesTheForwardPass(string preset)
    {
        using var tmp = new TempCheckpoint(preset);
        var model = new Transformer<double>(tmp.Checkpoint);
        int[] ids = [1, 5, 9, 22, 7, 3, 50, 11];
        var map = new FrozenMap<double>(model, model.Forward(ids, trace: true).Trace!);
        foreach (var t in AllTargets(model.Config.NumLayers))
        {
            var x = map.Input(t);
            var y = new double[model.Hidden];
            map.Jvp(t, x, 1, y);    // B = 1: position-major [n][1][d] is x itself
            var (rel, _) = DetachedJacobian.Errors<double>(y, map.Output(t));
            Assert.True(rel <= 1e-13, $"{t.Describe()}: frozen map at x* differs from the forward pass by {rel:E2}");
        }
    }

    [Theory]
    [InlineData("tiny-llama", 0)]
    [InlineData("tiny-gemma3", 5)]
    [InlineData("tiny-qwen3", 7)]
    public void JvpWithATangentAtOnePositionIsThatTokensJacobianTimesTheTangent(string preset, int token)
    {
        // The JVP skips the positions before the first non-zero tangent (causality); the result must not change.
        using var tmp = new TempCheckpoint(preset);
        var model = new Transformer<double>(tmp.Checkpoint);
        int[] ids = [1, 5, 9, 22, 7, 3, 50, 11];
        var map = new FrozenMap<double>(model, model.Forward(ids, trace: true).Trace!);
        int n = ids.Length, d = model.Hidden, B = 2;
        var rng = new Random(token);
        foreach (var t in new[] { JacobianTarget.Output(model.Config.NumLayers), new JacobianTarget(1, OutputKey.Attn), new JacobianTarget(2, OutputKey.Mlp, JacobianMode.Layerwise) })
        {
            var J = DetachedJacobian.Compute(map, t);
            var tangents = new double[n * B * d];
            var v = Enumerable.Range(0, B * d).Select(_ => rng.NextDouble() - 0.5).ToArray();
            v.CopyTo(tangents, token * B * d);
            var y = new double[B * d];
            map.Jvp(t, tangents, B, y);
            for (int b = 0; b < B; b++)
                for (int k = 0; k < d; k++)
                {
                    double expected = 0;
                    for (int j = 0; j < d; j++) expected += J.At(k, token, j) * v[b * d + j];
                    Assert.True(Math.Abs(expected - y[b * d + k]) <= 1e-12 * Math.Max(1, Math.Abs(expected)), $"{t.Describe()} token {token}: {y[b * d + k]} vs {expected}");
                }
        }
    }

    [Theory]
    [InlineData("tiny-llama")]
    [InlineData("tiny-gemma3")]
    [InlineData("tiny-qwen3")]
    public void RaggedBatchesGiveEachColumnItsOwnTokensJacobian(string preset)
    {
        // Columns that start at different positions (unsorted) share one ragged batch: the JVP of column b, whose
        // tangent sits at token[b], is J_token·v; the VJP wanted from position token[b] on is exactly uᵀJᵢ for i ≥ token[b]
        // and zero before.
        using var tmp = new TempCheckpoint(preset);
        var model = new Transformer<double>(tmp.Checkpoint);
        int[] ids = [1, 5, 9, 22, 7, 3, 50, 11];
        var map = new FrozenMap<double>(model, model.Forward(ids, trace: true).Trace!);
        int n = ids.Length, d = model.Hidden;
        int[] token = [5, 0, 7, 2, 5, 3];
        int B = token.Length;
        var rng = new Random(3);
        foreach (var t in new[] { JacobianTarget.Output(model.Config.NumLayers), new JacobianTarget(2, OutputKey.Attn), new JacobianTarget(2, OutputKey.Mlp, JacobianMode.Layerwise, FinalNorm: false) })
        {
            var J = DetachedJacobian.Compute(map, t);
            var v = Enumerable.Range(0, B * d).Select(_ => rng.NextDouble() - 0.5).ToArray();
            var tangents = new double[n * B * d];
            for (int b = 0; b < B; b++) v.AsSpan(b * d, d).CopyTo(tangents.AsSpan((token[b] * B + b) * d));
            var y = new double[B * d];
            map.Jvp(t, tangents, B, y);
            var u = Enumerable.Range(0, B * d).Select(_ => rng.NextDouble() - 0.5).ToArray();
            var g = Enumerable.Repeat(double.NaN, n * B * d).ToArray();
            map.Vjp(t, u, B, g, token);
            for (int b = 0; b < B; b++)
            {
                for (int k = 0; k < d; k++)
                {
                    double expected = 0;
                    for (int j = 0; j < d; j++) expected += J.At(k, token[b], j) * v[b * d + j];
                    Assert.True(Math.Abs(expected - y[b * d + k]) <= 1e-12 * Math.Max(1, Math.Abs(expected)), $"{t.Describe()} JVP column {b}: {y[b * d + k]} vs {expected}");
                }
                for (int i = 0; i < n; i++)
                    for (int j = 0; j < d; j++)
                    {
                        double expected = 0;
                        if (i >= token[b]) for (int k = 0; k < d; k++) expected += u[b * d + k] * J.At(k, i, j);
                        double got = g[(i * B + b) * d + j];
                        Assert.True(Math.Abs(expected - got) <= 1e-12 * Math.Max(1, Math.Abs(expected)), $"{t.Describe()} VJP column {b} position {i}: {got} vs {expected}");
                    }
            }
        }
    }

    [Theory]
    [InlineData(7, 8, 1024)]     // all d cotangents at once: J and buffers 0.4 GB, the MLP as one matrix per position
    [InlineData(34, 8, 1024)]    // 2.0 GB: still within the budget
    [InlineData(40, 8, 204)]     // 2.3 GB would exceed it: RowsPerPass/n
    [InlineData(64, 8, 128)]
    [InlineData(64, 4, 1024)]    // float32 halves J and the buffers
    public void JacobianBatchTakesAllCotangentsWhenTheirBuffersFit(int n, int elementSize, int expected)
    {
        using var doc = System.Text.Json.JsonDocument.Parse(RandomCheckpoint.ConfigJson(RandomCheckpointSpec.Preset("qwen3-0.6b")));
        var config = ModelConfig.Parse(doc.RootElement);
        var (batch, bytes) = DetachedJacobian.Batch(config, n, elementSize, DetachedJacobian.MemoryBudgetBytes);
        Assert.Equal(expected, batch);
        Assert.True(batch < 1024 || bytes + 1024L * n * 1024 * elementSize <= DetachedJacobian.MemoryBudgetBytes);
    }

    [Theory]
    [InlineData("tiny-llama")]
    [InlineData("tiny-gemma3")]
    [InlineData("tiny-qwen3")]
    public void WideBatchesTakeTheMlpAsOneMatrixPerPositionWithTheSameResult(string preset)
    {
        // With d columns at every position the frozen MLP is applied as M_t = W_down·diag(γ_t)·W_up (formed once per
        // position); with 2 columns, as the two weight products. Both must give the same JVPs and VJPs.
        using var tmp = new TempCheckpoint(preset);
        var model = new Transformer<double>(tmp.Checkpoint);
        int[] ids = [1, 5, 9, 22, 7];
        var map = new FrozenMap<double>(model, model.Forward(ids, trace: true).Trace!);
        int n = ids.Length, d = model.Hidden, wide = d;
        var rng = new Random(11);
        foreach (var t in new[] { JacobianTarget.Output(model.Config.NumLayers), new JacobianTarget(2, OutputKey.Mlp), new JacobianTarget(2, OutputKey.Layer, JacobianMode.Layerwise) })
        {
            var tangents = Enumerable.Range(0, n * wide * d).Select(_ => rng.NextDouble() - 0.5).ToArray();
            var cot = Enumerable.Range(0, wide * d).Select(_ => rng.NextDouble() - 0.5).ToArray();
            var y = new double[wide * d];
            var g = new double[n * wide * d];
            map.Jvp(t, tangents, wide, y);
            map.Vjp(t, cot, wide, g);
            for (int b0 = 0; b0 < wide; b0 += 2)
            {
                var tan2 = new double[n * 2 * d];
                for (int i = 0; i < n; i++)
                    for (int b = 0; b < 2; b++) tangents.AsSpan((i * wide + b0 + b) * d, d).CopyTo(tan2.AsSpan((i * 2 + b) * d));
                var y2 = new double[2 * d];
                map.Jvp(t, tan2, 2, y2);
                var g2 = new double[n * 2 * d];
                map.Vjp(t, cot.AsSpan(b0 * d, 2 * d), 2, g2);
                for (int b = 0; b < 2; b++)
                {
                    for (int k = 0; k < d; k++)
                        Assert.True(Math.Abs(y[(b0 + b) * d + k] - y2[b * d + k]) <= 1e-12 * Math.Max(1, Math.Abs(y2[b * d + k])), $"{t.Describe()} JVP column {b0 + b}");
                    for (int i = 0; i < n; i++)
                        for (int k = 0; k < d; k++)
                        {
                            double wideValue = g[(i * wide + b0 + b) * d + k], narrow = g2[(i * 2 + b) * d + k];
                            Assert.True(Math.Abs(wideValue - narrow) <= 1e-12 * Math.Max(1, Math.Abs(narrow)), $"{t.Describe()} VJP column {b0 + b} position {i}");
                        }
                }
            }
        }
    }
    // J against finite differences of the frozen map, for every family: Models/FamilyTests.cs
}

/// <summary>A random checkpoint of a named preset in a temporary folder, opened; deleted on dispose.</summary>
public sealed class TempCheckpoint : IDisposable
{
    public string Folder { get; } = Directory.CreateTempSubdirectory("ll-ckpt").FullName;
    public Checkpoint Checkpoint { get; }

    public TempCheckpoint(string preset, int seed = 11)
    {
        RandomCheckpoint.Write(Folder, RandomCheckpointSpec.Preset(preset), seed, keepValues: false);
        Checkpoint = Checkpoint.Open(Folder);
    }

    public void Dispose()
    {
        Checkpoint.Dispose();
        Directory.Delete(Folder, true);
    }
}
