using System.Diagnostics;
using System.Numerics;
using LinearLens.Linearization;
using LinearLens.Models;

namespace LinearLens.Analysis;

/// <summary>What `analyze` computes, and how much of it.</summary>
public sealed record AnalysisOptions
{
    /// <summary>Singular triplets kept per matrix.</summary>
    public int Components { get; init; } = 8;
    /// <summary>Layers of the sweep (1 … L); null: about eight evenly spaced, the last included.</summary>
    public int[]? Layers { get; init; }
    /// <summary>Vocabulary ids to attribute besides the predicted token.</summary>
    public int[] AttributeTokens { get; init; } = [];
    /// <summary>Also compute the ordinary Jacobian, for the reconstruction comparison.</summary>
    public bool Ordinary { get; init; } = true;
    /// <summary>Components decoded per matrix (top tokens of U₀, U₁, …).</summary>
    public int Decoded { get; init; } = 3;

    public static int[] DefaultLayers(int layers) =>
        layers <= 8 ? Enumerable.Range(1, layers).ToArray()
        : Enumerable.Range(0, 8).Select(k => (int)Math.Round(1 + k * (layers - 1) / 7.0)).Distinct().ToArray();
}

/// <summary>One matrix of the layer sweep: a layer, an output key and a mode, with its spectrum and reconstruction.</summary>
public sealed record LayerSpectrum(int Layer, OutputKey Key, JacobianMode Mode, Spectrum Spectrum, double RelativeError);

/// <summary>The top-3 left singular vectors of one layer projected on the last layer's (the paper's path plot).</summary>
public sealed record PathPoint(int Layer, double[] Projections, ScoredToken[] Top);

/// <summary>Everything `analyze` found for one input text. Immutable; reports and figures are written from it.</summary>
public sealed record AnalysisReport(
    string ModelType, string DType, int[] InputIds, string[] Tokens, int PredictedId, string PredictedToken,
    int Hidden, int NumLayers,
    double[] Output, double[] Reconstruction, double RelativeError, double MaxAbsError,
    double[]? OrdinaryReconstruction, double? OrdinaryRelativeError,
    Spectrum[] PerToken, Spectrum Combined, ColumnRowNorms[] ColumnsAndRows,
    LayerSpectrum[] LayerSweep, PathPoint[] Path,
    TokenAttribution[] Attributions,
    int HeatmapToken, double[] HeatmapMatrix,
    IReadOnlyDictionary<string, double> Seconds);

/// <summary>
/// The paper's analyses done properly (reference-implementation.md §1.6–1.13): per-token and tokens-combined SVD
/// of the detached Jacobian with decoded singular vectors, column/row norms, a layer sweep (cumulative and layerwise,
/// residual / attention / MLP outputs) with stable ranks and the path of the top left singular vectors, the ordinary
/// Jacobian for comparison, and exact per-token logit attribution.
/// </summary>
public static class Analyzer
{
    public static AnalysisReport Run<T>(Transformer<T> model, int[] ids, AnalysisOptions options, Action<string, double>? progress = null)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        var seconds = new Dictionary<string, double>();
        var sw = Stopwatch.StartNew();
        void Lap(string what) { seconds[what] = sw.Elapsed.TotalSeconds; sw.Restart(); }

        var ckpt = model.Checkpoint;
        int L = model.Config.NumLayers, n = ids.Length, d = model.Hidden, K = options.Components;
        if (K < 1) throw new LinearLensException($"--components {K} must be at least 1");
        var layers = options.Layers ?? AnalysisOptions.DefaultLayers(L);
        foreach (int l in layers)
            if (l < 1 || l > L) throw new LinearLensException($"--layers: layer {l} is outside 1…{L}");
        var decoder = new TokenDecoder(ckpt);

        var run = model.Forward(ids, trace: true, nonlinear: options.Ordinary);
        int predicted = Generator.ArgMax<T>(run.Logits);
        var map = new FrozenMap<T>(model, run.Trace!);
        var final = JacobianTarget.Output(L);
        Lap("forward");

        var J = DetachedJacobian.Compute(map, final, f => progress?.Invoke("detached Jacobian", f));
        var y = TokenDecoder.ToDouble<T>(J.Output);
        Lap("jacobian");

        JacobianResult<T>? ordinary = options.Ordinary
            ? new OrdinaryJacobian<T>(model, run.Trace!).Compute(final, f => progress?.Invoke("ordinary Jacobian", f))
            : null;
        Lap("ordinary_jacobian");

        // Per-token and combined spectra of the model output's Jacobian.
        var perToken = new Spectrum[n];
        var colRows = new ColumnRowNorms[n];
        for (int i = 0; i < n; i++)
        {
            var ji = Spectra.TokenMatrix(J, i);
            var t = Svd.Dense(ji, d, d, K);
            perToken[i] = Spectra.Decode($"token {i}", t, Spectra.FrobeniusSquared(ji), y, decoder, options.Decoded, decodeRight: true);
            colRows[i] = Spectra.ColumnsAndRows(ji, d, i, y, decoder);
            progress?.Invoke("per-token SVD", (i + 1.0) / n);
        }
        var combinedMatrix = Spectra.CombinedMatrix(J);
        var combined = Spectra.Decode("combined", Svd.Dense(combinedMatrix, d, n * d, K), Spectra.FrobeniusSquared(combinedMatrix), y, decoder, options.Decoded, decodeRight: false);
        Lap("svd");

        // Layer sweep: every listed layer, key and mode, tokens combined.
        var sweep = new List<LayerSpectrum>();
        var pathVectors = new List<(int layer, double[] u)>();
        int kPath = Math.Min(3, K);
        int done = 0, total = layers.Length * 6;
        foreach (var mode in new[] { JacobianMode.Cumulative, JacobianMode.Layerwise })
            foreach (var key in new[] { OutputKey.Layer, OutputKey.Attn, OutputKey.Mlp })
                foreach (int l in layers)
                {
                    var target = new JacobianTarget(l, key, mode);
                    var r = DetachedJacobian.Compute(map, target);
                    var m = Spectra.CombinedMatrix(r);
                    var triplets = Svd.Dense(m, d, n * d, K);
                    var output = TokenDecoder.ToDouble<T>(r.Output);
                    var spec = Spectra.Decode($"{key} {l} {mode}".ToLowerInvariant(), triplets, Spectra.FrobeniusSquared(m),
                        output, decoder, options.Decoded, decodeRight: false);
                    sweep.Add(new LayerSpectrum(l, key, mode, spec, r.RelativeError));
                    if (mode == JacobianMode.Cumulative && key == OutputKey.Layer)
                    {
                        var u = new double[kPath * d];
                        for (int i = 0; i < kPath; i++) triplets.Left(i).CopyTo(u.AsSpan(i * d, d));
                        TokenDecoder.Orient(u, kPath, d, output);
                        pathVectors.Add((l, u));
                    }
                    progress?.Invoke("layer sweep", ++done / (double)total);
                }
        Lap("layer_sweep");

        // Path: top-3 oriented left singular vectors of the cumulative residual-stream Jacobians, on the last layer's.
        var last = pathVectors[^1].u;
        var path = pathVectors.Select(v => new PathPoint(v.layer,
            Enumerable.Range(0, kPath).Select(i => System.Numerics.Tensors.TensorPrimitives.Dot<double>(v.u.AsSpan(i * d, d), last.AsSpan(i * d, d))).ToArray(),
            sweep.First(s => s.Layer == v.layer && s.Key == OutputKey.Layer && s.Mode == JacobianMode.Cumulative).Spectrum.Components[0].Left.Take(3).ToArray())).ToArray();
        Lap("path");

        // Exact attribution of the predicted token and any named ones.
        var contributions = Attribution.Contributions(map, final);
        var lastLogits = TokenDecoder.ToDouble<T>(run.Logits);
        var attributions = new[] { predicted }.Concat(options.AttributeTokens.Where(t => t != predicted))
            .Select(t => Attribution.ForToken(ckpt, contributions, n, (uint)t < (uint)lastLogits.Length ? t : throw new LinearLensException($"--attribute: token id {t} is outside the vocabulary 0…{lastLogits.Length - 1}"), lastLogits[t], decoder))
            .ToArray();
        Lap("attribution");

        int heatToken = n - 1;
        return new AnalysisReport(
            model.Config.ModelType, Transformer<T>.DTypeName, ids, ids.Select(decoder.Text).ToArray(), predicted, decoder.Text(predicted),
            d, L, y, TokenDecoder.ToDouble<T>(J.Reconstruction), J.RelativeError, J.MaxAbsError,
            ordinary is null ? null : TokenDecoder.ToDouble<T>(ordinary.Reconstruction), ordinary?.RelativeError,
            perToken, combined, colRows, sweep.ToArray(), path, attributions,
            heatToken, Spectra.TokenMatrix(J, heatToken), seconds);
    }
}
