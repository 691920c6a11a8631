using System.CommandLine;
using System.Numerics;
using System.Text.Json.Nodes;
using LinearLens.Analysis;
using LinearLens.Linearization;
using LinearLens.Loading;
using LinearLens.Models;
using LinearLens.Reporting;

namespace LinearLens.Cli.Commands;

/// <summary>`linearlens jacobian`: the detached Jacobian of one output, its reconstruction check, optional .npy files.</summary>
static class JacobianCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr, Func<HubOptions> hub)
    {
        var input = new ModelInput(hub, stderr);
        var target = new TargetOptions();
        var outDir = new Option<string>("--out") { Description = "Write jacobian.npy, embeddings.npy, output.npy, contributions.npy and (detached) offset.npy here" };
        var json = new Option<bool>("--json") { Description = "Print one JSON object on stdout" };
        var nonlinear = new Option<bool>("--nonlinear") { Description = "The ordinary (non-frozen) Jacobian instead, by exact derivatives through every nonlinearity; Σ Jᵢxᵢ does not reconstruct y there" };
        var method = new Option<string>("--method") { Description = "full (form J by reverse mode), matrix-free (top-k singular triplets by Lanczos over JVP/VJP products, J never formed) or auto (by estimated memory and time)", DefaultValueFactory = _ => "auto" };
        var components = new Option<int?>("--components") { Description = "Singular triplets to compute (default 8; with --method full only when given)" };
        var perToken = new Option<bool>("--per-token") { Description = "Top-k of every Jᵢ (d×d) instead of the combined [J₀|…|J_{n−1}]" };
        var detach = ModelInput.DetachOption();
        var probabilities = new Option<string>("--probabilities") { Description = "stored (keep the n² attention probabilities per head in the trace), recomputed (keep q, k and row statistics, rebuild P blockwise in every product: long inputs) or auto (recomputed beyond 512 MB)", DefaultValueFactory = _ => "auto" };
        var tolerance = new Option<double>("--tolerance") { Description = "Matrix-free: stop when every residual ‖J v − σ u‖ ≤ tolerance·σ₁", DefaultValueFactory = _ => 1e-8 };
        var cmd = new Command("jacobian", "The detached Jacobian J [d, n, d] of the last position's output and its exact reconstruction y = Σ Jᵢxᵢ");
        input.AddTo(cmd);
        target.AddTo(cmd);
        cmd.Options.Add(outDir); cmd.Options.Add(json); cmd.Options.Add(nonlinear);
        cmd.Options.Add(method); cmd.Options.Add(components); cmd.Options.Add(perToken); cmd.Options.Add(tolerance); cmd.Options.Add(detach); cmd.Options.Add(probabilities);
        cmd.SetAction(p =>
        {
            var m = p.GetValue(method) switch
            {
                "full" => SvdMethod.Full, "matrix-free" => SvdMethod.MatrixFree, "auto" => SvdMethod.Auto,
                var s => throw new LinearLensException($"--method '{s}' is not a method; use full, matrix-free or auto"),
            };
            int? k = p.GetValue(components);
            if (k is < 1) throw new LinearLensException($"--components {k} must be at least 1");
            bool nl = p.GetValue(nonlinear);
            string? dir = p.GetValue(outDir);
            if (m == SvdMethod.MatrixFree && nl) throw new LinearLensException("--method matrix-free needs the frozen (detached) map; --nonlinear works only with --method full");
            if (m == SvdMethod.MatrixFree && dir is not null) throw new LinearLensException("--out writes the full J, which --method matrix-free never forms; use --method full");
            double tol = p.GetValue(tolerance);
            if (!(tol > 0 && tol < 1)) throw new LinearLensException($"--tolerance {tol} must lie between 0 and 1 (e.g. 1e-8)");
            // options that would be silently ignored: say so rather than let a user think they changed the result
            // --out makes auto choose full (the files are the formed J), as --nonlinear does
            if (p.GetResult(tolerance) is { Implicit: false } && (m == SvdMethod.Full || nl || dir is not null))
                throw new LinearLensException($"--tolerance is the stopping rule of matrix-free Lanczos; {(nl ? "--nonlinear" : m == SvdMethod.Full ? "--method full" : "--out")} forms J and its SVD is exact: drop --tolerance, or use --method matrix-free{(dir is not null && !nl && m != SvdMethod.Full ? " without --out" : "")}");
            if (nl && p.GetResult(detach) is { Implicit: false })
                throw new LinearLensException("--detach chooses what the frozen (detached) map freezes, and --nonlinear freezes nothing: drop one of them");
            bool recomputed = p.GetValue(probabilities) == "recomputed";
            if (nl && recomputed)
                throw new LinearLensException("--probabilities recomputed drops the attention probabilities from the trace, but --nonlinear differentiates through them and always stores them: drop one of them");
            Checks.OutputFolder(dir);
            using var ckpt = input.Open(p);
            Checks.Components(k, ckpt.Config);
            var ids = input.Ids(p, ckpt);
            if (recomputed && ids.Length <= FrozenTrace<double>.AlwaysStoredTokens)
                throw new LinearLensException($"--probabilities recomputed: with {ids.Length} tokens (at most {FrozenTrace<double>.AlwaysStoredTokens}) the attention probabilities are always stored; drop --probabilities, or give more than {FrozenTrace<double>.AlwaysStoredTokens} tokens");
            var t = target.Parse(p, ckpt.Config.NumLayers);
            var req = new JacobianRequest(t, nl, m, k, p.GetValue(perToken), tol, ModelInput.ParseDetach(p.GetValue(detach)), dir)
            {
                StoreProbabilities = p.GetValue(probabilities) switch
                {
                    "stored" => true, "recomputed" => false, "auto" => null,
                    var s => throw new LinearLensException($"--probabilities '{s}' is not a choice; use stored, recomputed or auto"),
                },
            };
            return input.IsFloat64(p)
                ? Run<double>(ckpt, ids, req, p.GetValue(json), stdout, stderr)
                : Run<float>(ckpt, ids, req, p.GetValue(json), stdout, stderr);
        });
        return cmd;
    }

    static int Run<T>(Checkpoint ckpt, int[] ids, JacobianRequest req, bool json, TextWriter stdout, TextWriter stderr)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        var (method, _) = MethodPlanner.ForJacobian(ckpt.Config, ids.Length, System.Runtime.CompilerServices.Unsafe.SizeOf<T>(), req.Target, req.Method, req.K, req.PerToken, req.Nonlinear, writesJ: req.OutDir is not null);
        Checks.Memory(ckpt.Config, new RunShape
        {
            Tokens = ids.Length, ElementSize = System.Runtime.CompilerServices.Unsafe.SizeOf<T>(), Trace = true, NonlinearTrace = req.Nonlinear,
            // J, and for the SVD its combined copy in double
            FullJacobians = method == SvdMethod.MatrixFree ? 0 : req.WantedWithFull ? 2 : 1,
            ExtraBytes = method == SvdMethod.MatrixFree ? JacobianOperators.LanczosBytes(ckpt.Config.HiddenSize, ids.Length, req.K, req.PerToken) : 0,
        }, stderr);
        var model = new Transformer<T>(ckpt);
        var r = Progress.RunStages(stderr, "jacobian", progress => JacobianReport.Run(model, ids, req, progress,
            planned: (method, reason) => stderr.WriteLine($"method: {method} ({reason})")));
        if (json) { stdout.WriteLine(Json.Write(r.ToJson())); return 0; }
        int n = ids.Length, d = r.Hidden;
        stdout.WriteLine($"{r.ModelType}, {r.DType}, {n} tokens; target: {r.Target.Describe()}");
        stdout.WriteLine($"predicted next token: {Quote(r.PredictedToken)} ({r.PredictedId})");
        if (r.MatrixFree)
            stdout.WriteLine($"detached J [{d}, {n}, {d}] not formed (matrix-free); ‖J·x − y‖/‖y‖ = {r.RelativeError:E2} (max abs error {r.MaxAbsError:E2}) by one JVP; {r.ReconstructionSeconds:F2} s");
        else
        {
            string affine = !r.Nonlinear && r.Biased ? " + c" : "";
            stdout.WriteLine($"{(r.Nonlinear ? "ordinary" : "detached")} J shape [{d}, {n}, {d}]; ‖Σ Jᵢxᵢ{affine} − y‖/‖y‖ = {r.RelativeError:E2} (max abs error {r.MaxAbsError:E2}){(affine.Length > 0 ? $"; affine: ‖c‖ = {r.OffsetNorm:G4}" : "")}; {r.Seconds:F2} s");
            for (int i = 0; i < n; i++)
                stdout.WriteLine($"  token {i,3} {Quote(r.Tokens[i]),-16} ‖Jᵢxᵢ‖ = {r.ContributionNorms![i]:G4}");
        }
        if (r.Svd is { } svd) foreach (var line in SvdLines(svd, r.Tokens)) stdout.WriteLine(line);
        if (r.OutDir is not null) stdout.WriteLine($"wrote jacobian.npy, embeddings.npy, output.npy, contributions.npy{(r.Nonlinear ? "" : ", offset.npy")} to {r.OutDir}");
        return 0;
    }

    /// <summary>Text lines for computed triplets (combined: one line; per token: one per token).</summary>
    static List<string> SvdLines(JacobianSvd s, string[] tokens)
    {
        var lines = new List<string>();
        string Fmt(SingularTriplets t) => string.Join(" ", t.Values.Select(v => v.ToString("G6", System.Globalization.CultureInfo.InvariantCulture)));
        string Res(SingularTriplets t) => t.Residuals is null || t.Count == 0 ? "" : $"; max ‖Av − σu‖/σ₁ = {t.Residuals.Max() / Math.Max(t.Values[0], double.Epsilon):E1}";
        string Cost(SingularTriplets t) => t.Method == "dense" ? "" : $" ({t.Products} + {t.TransposedProducts} products, Krylov {t.Subspace}{(t.Converged ? "" : ", NOT converged to the tolerance")})";
        if (s.PerToken)
        {
            lines.Add($"top-{s.Components} singular values of each Jᵢ ({s.Algorithm}, {s.Seconds:F2} s):");
            for (int i = 0; i < s.Triplets.Length; i++)
                lines.Add($"  token {i,3} {Quote(tokens[i]),-16} σ = {Fmt(s.Triplets[i])}{Res(s.Triplets[i])}{Cost(s.Triplets[i])}");
        }
        else
        {
            lines.Add($"top-{s.Components} singular values of [J₀|…|J_{{n−1}}] ({s.Algorithm}, {s.Seconds:F2} s{Cost(s.Triplets[0])}):");
            lines.Add($"  σ = {Fmt(s.Triplets[0])}{Res(s.Triplets[0])}");
        }
        return lines;
    }

    public static string Quote(string s) => JsonText.Quote(s);
}

/// <summary>--layer, --key, --mode, --no-final-norm: which output a Jacobian is taken of.</summary>
sealed class TargetOptions
{
    public readonly Option<int?> Layer = new("--layer") { Description = "After how many layers (1 … num_layers; default num_layers = the model output)" };
    public readonly Option<string> Key = new("--key") { Description = "layer (residual stream), attn or mlp (that branch's output)", DefaultValueFactory = _ => "layer" };
    public readonly Option<string> Mode = new("--mode") { Description = "cumulative (w.r.t. input embeddings) or layerwise (w.r.t. the stream entering the layer)", DefaultValueFactory = _ => "cumulative" };
    public readonly Option<bool> NoFinalNorm = new("--no-final-norm") { Description = "Do not apply the final norm (frozen at the intermediate value) to the output" };

    public void AddTo(Command c) { c.Options.Add(Layer); c.Options.Add(Key); c.Options.Add(Mode); c.Options.Add(NoFinalNorm); }

    public JacobianTarget Parse(ParseResult p, int layers)
    {
        var key = p.GetValue(Key) switch
        {
            "layer" => OutputKey.Layer, "attn" => OutputKey.Attn, "mlp" => OutputKey.Mlp,
            var s => throw new LinearLensException($"--key '{s}' is not an output LinearLens knows; use layer, attn or mlp"),
        };
        var mode = p.GetValue(Mode) switch
        {
            "cumulative" => JacobianMode.Cumulative, "layerwise" => JacobianMode.Layerwise,
            var s => throw new LinearLensException($"--mode '{s}' is not a Jacobian mode; use cumulative or layerwise"),
        };
        var t = new JacobianTarget(p.GetValue(Layer) ?? layers, key, mode, !p.GetValue(NoFinalNorm));
        t.Validate(layers);
        return t;
    }

}

static class Json
{
    public static System.Text.Json.JsonSerializerOptions Options => CommandJson.Options;

    public static JsonArray Array<TV>(IEnumerable<TV> values) => CommandJson.Array(values);

    public static string Write(JsonNode node) => CommandJson.Write(node);

    /// <summary>Moves every field of <paramref name="extra"/> into <paramref name="target"/> (in order) and returns it.</summary>
    public static JsonObject Merge(JsonObject target, JsonObject extra)
    {
        foreach (var key in extra.Select(p => p.Key).ToList())
        {
            var value = extra[key];
            extra.Remove(key);
            target[key] = value;
        }
        return target;
    }
}
