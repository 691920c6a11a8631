using System.CommandLine;
using System.Numerics;
using System.Runtime.CompilerServices;
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
        var outDir = new Option<string>("--out") { Description = "Write jacobian.npy, embeddings.npy, output.npy, contributions.npy here" };
        var json = new Option<bool>("--json") { Description = "Print one JSON object on stdout" };
        var nonlinear = new Option<bool>("--nonlinear") { Description = "The ordinary (non-frozen) Jacobian instead, by exact derivatives through every nonlinearity; Σ Jᵢxᵢ does not reconstruct y there" };
        var method = new Option<string>("--method") { Description = "full (form J by reverse mode), matrix-free (top-k singular triplets by Lanczos over JVP/VJP products, J never formed) or auto (by estimated memory and time)", DefaultValueFactory = _ => "auto" };
        var components = new Option<int?>("--components") { Description = "Singular triplets to compute (default 8; with --method full only when given)" };
        var perToken = new Option<bool>("--per-token") { Description = "Top-k of every Jᵢ (d×d) instead of the combined [J₀|…|J_{n−1}]" };
        var detach = ModelInput.DetachOption();
        var tolerance = new Option<double>("--tolerance") { Description = "Matrix-free: stop when every residual ‖J v − σ u‖ ≤ tolerance·σ₁", DefaultValueFactory = _ => 1e-8 };
        var cmd = new Command("jacobian", "The detached Jacobian J [d, n, d] of the last position's output and its exact reconstruction y = Σ Jᵢxᵢ");
        input.AddTo(cmd);
        target.AddTo(cmd);
        cmd.Options.Add(outDir); cmd.Options.Add(json); cmd.Options.Add(nonlinear);
        cmd.Options.Add(method); cmd.Options.Add(components); cmd.Options.Add(perToken); cmd.Options.Add(tolerance); cmd.Options.Add(detach);
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
            using var ckpt = input.Open(p);
            var ids = input.Ids(p, ckpt);
            var t = target.Parse(p, ckpt.Config.NumLayers);
            double tol = p.GetValue(tolerance);
            if (!(tol > 0 && tol < 1)) throw new LinearLensException($"--tolerance {tol} must lie between 0 and 1 (e.g. 1e-8)");
            var svd = new SvdRequest(m, k, p.GetValue(perToken), tol, ModelInput.ParseDetach(p.GetValue(detach)));
            return input.IsFloat64(p)
                ? Run<double>(ckpt, ids, t, nl, dir, p.GetValue(json), svd, stdout, stderr)
                : Run<float>(ckpt, ids, t, nl, dir, p.GetValue(json), svd, stdout, stderr);
        });
        return cmd;
    }

    /// <summary>--method, --components, --per-token.</summary>
    sealed record SvdRequest(SvdMethod Method, int? Components, bool PerToken, double Tolerance = 1e-8, Models.DetachPolicy Detach = Models.DetachPolicy.Ours)
    {
        public int K => Components ?? 8;
        /// <summary>Whether the full path also reports singular triplets (only when asked for).</summary>
        public bool WantedWithFull => Components is not null || PerToken;
    }

    /// <summary>
    /// `auto`: full when J fits the memory budget and its d transpose products cost less than the Lanczos estimate
    /// (2 products per Krylov column, 10k + 100 columns at most, plus k for the residuals; per token for --per-token,
    /// where a product runs only from the token's position on),
    /// else matrix-free. Returns the choice and a one-line reason.
    /// </summary>
    static (SvdMethod method, string reason) Decide(ModelConfig c, int n, int elementSize, JacobianTarget target, SvdRequest req, bool nonlinear, string? outDir)
    {
        if (req.Method != SvdMethod.Auto) return (req.Method, "requested");
        if (nonlinear) return (SvdMethod.Full, "the ordinary Jacobian (--nonlinear) is only formed in full");
        if (outDir is not null) return (SvdMethod.Full, "--out writes the full J");
        int d = c.HiddenSize;
        long lin = 0;  // linear-path weights per layer run: W_v, W_o, W_up, W_down
        int layers = target.Mode == JacobianMode.Cumulative ? target.Layer : 1;
        lin = (long)layers * ((long)c.KvDim * d + (long)d * c.QDim + 2L * c.IntermediateSize * d);
        double rowBytes = (3.0 * d + c.QDim + c.KvDim + c.IntermediateSize) * elementSize;
        // whether J fits is judged with the narrow batch: a wider one is only taken when memory allows (DetachedJacobian.Batch)
        double memFull = (double)d * n * d * elementSize + DetachedJacobian.Batch(c, n, elementSize, budget: 0).bufferBytes;
        int k = Math.Min(req.K, d);
        int krylov = Math.Min(d, 10 * k + 100);
        int lanes = req.PerToken ? n : 1;
        double productsFree = JacobianOperators.LanczosProducts(d, n, k, req.PerToken);
        double productsFull = d;
        int freeBatch = Math.Min(JacobianOperators.MaxBatch(n), lanes * Math.Clamp(k, 1, 4));
        double memFree = n * (double)freeBatch * rowBytes + lanes * (double)krylov * (d + (req.PerToken ? d : (double)n * d)) * 8;   // Lanczos bases are double
        double gflop(double products) => 2.0 * products * n * lin / 1e9;
        string mem(double b) => b >= 1e9 ? $"{b / 1e9:F1} GB" : $"{b / 1e6:F0} MB";
        string costs = $"full: J {mem(memFull)}, {productsFull:F0} products ≈ {gflop(productsFull):F0} GFLOP; matrix-free: {mem(memFree)}, ≤ {productsFree:F0} products ≈ {gflop(productsFree):F0} GFLOP";
        if (memFull > DetachedJacobian.MemoryBudgetBytes)
            return (SvdMethod.MatrixFree, $"J would need {mem(memFull)} > {mem(DetachedJacobian.MemoryBudgetBytes)} budget ({costs})");
        return productsFree < productsFull
            ? (SvdMethod.MatrixFree, $"fewer products ({costs})")
            : (SvdMethod.Full, $"J fits in memory and costs no more ({costs})");
    }

    static int Run<T>(Checkpoint ckpt, int[] ids, JacobianTarget target, bool nonlinear, string? outDir, bool json, SvdRequest req, TextWriter stdout, TextWriter stderr)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        var model = new Transformer<T>(ckpt);
        var (method, reason) = Decide(ckpt.Config, ids.Length, Unsafe.SizeOf<T>(), target, req, nonlinear, outDir);
        string methodName = method == SvdMethod.MatrixFree ? "matrix-free" : "full";
        stderr.WriteLine($"method: {methodName} ({reason})");
        var run = model.Forward(ids, trace: true, nonlinear: nonlinear, detach: req.Detach);
        int predicted = Generator.ArgMax<T>(run.Logits);
        string kind = nonlinear ? "ordinary" : "detached";
        if (method == SvdMethod.MatrixFree)
            return RunMatrixFree(ckpt, model, run, ids, target, req, reason, predicted, json, stdout, stderr);
        var r = nonlinear
            ? Progress.Run(stderr, "ordinary Jacobian", report => new OrdinaryJacobian<T>(model, run.Trace!).Compute(target, report))
            : Progress.Run(stderr, "detached Jacobian", report => DetachedJacobian.Compute(new FrozenMap<T>(model, run.Trace!), target, report));
        int n = ids.Length, d = model.Hidden;
        if (outDir is not null)
        {
            Directory.CreateDirectory(outDir);
            Npy.Write<T>(Path.Combine(outDir, "jacobian.npy"), r.J, d, n, d);
            Npy.Write<T>(Path.Combine(outDir, "embeddings.npy"), r.Input, n, d);
            Npy.Write<T>(Path.Combine(outDir, "output.npy"), r.Output, d);
            Npy.Write<T>(Path.Combine(outDir, "contributions.npy"), r.Contributions, n, d);
            if (!nonlinear) Npy.Write<T>(Path.Combine(outDir, "offset.npy"), r.Offset, d);
        }
        var tokens = ModelInput.TokenStrings(ckpt, ids);
        string predictedToken = ModelInput.TokenStrings(ckpt, [predicted])[0];
        JsonObject? svdJson = null;
        List<string> svdLines = [];
        if (req.WantedWithFull)
        {
            var sw = System.Diagnostics.Stopwatch.StartNew();
            SingularTriplets[] res = req.PerToken
                ? Progress.Run(stderr, "per-token SVD", report => Spectra.PerToken(r, req.K, report))
                : [Svd.Dense(Spectra.CombinedMatrix(r), d, n * d, req.K)];
            (svdJson, svdLines) = SvdReport(res, req, tokens, sw.Elapsed.TotalSeconds, 0);
        }
        if (json)
        {
            var o = Json.Merge(Header<T>(ckpt, ids, tokens, predicted, predictedToken, kind, target, d, run.Trace!.Detach), new JsonObject
            {
                ["reconstruction"] = new JsonObject
                {
                    ["relative_error"] = r.RelativeError,
                    ["max_abs_error"] = r.MaxAbsError,
                    ["offset_norm"] = Norm<T>(r.Offset),
                },
                ["contribution_norms"] = Json.Array(Enumerable.Range(0, n).Select(i => Norm(r.Contributions.AsSpan(i * d, d)))),
                ["seconds"] = r.Seconds,
                ["out"] = outDir is null ? null : Path.GetFullPath(outDir),
                ["method"] = "full",
                ["method_reason"] = reason,
            });
            if (svdJson is not null) o["svd"] = svdJson;
            stdout.WriteLine(Json.Write(o));
        }
        else
        {
            stdout.WriteLine($"{ckpt.Config.ModelType}, {Transformer<T>.DTypeName}, {n} tokens; target: {target.Describe()}");
            stdout.WriteLine($"predicted next token: {Quote(predictedToken)} ({predicted})");
            string affine = !nonlinear && ckpt.Config.Biases.Any ? " + c" : "";
            stdout.WriteLine($"{kind} J shape [{d}, {n}, {d}]; ‖Σ Jᵢxᵢ{affine} − y‖/‖y‖ = {r.RelativeError:E2} (max abs error {r.MaxAbsError:E2}){(affine.Length > 0 ? $"; affine: ‖c‖ = {Norm<T>(r.Offset):G4}" : "")}; {r.Seconds:F2} s");
            for (int i = 0; i < n; i++)
                stdout.WriteLine($"  token {i,3} {Quote(tokens[i]),-16} ‖Jᵢxᵢ‖ = {Norm(r.Contributions.AsSpan(i * d, d)):G4}");
            foreach (var line in svdLines) stdout.WriteLine(line);
            if (outDir is not null) stdout.WriteLine($"wrote jacobian.npy, embeddings.npy, output.npy, contributions.npy{(nonlinear ? "" : ", offset.npy")} to {Path.GetFullPath(outDir)}");
        }
        return 0;
    }

    /// <summary>
    /// Matrix-free: top-k singular triplets of the combined J (or of every Jᵢ) by block Lanczos over batched JVP/VJP
    /// products, and the reconstruction check Σᵢ Jᵢxᵢ = J·x as one JVP at the real input.
    /// </summary>
    static int RunMatrixFree<T>(Checkpoint ckpt, Transformer<T> model, ForwardResult<T> run, int[] ids, JacobianTarget target, SvdRequest req,
        string reason, int predicted, bool json, TextWriter stdout, TextWriter stderr) where T : unmanaged, IFloatingPointIeee754<T>
    {
        int n = ids.Length, d = model.Hidden;
        var map = new FrozenMap<T>(model, run.Trace!);
        var sw = System.Diagnostics.Stopwatch.StartNew();
        // reconstruction: ŷ = Σᵢ Jᵢxᵢ + c = Jvp(x) + the offset run
        var yHat = map.Reconstruct(target);
        double offsetNorm = Norm<T>(map.Offset(target));
        var y = map.Output(target);
        var (rel, maxAbs) = DetachedJacobian.Errors<T>(yHat, y);
        double reconSeconds = sw.Elapsed.TotalSeconds;
        sw.Restart();
        SingularTriplets[] res = req.PerToken
            ? Progress.Run(stderr, "per-token Lanczos", report => JacobianOperators.PerTokenTopK(map, target, Enumerable.Range(0, n).ToArray(), req.K, req.Tolerance, progress: report))
            : [JacobianOperators.CombinedTopK(map, target, req.K, req.Tolerance)];
        double svdSeconds = sw.Elapsed.TotalSeconds;
        var tokens = ModelInput.TokenStrings(ckpt, ids);
        string predictedToken = ModelInput.TokenStrings(ckpt, [predicted])[0];
        var (svdJson, svdLines) = SvdReport(res, req, tokens, svdSeconds, req.Tolerance);
        if (json)
        {
            var o = Json.Merge(Header<T>(ckpt, ids, tokens, predicted, predictedToken, "detached", target, d, run.Trace!.Detach), new JsonObject
            {
                ["method"] = "matrix-free",
                ["method_reason"] = reason,
                ["reconstruction"] = new JsonObject
                {
                    ["relative_error"] = rel,
                    ["max_abs_error"] = maxAbs,
                    ["offset_norm"] = offsetNorm,
                    ["via"] = "jvp",
                },
                ["svd"] = svdJson,
                ["seconds"] = reconSeconds + svdSeconds,
            });
            stdout.WriteLine(Json.Write(o));
        }
        else
        {
            stdout.WriteLine($"{ckpt.Config.ModelType}, {Transformer<T>.DTypeName}, {n} tokens; target: {target.Describe()}");
            stdout.WriteLine($"predicted next token: {Quote(predictedToken)} ({predicted})");
            stdout.WriteLine($"detached J [{d}, {n}, {d}] not formed (matrix-free); ‖J·x − y‖/‖y‖ = {rel:E2} (max abs error {maxAbs:E2}) by one JVP; {reconSeconds:F2} s");
            foreach (var line in svdLines) stdout.WriteLine(line);
        }
        return 0;
    }

    /// <summary>JSON object and text lines for computed triplets (combined: one entry; per token: one per token).</summary>
    static (JsonObject json, List<string> lines) SvdReport(SingularTriplets[] res, SvdRequest req, string[] tokens, double seconds, double tolerance)
    {
        JsonObject Entry(SingularTriplets t)
        {
            var e = new JsonObject { ["singular_values"] = Json.Array(t.Values) };
            if (t.Residuals is not null)
            {
                e["residuals"] = Json.Array(t.Residuals);
                e["max_relative_residual"] = t.Count == 0 || t.Values[0] == 0 ? 0 : t.Residuals.Max() / t.Values[0];
            }
            if (t.Method != "dense") { e["products"] = t.Products; e["transposed_products"] = t.TransposedProducts; e["subspace"] = t.Subspace; e["converged"] = t.Converged; }
            return e;
        }
        var lines = new List<string>();
        string algorithm = res.Length > 0 ? res[0].Method : "dense";
        var o = new JsonObject
        {
            ["scope"] = req.PerToken ? "per_token" : "combined",
            ["components"] = req.K,
            ["algorithm"] = algorithm,
            ["seconds"] = seconds,
        };
        if (algorithm != "dense") o["tolerance"] = tolerance;
        string Fmt(SingularTriplets t) => string.Join(" ", t.Values.Select(v => v.ToString("G6", System.Globalization.CultureInfo.InvariantCulture)));
        string Res(SingularTriplets t) => t.Residuals is null || t.Count == 0 ? "" : $"; max ‖Av − σu‖/σ₁ = {t.Residuals.Max() / Math.Max(t.Values[0], double.Epsilon):E1}";
        string Cost(SingularTriplets t) => t.Method == "dense" ? "" : $" ({t.Products} + {t.TransposedProducts} products, Krylov {t.Subspace}{(t.Converged ? "" : ", NOT converged to the tolerance")})";
        if (req.PerToken)
        {
            o["per_token"] = new JsonArray(res.Select((t, i) => { var e = Entry(t); e["token"] = i; return (JsonNode)e; }).ToArray());
            lines.Add($"top-{req.K} singular values of each Jᵢ ({algorithm}, {seconds:F2} s):");
            for (int i = 0; i < res.Length; i++)
                lines.Add($"  token {i,3} {Quote(tokens[i]),-16} σ = {Fmt(res[i])}{Res(res[i])}{Cost(res[i])}");
        }
        else
        {
            o["combined"] = Entry(res[0]);
            lines.Add($"top-{req.K} singular values of [J₀|…|J_{{n−1}}] ({algorithm}, {seconds:F2} s{Cost(res[0])}):");
            lines.Add($"  σ = {Fmt(res[0])}{Res(res[0])}");
        }
        return (o, lines);
    }

    /// <summary>The fields every `jacobian --json` result starts with.</summary>
    static JsonObject Header<T>(Checkpoint ckpt, int[] ids, string[] tokens, int predicted, string predictedToken, string kind, JacobianTarget target, int d, Models.DetachPolicy detach)
        where T : unmanaged, IFloatingPointIeee754<T> => new()
    {
        ["model_type"] = ckpt.Config.ModelType,
        ["dtype"] = Transformer<T>.DTypeName,
        ["input_ids"] = Json.Array(ids),
        ["tokens"] = Json.Array(tokens),
        ["predicted_id"] = predicted,
        ["predicted_token"] = predictedToken,
        ["jacobian"] = kind,
        ["target"] = TargetOptions.ToJson(target),
        ["detach"] = detach.ToString().ToLowerInvariant(),
        ["shape"] = Json.Array([d, ids.Length, d]),
    };

    static double Norm<T>(ReadOnlySpan<T> v) where T : IFloatingPointIeee754<T>
    {
        double s = 0;
        foreach (var x in v) s += double.CreateChecked(x) * double.CreateChecked(x);
        return Math.Sqrt(s);
    }

    public static string Quote(string s) => System.Text.Json.JsonSerializer.Serialize(s, Json.Options);
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

    public static JsonObject ToJson(JacobianTarget t) => new()
    {
        ["layer"] = t.Layer,
        ["key"] = t.Key.ToString().ToLowerInvariant(),
        ["mode"] = t.Mode.ToString().ToLowerInvariant(),
        ["final_norm"] = t.FinalNorm,
    };
}

static class Json
{
    /// <summary>Readable JSON: tokens such as "&lt;s&gt;" or "é" are written as they are, not as \u escapes.</summary>
    public static readonly System.Text.Json.JsonSerializerOptions Options = new()
    {
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };

    public static JsonArray Array<TV>(IEnumerable<TV> values) => new(values.Select(v => JsonValue.Create(v)).ToArray<JsonNode?>());

    public static string Write(JsonNode node) => node.ToJsonString(Options);

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
