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
    /// <summary>
    /// Full: form every Jacobian (exact SVDs, column/row norms, ordinary Jacobian). MatrixFree: never form J — Lanczos
    /// over batched JVP/VJP products, ‖J‖_F² by a Hutchinson estimate, no column/row norms and no ordinary Jacobian.
    /// Auto: by the estimated cost of forming all the Jacobians.
    /// </summary>
    public SvdMethod Method { get; init; } = SvdMethod.Auto;
    /// <summary>Residual tolerance ‖Jv − σu‖ ≤ tol·σ₁ of the matrix-free triplets.</summary>
    public double Tolerance { get; init; } = 1e-8;
    /// <summary>
    /// Matrix-free only: whether the output's J is formed anyway for the per-token/combined spectra (exact, with
    /// column/row norms); null: when it fits in 1 GB and costs fewer products than the per-token Lanczos runs.
    /// </summary>
    public bool? FormOutputJacobian { get; init; }
    /// <summary>What the detached map freezes and where attn/mlp are tapped (LinearLens's choice, or the paper code's).</summary>
    public Models.DetachPolicy Detach { get; init; } = Models.DetachPolicy.Ours;
    /// <summary>Rademacher probes of the Hutchinson estimate of ‖J‖_F² (matrix-free).</summary>
    public int FrobeniusProbes { get; init; } = 64;

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
    IReadOnlyDictionary<string, double> Seconds)
{
    /// <summary>How the spectra were obtained ("full" or "matrix-free") and why.</summary>
    public string Method { get; init; } = "full";
    public string MethodReason { get; init; } = "";
    /// <summary>The model folder the analysis read (full path).</summary>
    public string ModelPath { get; init; } = "";
    /// <summary>Where the folder came from when --model named a Hub id: the id, the revision asked for and the commit it resolved to.</summary>
    public string? HubId { get; init; }
    public string? HubRevision { get; init; }
    public string? HubCommit { get; init; }
    /// <summary>The options the analysis ran with, its layers resolved.</summary>
    public AnalysisOptions Options { get; init; } = new();
    /// <summary>The input text when it was given as text (null for token ids).</summary>
    public string? InputText { get; init; }
    /// <summary>The detach policy the frozen map was built with.</summary>
    public Models.DetachPolicy Detach { get; init; } = Models.DetachPolicy.Ours;
    /// <summary>‖c‖ of the frozen map's constant term (0 without biases): ŷ = Σᵢ Jᵢxᵢ + c.</summary>
    public double OffsetNorm { get; init; }
}

/// <summary>
/// The paper's analyses done properly (reference-implementation.md §1.6–1.13): per-token and tokens-combined SVD
/// of the detached Jacobian with decoded singular vectors, column/row norms, a layer sweep (cumulative and layerwise,
/// residual / attention / MLP outputs) with stable ranks and the path of the top left singular vectors, the ordinary
/// Jacobian for comparison, and exact per-token logit attribution.
/// </summary>
public static class Analyzer
{
    /// <summary>What an analysis of this many tokens holds at once, for <see cref="ResourceEstimate"/>: the frozen (and ordinary) trace, J, its combined copy and the ordinary J.</summary>
    public static RunShape Shape(Loading.ModelConfig c, int tokens, AnalysisOptions options, int elementSize)
    {
        var (method, _) = MethodPlanner.ForAnalysis(c, tokens, (options.Layers ?? AnalysisOptions.DefaultLayers(c.NumLayers)).Length, options.Method);
        return new RunShape
        {
            Tokens = tokens, ElementSize = elementSize, Trace = true, NonlinearTrace = options.Ordinary,
            FullJacobians = method == SvdMethod.MatrixFree ? 0 : options.Ordinary ? 3 : 2,   // J, its combined copy, the ordinary J
        };
    }

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
        var (method, reason) = MethodPlanner.ForAnalysis(model.Config, n, layers.Length, options.Method);
        if (method == SvdMethod.MatrixFree) return RunMatrixFree(model, ids, options, layers, reason, progress);

        var run = model.Forward(ids, trace: true, nonlinear: options.Ordinary, detach: options.Detach);
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
        var (perToken, colRows, combined, outputEntry) = OutputSpectra(J, K, options, y, decoder, progress);
        Lap("svd");

        // Layer sweep: every listed layer, key and mode, tokens combined; then the path of the top left vectors.
        // The model output's entry (last layer, residual stream, cumulative) is the combined spectrum already taken.
        var (sweep, path) = Sweep(map, layers, options, decoder, progress, target =>
        {
            if (target == final) return outputEntry;
            var r = DetachedJacobian.Compute(map, target);
            var m = Spectra.CombinedMatrix(r);
            return new SweepEntry(Svd.Dense(m, d, n * d, K), Spectra.FrobeniusSquared(m), false, r.RelativeError);
        });
        Lap("layer_sweep");

        // Exact attribution of the predicted token and any named ones.
        var attributions = Attribute(ckpt, Attribution.Contributions(map, final), TokenDecoder.ToDouble<T>(J.Offset), n, predicted, options.AttributeTokens, run.Logits, decoder);
        Lap("attribution");

        int heatToken = n - 1;
        return new AnalysisReport(
            model.Config.ModelType, Transformer<T>.DTypeName, ids, ids.Select(decoder.Text).ToArray(), predicted, decoder.Text(predicted),
            d, L, y, TokenDecoder.ToDouble<T>(J.Reconstruction), J.RelativeError, J.MaxAbsError,
            ordinary is null ? null : TokenDecoder.ToDouble<T>(ordinary.Reconstruction), ordinary?.RelativeError,
            perToken, combined, colRows, sweep, path, attributions,
            heatToken, Spectra.TokenMatrix(J, heatToken), seconds) { Method = "full", MethodReason = reason, Detach = options.Detach, OffsetNorm = Norm(J.Offset), ModelPath = System.IO.Path.GetFullPath(ckpt.Folder), Options = options with { Layers = layers } };
    }

    /// <summary>
    /// The same analyses without forming any Jacobian: Lanczos over batched products for every spectrum, Hutchinson
    /// estimates of ‖J‖_F², contributions and attribution from one JVP, the heat map's Jᵢ from JVPs at its position only.
    /// </summary>
    static AnalysisReport RunMatrixFree<T>(Transformer<T> model, int[] ids, AnalysisOptions options, int[] layers, string reason, Action<string, double>? progress)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        var seconds = new Dictionary<string, double>();
        var sw = Stopwatch.StartNew();
        void Lap(string what) { seconds[what] = sw.Elapsed.TotalSeconds; sw.Restart(); }
        var ckpt = model.Checkpoint;
        int L = model.Config.NumLayers, n = ids.Length, d = model.Hidden, K = Math.Min(options.Components, d);
        var decoder = new TokenDecoder(ckpt);

        var run = model.Forward(ids, trace: true, detach: options.Detach);
        int predicted = Generator.ArgMax<T>(run.Logits);
        var map = new FrozenMap<T>(model, run.Trace!);
        var final = JacobianTarget.Output(L);
        Lap("forward");

        // Contributions cᵢ = Jᵢxᵢ in one JVP: reconstruction and attribution.
        var contributions = Attribution.Contributions(map, final);
        var y = TokenDecoder.ToDouble<T>(map.Output(final));
        var offset = TokenDecoder.ToDouble<T>(map.Offset(final));
        var yHat = (double[])offset.Clone();
        for (int i = 0; i < n; i++) for (int k = 0; k < d; k++) yHat[k] += contributions[i * d + k];
        var (rel, maxAbs) = DetachedJacobian.Errors<double>(yHat, y);
        var attributions = Attribute(ckpt, contributions, offset, n, predicted, options.AttributeTokens, run.Logits, decoder);
        Lap("attribution");

        // Per-token and combined spectra of the output. With many tokens, all tokens' Lanczos runs together cost more
        // products than forming the output's J (d transpose products); when that J also fits in memory it is formed,
        // and these spectra, ‖Jᵢ‖_F, the column/row norms and the heat map are exact. The layer sweep stays matrix-free.
        Spectrum[] perToken;
        Spectrum combined;
        SweepEntry outputEntry;
        ColumnRowNorms[] colRows = [];
        int heatToken = n - 1;
        double[] heat;
        if (options.FormOutputJacobian ?? MethodPlanner.FormOutputJacobian(d, n, K))
        {
            var J = DetachedJacobian.Compute(map, final, f => progress?.Invoke("detached Jacobian", f));
            (perToken, colRows, combined, outputEntry) = OutputSpectra(J, K, options, y, decoder, progress);
            heat = Spectra.TokenMatrix(J, heatToken);
            reason += options.FormOutputJacobian is null
                ? $"; the output's J ({8.0 * d * n * d / 1e6:F0} MB) is formed: its {d} products are fewer than the per-token Lanczos runs"
                : "; the output's J is formed (requested)";
        }
        else
        {
            var frob = FrobeniusEstimate(map, final, options.FrobeniusProbes);
            var perTokenTriplets = JacobianOperators.PerTokenTopK(map, final, Enumerable.Range(0, n).ToArray(), K, options.Tolerance,
                progress: f => progress?.Invoke("per-token SVD", f));
            perToken = perTokenTriplets.Select((t, i) => Spectra.Decode($"token {i}", t, frob.perToken[i], y, decoder, options.Decoded, decodeRight: true)
                with { FrobeniusEstimated = true }).ToArray();
            var triplets = JacobianOperators.CombinedTopK(map, final, K, options.Tolerance);
            combined = Spectra.Decode("combined", triplets, frob.combined, y, decoder, options.Decoded, decodeRight: false) with { FrobeniusEstimated = true };
            outputEntry = new SweepEntry(triplets, frob.combined, true, rel);
            heat = HeatMap(map, final, heatToken);
        }
        Lap("svd");

        var (sweep, path) = Sweep(map, layers, options, decoder, progress, target =>
        {
            if (target == final) return outputEntry;   // the combined spectrum above
            var jx = map.Reconstruct(target);   // Σᵢ Jᵢxᵢ + c: the frozen map at the real input
            return new SweepEntry(JacobianOperators.CombinedTopK(map, target, K, options.Tolerance),
                FrobeniusEstimate(map, target, options.FrobeniusProbes).combined, true,
                DetachedJacobian.Errors<T>(jx, map.Output(target)).relative);
        });
        Lap("layer_sweep");

        return new AnalysisReport(
            model.Config.ModelType, Transformer<T>.DTypeName, ids, ids.Select(decoder.Text).ToArray(), predicted, decoder.Text(predicted),
            d, L, y, yHat, rel, maxAbs, null, null,
            perToken, combined, colRows, sweep, path, attributions, heatToken, heat, seconds)
        { Method = "matrix-free", MethodReason = reason, Detach = options.Detach, OffsetNorm = Norm(offset), ModelPath = System.IO.Path.GetFullPath(ckpt.Folder), Options = options with { Layers = layers } };
    }

    /// <summary>Exact per-token spectra with column/row norms, and the combined spectrum, of a formed J.</summary>
    static (Spectrum[] perToken, ColumnRowNorms[] colRows, Spectrum combined, SweepEntry combinedRaw) OutputSpectra<T>(JacobianResult<T> J, int K, AnalysisOptions options,
        double[] y, TokenDecoder decoder, Action<string, double>? progress) where T : unmanaged, IFloatingPointIeee754<T>
    {
        int n = J.Tokens, d = J.Hidden;
        var perToken = new Spectrum[n];
        var colRows = new ColumnRowNorms[n];
        var tokenSvd = Spectra.PerToken(J, K, f => progress?.Invoke("per-token SVD", f));
        for (int i = 0; i < n; i++)
        {
            var ji = Spectra.TokenMatrix(J, i);
            perToken[i] = Spectra.Decode($"token {i}", tokenSvd[i], Spectra.FrobeniusSquared(ji), y, decoder, options.Decoded, decodeRight: true);
            colRows[i] = Spectra.ColumnsAndRows(ji, d, i, y, decoder);
        }
        var combinedMatrix = Spectra.CombinedMatrix(J);
        var triplets = Svd.Dense(combinedMatrix, d, n * d, K);
        double frobenius = Spectra.FrobeniusSquared(combinedMatrix);
        var combined = Spectra.Decode("combined", triplets, frobenius, y, decoder, options.Decoded, decodeRight: false);
        return (perToken, colRows, combined, new SweepEntry(triplets, frobenius, false, J.RelativeError));
    }

    /// <summary>The heat map's Jᵢ without forming J: d JVPs with the tangent at position i only (cheap by causality for the last token).</summary>
    static double[] HeatMap<T>(FrozenMap<T> map, JacobianTarget target, int token) where T : unmanaged, IFloatingPointIeee754<T>
    {
        int n = map.Tokens, d = map.Hidden;
        var heat = new double[d * d];
        int batch = Math.Clamp(DetachedJacobian.RowsPerPass / n, 1, d);
        for (int j0 = 0; j0 < d; j0 += batch)
        {
            int B = Math.Min(batch, d - j0);
            var tangents = Numerics.Pinned.Array<T>((long)n * B * d);
            for (int b = 0; b < B; b++) tangents[((long)token * B + b) * d + j0 + b] = T.One;
            var cols = new T[B * d];
            map.Jvp(target, tangents, B, cols);
            for (int b = 0; b < B; b++)
                for (int k = 0; k < d; k++) heat[k * d + j0 + b] = double.CreateChecked(cols[b * d + k]);
        }
        return heat;
    }

    /// <summary>
    /// The layer sweep — every listed layer × key (layer, attn, mlp) × mode (cumulative, layerwise), tokens combined —
    /// with `spectrumOf` giving each target's triplets, ‖J‖_F² (and whether it is estimated) and reconstruction error;
    /// then the path: the top-3 oriented left singular vectors of the cumulative residual-stream Jacobians projected
    /// on the last listed layer's.
    /// </summary>
    static (LayerSpectrum[] sweep, PathPoint[] path) Sweep<T>(FrozenMap<T> map, int[] layers, AnalysisOptions options, TokenDecoder decoder,
        Action<string, double>? progress, Func<JacobianTarget, SweepEntry> spectrumOf)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int d = map.Hidden, kPath = Math.Min(3, options.Components), done = 0, total = layers.Length * 6;
        var sweep = new List<LayerSpectrum>();
        var pathVectors = new List<(int layer, double[] u, ScoredToken[] top)>();
        foreach (var mode in new[] { JacobianMode.Cumulative, JacobianMode.Layerwise })
            foreach (var key in new[] { OutputKey.Layer, OutputKey.Attn, OutputKey.Mlp })
                foreach (int l in layers)
                {
                    var target = new JacobianTarget(l, key, mode);
                    var (triplets, frobenius, estimated, error) = spectrumOf(target);
                    var output = TokenDecoder.ToDouble<T>(map.Output(target));
                    var spec = Spectra.Decode($"{key} {l} {mode}".ToLowerInvariant(), triplets, frobenius, output, decoder, options.Decoded,
                        decodeRight: false) with { FrobeniusEstimated = estimated };
                    sweep.Add(new LayerSpectrum(l, key, mode, spec, error));
                    if (mode == JacobianMode.Cumulative && key == OutputKey.Layer)
                    {
                        var u = new double[kPath * d];
                        for (int i = 0; i < kPath; i++) triplets.Left(i).CopyTo(u.AsSpan(i * d, d));
                        TokenDecoder.Orient(u, kPath, d, output);
                        pathVectors.Add((l, u, spec.Components[0].Left.Take(3).ToArray()));
                    }
                    progress?.Invoke("layer sweep", ++done / (double)total);
                }
        var last = pathVectors[^1].u;
        var path = pathVectors.Select(v => new PathPoint(v.layer,
            Enumerable.Range(0, kPath).Select(i => System.Numerics.Tensors.TensorPrimitives.Dot<double>(v.u.AsSpan(i * d, d), last.AsSpan(i * d, d))).ToArray(),
            v.top)).ToArray();
        return (sweep.ToArray(), path);
    }

    static double Norm<TV>(TV[] v) where TV : IFloatingPointIeee754<TV>
    {
        double s = 0;
        foreach (var x in v) s += double.CreateChecked(x) * double.CreateChecked(x);
        return Math.Sqrt(s);
    }

    /// <summary>One target's combined triplets, ‖J‖_F² (and whether it is estimated) and reconstruction error.</summary>
    readonly record struct SweepEntry(SingularTriplets Triplets, double Frobenius, bool Estimated, double Error);

    /// <summary>Exact attributions of the predicted token and the named ones, each checked against its real logit.</summary>
    static TokenAttribution[] Attribute<T>(Loading.Checkpoint ckpt, double[] contributions, double[] offset, int n, int predicted, int[] named, T[] lastLogits, TokenDecoder decoder)
        where T : unmanaged, IFloatingPointIeee754<T> =>
        new[] { predicted }.Concat(named.Where(t => t != predicted))
            .Select(t => (uint)t < (uint)lastLogits.Length
                ? Attribution.ForToken(ckpt, contributions, offset, n, t, double.CreateChecked(lastLogits[t]), decoder)
                : throw new LinearLensException($"--attribute: token id {t} is outside the vocabulary 0…{lastLogits.Length - 1}"))
            .ToArray();

    /// <summary>
    /// Hutchinson estimates of ‖J‖_F² = E‖Jᵀz‖² over Rademacher z on the output side: one batched VJP of `probes`
    /// cotangents yields the estimate for every Jᵢ and for the combined matrix at once. Fixed seed.
    /// </summary>
    static (double combined, double[] perToken) FrobeniusEstimate<T>(FrozenMap<T> map, JacobianTarget target, int probes)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int n = map.Tokens, d = map.Hidden;
        var rng = new Random(12345);
        var z = new T[probes * d];
        for (int i = 0; i < z.Length; i++) z[i] = rng.Next(2) == 0 ? T.One : -T.One;
        var g = Numerics.Pinned.Array<T>((long)n * probes * d);
        map.Vjp(target, z, probes, g);
        var per = new double[n];
        for (int i = 0; i < n; i++)
            per[i] = System.Numerics.Tensors.TensorPrimitives.SumOfSquares<T>(g.AsSpan(i * probes * d, probes * d)) is var s ? double.CreateChecked(s) / probes : 0;
        return (per.Sum(), per);
    }
}
