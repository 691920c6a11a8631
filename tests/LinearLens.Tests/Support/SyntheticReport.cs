using LinearLens.Analysis;
using LinearLens.Linearization;

namespace LinearLens.Tests.Support;

/// <summary>
/// An <see cref="AnalysisReport"/> of any length with plausible, seeded values — for testing the layout of figures
/// and pages on 500–2,000-token inputs, which a real analysis makes slowly (its attribution is O(n²·d)). The
/// attribution (with a bias entry, as a model with biases has) sums exactly to its logit, as a real one does.
/// </summary>
public static class SyntheticReport
{
    public static AnalysisReport Make(int n, int d = 16, int k = 8, int layers = 4, int seed = 1)
    {
        var rng = new Random(seed);
        string[] words = ["<s>", " Lily", " went", " to", " the", " park", ".", " She", " saw", " a", " “big”", " dog", "\n", " <b>", " &", "\""];
        var tokens = Enumerable.Range(0, n).Select(i => i == 0 ? "<s>" : words[1 + rng.Next(words.Length - 1)]).ToArray();
        ScoredToken[] Decoded() => Enumerable.Range(0, 3).Select(j => { int w = rng.Next(words.Length); return new ScoredToken(w, words[w], 1.0 / (j + 1)); }).ToArray();
        Spectrum Spec(string name, bool right)
        {
            double s0 = 1 + 10 * rng.NextDouble();
            var sv = Enumerable.Range(0, k).Select(j => s0 * Math.Pow(0.7, j)).ToArray();
            var comps = Enumerable.Range(0, 3).Select(j => new DecodedComponent(j, sv[j], 1, Decoded(), right ? Decoded() : null)).ToArray();
            return new Spectrum(name, sv, comps, sv.Sum(v => v * v) * (1 + rng.NextDouble()), "dense", null);
        }
        var perToken = Enumerable.Range(0, n).Select(i => Spec($"token {i}", true)).ToArray();
        var colRows = Enumerable.Range(0, n).Select(i => new ColumnRowNorms(i, Enumerable.Range(0, d).Select(j => 5.0 / (j + 1)).ToArray(), [0, 1, 2],
            [Decoded(), Decoded(), Decoded()], [0, 1, 2], [Decoded(), Decoded(), Decoded()])).ToArray();
        var sweep = new List<LayerSpectrum>();
        foreach (var mode in new[] { JacobianMode.Cumulative, JacobianMode.Layerwise })
            foreach (var key in new[] { OutputKey.Layer, OutputKey.Attn, OutputKey.Mlp })
                for (int l = 1; l <= layers; l++) sweep.Add(new LayerSpectrum(l, key, mode, Spec($"{key} {l} {mode}", false), 1e-16));
        var path = Enumerable.Range(1, layers).Select(l => new PathPoint(l, [l / (double)layers, 0.3 * rng.NextDouble(), 0.1], Decoded())).ToArray();
        var contributions = Enumerable.Range(0, n).Select(_ => rng.NextDouble() - 0.45).ToArray();
        double bias = 0.25, sum = contributions.Sum() + bias;
        var attribution = new TokenAttribution(6, ".", contributions, bias, sum, sum);
        var y = Enumerable.Range(0, d).Select(_ => rng.NextDouble() - 0.5).ToArray();
        var heat = Enumerable.Range(0, d * d).Select(_ => rng.NextDouble() - 0.5).ToArray();
        return new AnalysisReport("llama", "float64", Enumerable.Range(0, n).ToArray(), tokens, 6, ".", d, layers,
            y, y.Select(v => v * (1 + 1e-16)).ToArray(), 1e-16, 1e-17, y.Select(v => v * 1.3).ToArray(), 0.3,
            perToken, Spec("combined", false), colRows, sweep.ToArray(), path, [attribution], n - 1, heat,
            new Dictionary<string, double> { ["forward"] = 0.1 }) { ModelPath = "/synthetic", Method = "full", MethodReason = "synthetic" };
    }
}
