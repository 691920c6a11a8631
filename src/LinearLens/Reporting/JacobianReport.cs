using System.Diagnostics;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Text.Json.Nodes;
using LinearLens.Analysis;
using LinearLens.Linearization;
using LinearLens.Models;

namespace LinearLens.Reporting;

/// <summary>What `jacobian` is asked for: the target, the ordinary or detached Jacobian, the method, the singular triplets, the .npy folder.</summary>
public sealed record JacobianRequest(JacobianTarget Target, bool Nonlinear, SvdMethod Method, int? Components, bool PerToken, double Tolerance,
    DetachPolicy Detach, string? OutDir)
{
    /// <summary>Keep the attention probabilities in the trace (true), recompute them inside every product (false), or by size (null).</summary>
    public bool? StoreProbabilities { get; init; }
    public int K => Components ?? 8;
    /// <summary>Whether the full path also reports singular triplets (only when asked for).</summary>
    public bool WantedWithFull => Components is not null || PerToken;
}

/// <summary>The singular triplets a `jacobian` run computed: combined (one entry) or per token (one per token).</summary>
public sealed record JacobianSvd(bool PerToken, int Components, SingularTriplets[] Triplets, double Seconds, double Tolerance)
{
    public string Algorithm => Triplets.Length > 0 ? Triplets[0].Method : "dense";
}

/// <summary>
/// What `jacobian` found: the detached (or ordinary) Jacobian of one output, its reconstruction check, per-token
/// contribution norms (full), optional singular triplets; with an output folder, J and its parts as .npy files.
/// Serialized by <see cref="ToJson"/> (the keys of `jacobian --json`).
/// </summary>
public sealed record JacobianReport(
    string ModelType, string DType, int[] InputIds, string[] Tokens, int PredictedId, string PredictedToken, bool Nonlinear,
    JacobianTarget Target, int Hidden, DetachPolicy Detach, bool Biased, string Method, string MethodReason,
    double RelativeError, double MaxAbsError, double OffsetNorm, double[]? ContributionNorms, double Seconds, string? OutDir, JacobianSvd? Svd)
{
    public bool MatrixFree => Method == "matrix-free";

    /// <summary>Plans the method (announced through `planned` before any work), computes, writes the .npy files when asked.</summary>
    public static JacobianReport Run<T>(Transformer<T> model, int[] ids, JacobianRequest req, Action<string, double>? progress = null, Action<string, string>? planned = null)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        var ckpt = model.Checkpoint;
        var target = req.Target;
        var (method, reason) = MethodPlanner.ForJacobian(ckpt.Config, ids.Length, Unsafe.SizeOf<T>(), target, req.Method, req.K, req.PerToken, req.Nonlinear, writesJ: req.OutDir is not null);
        planned?.Invoke(method == SvdMethod.MatrixFree ? "matrix-free" : "full", reason);
        var run = model.Forward(ids, trace: true, nonlinear: req.Nonlinear, detach: req.Detach, storeProbabilities: req.StoreProbabilities);
        int predicted = Generator.ArgMax<T>(run.Logits);
        var decoder = new TokenDecoder(ckpt);
        var tokens = ids.Select(decoder.Text).ToArray();
        int n = ids.Length, d = model.Hidden;
        JacobianReport Report(string m, double rel, double maxAbs, double offsetNorm, double[]? norms, double seconds, JacobianSvd? svd) =>
            new(ckpt.Config.ModelType, Transformer<T>.DTypeName, ids, tokens, predicted, decoder.Text(predicted), req.Nonlinear, target, d, run.Trace!.Detach,
                ckpt.Config.Biases.Any, m, reason, rel, maxAbs, offsetNorm, norms, seconds, req.OutDir is null ? null : Path.GetFullPath(req.OutDir), svd);

        if (method == SvdMethod.MatrixFree)
        {
            // Top-k triplets by block Lanczos over batched JVP/VJP products; the reconstruction ŷ = Σᵢ Jᵢxᵢ + c by one JVP plus the offset run.
            var map = new FrozenMap<T>(model, run.Trace!);
            var sw = Stopwatch.StartNew();
            var yHat = map.Reconstruct(target);
            double offsetNorm = Norm<T>(map.Offset(target));
            var (rel, maxAbs) = DetachedJacobian.Errors<T>(yHat, map.Output(target));
            double reconSeconds = sw.Elapsed.TotalSeconds;
            sw.Restart();
            SingularTriplets[] res = req.PerToken
                ? JacobianOperators.PerTokenTopK(map, target, Enumerable.Range(0, n).ToArray(), req.K, req.Tolerance, progress: f => progress?.Invoke("per-token Lanczos", f))
                : [JacobianOperators.CombinedTopK(map, target, req.K, req.Tolerance, progress: f => progress?.Invoke("combined Lanczos", f))];
            double svdSeconds = sw.Elapsed.TotalSeconds;
            return Report("matrix-free", rel, maxAbs, offsetNorm, null, reconSeconds + svdSeconds, new JacobianSvd(req.PerToken, req.K, res, svdSeconds, req.Tolerance)) with { ReconstructionSeconds = reconSeconds };
        }

        var r = req.Nonlinear
            ? new OrdinaryJacobian<T>(model, run.Trace!).Compute(target, f => progress?.Invoke("ordinary Jacobian", f))
            : DetachedJacobian.Compute(new FrozenMap<T>(model, run.Trace!), target, f => progress?.Invoke("detached Jacobian", f));
        if (req.OutDir is { } outDir)
        {
            Directory.CreateDirectory(outDir);
            // The files of an earlier run go first: none of them may be taken for part of this one (offset.npy, which
            // the ordinary Jacobian has none of, or every file after the first when a write fails).
            foreach (var name in new[] { "jacobian.npy", "embeddings.npy", "output.npy", "contributions.npy", "offset.npy" })
                File.Delete(Path.Combine(outDir, name));
            Npy.Write<T>(Path.Combine(outDir, "jacobian.npy"), r.J, d, n, d);
            Npy.Write<T>(Path.Combine(outDir, "embeddings.npy"), r.Input, n, d);
            Npy.Write<T>(Path.Combine(outDir, "output.npy"), r.Output, d);
            Npy.Write<T>(Path.Combine(outDir, "contributions.npy"), r.Contributions, n, d);
            if (!req.Nonlinear) Npy.Write<T>(Path.Combine(outDir, "offset.npy"), r.Offset, d);
        }
        JacobianSvd? triplets = null;
        if (req.WantedWithFull)
        {
            var sw = Stopwatch.StartNew();
            SingularTriplets[] res = req.PerToken
                ? Spectra.PerToken(r, req.K, f => progress?.Invoke("per-token SVD", f))
                : [LinearLens.Analysis.Svd.Dense(Spectra.CombinedMatrix(r), d, n * d, req.K)];
            triplets = new JacobianSvd(req.PerToken, req.K, res, sw.Elapsed.TotalSeconds, 0);
        }
        var norms = Enumerable.Range(0, n).Select(i => Norm<T>(r.Contributions.AsSpan(i * d, d))).ToArray();
        return Report("full", r.RelativeError, r.MaxAbsError, Norm<T>(r.Offset), norms, r.Seconds, triplets);
    }

    /// <summary>Matrix-free: the seconds of the reconstruction's JVP alone (printed by the CLI).</summary>
    public double ReconstructionSeconds { get; init; }

    public JsonObject ToJson()
    {
        var header = new JsonObject
        {
            ["model_type"] = ModelType,
            ["dtype"] = DType,
            ["input_ids"] = CommandJson.Array(InputIds),
            ["tokens"] = CommandJson.Array(Tokens),
            ["predicted_id"] = PredictedId,
            ["predicted_token"] = PredictedToken,
            ["jacobian"] = Nonlinear ? "ordinary" : "detached",
            ["target"] = TargetJson(Target),
            ["detach"] = Detach.ToString().ToLowerInvariant(),
            ["shape"] = CommandJson.Array([Hidden, InputIds.Length, Hidden]),
        };
        if (MatrixFree)
        {
            header["method"] = "matrix-free";
            header["method_reason"] = MethodReason;
            header["reconstruction"] = new JsonObject { ["relative_error"] = RelativeError, ["max_abs_error"] = MaxAbsError, ["offset_norm"] = OffsetNorm, ["via"] = "jvp" };
            header["svd"] = SvdJson(Svd!);
            header["seconds"] = Seconds;
            return header;
        }
        header["reconstruction"] = new JsonObject { ["relative_error"] = RelativeError, ["max_abs_error"] = MaxAbsError, ["offset_norm"] = OffsetNorm };
        header["contribution_norms"] = CommandJson.Array(ContributionNorms ?? []);
        header["seconds"] = Seconds;
        header["out"] = OutDir;
        header["method"] = "full";
        header["method_reason"] = MethodReason;
        if (Svd is not null) header["svd"] = SvdJson(Svd);
        return header;
    }

    public static JsonObject TargetJson(JacobianTarget t) => new()
    {
        ["layer"] = t.Layer,
        ["key"] = t.Key.ToString().ToLowerInvariant(),
        ["mode"] = t.Mode.ToString().ToLowerInvariant(),
        ["final_norm"] = t.FinalNorm,
    };

    static JsonObject SvdJson(JacobianSvd s)
    {
        JsonObject Entry(SingularTriplets t)
        {
            var e = new JsonObject { ["singular_values"] = CommandJson.Array(t.Values) };
            if (t.Residuals is not null)
            {
                e["residuals"] = CommandJson.Array(t.Residuals);
                e["max_relative_residual"] = t.Count == 0 || t.Values[0] == 0 ? 0 : t.Residuals.Max() / t.Values[0];
            }
            if (t.Method != "dense") { e["products"] = t.Products; e["transposed_products"] = t.TransposedProducts; e["subspace"] = t.Subspace; e["converged"] = t.Converged; }
            return e;
        }
        var o = new JsonObject
        {
            ["scope"] = s.PerToken ? "per_token" : "combined",
            ["components"] = s.Components,
            ["algorithm"] = s.Algorithm,
            ["seconds"] = s.Seconds,
        };
        if (s.Algorithm != "dense") o["tolerance"] = s.Tolerance;
        if (s.PerToken) o["per_token"] = new JsonArray(s.Triplets.Select((t, i) => { var e = Entry(t); e["token"] = i; return (JsonNode)e; }).ToArray());
        else o["combined"] = Entry(s.Triplets[0]);
        return o;
    }

    static double Norm<T>(ReadOnlySpan<T> v) where T : IFloatingPointIeee754<T>
    {
        double s = 0;
        foreach (var x in v) s += double.CreateChecked(x) * double.CreateChecked(x);
        return Math.Sqrt(s);
    }
}
