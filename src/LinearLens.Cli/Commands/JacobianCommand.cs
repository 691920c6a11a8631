using System.CommandLine;
using System.Numerics;
using System.Text.Json.Nodes;
using LinearLens.Linearization;
using LinearLens.Loading;
using LinearLens.Models;
using LinearLens.Reporting;

namespace LinearLens.Cli.Commands;

/// <summary>`linearlens jacobian`: the detached Jacobian of one output, its reconstruction check, optional .npy files.</summary>
static class JacobianCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var input = new ModelInput();
        var target = new TargetOptions();
        var outDir = new Option<string>("--out") { Description = "Write jacobian.npy, embeddings.npy, output.npy, contributions.npy here" };
        var json = new Option<bool>("--json") { Description = "Print one JSON object on stdout" };
        var nonlinear = new Option<bool>("--nonlinear") { Description = "The ordinary (non-frozen) Jacobian instead, by exact derivatives through every nonlinearity; Σ Jᵢxᵢ does not reconstruct y there" };
        var cmd = new Command("jacobian", "The detached Jacobian J [d, n, d] of the last position's output and its exact reconstruction y = Σ Jᵢxᵢ");
        input.AddTo(cmd);
        target.AddTo(cmd);
        cmd.Options.Add(outDir); cmd.Options.Add(json); cmd.Options.Add(nonlinear);
        cmd.SetAction(p =>
        {
            using var ckpt = Checkpoint.Open(p.GetValue(input.Model)!);
            var ids = input.Ids(p, ckpt);
            var t = target.Parse(p, ckpt.Config.NumLayers);
            string? dir = p.GetValue(outDir);
            return input.IsFloat64(p)
                ? Run<double>(ckpt, ids, t, p.GetValue(nonlinear), dir, p.GetValue(json), stdout, stderr)
                : Run<float>(ckpt, ids, t, p.GetValue(nonlinear), dir, p.GetValue(json), stdout, stderr);
        });
        return cmd;
    }

    static int Run<T>(Checkpoint ckpt, int[] ids, JacobianTarget target, bool nonlinear, string? outDir, bool json, TextWriter stdout, TextWriter stderr)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        var model = new Transformer<T>(ckpt);
        var run = model.Forward(ids, trace: true, nonlinear: nonlinear);
        int predicted = Generator.ArgMax<T>(run.Logits);
        string kind = nonlinear ? "ordinary" : "detached";
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
        }
        var tokens = ModelInput.TokenStrings(ckpt, ids);
        string predictedToken = ModelInput.TokenStrings(ckpt, [predicted])[0];
        if (json)
        {
            var o = new JsonObject
            {
                ["model_type"] = ckpt.Config.ModelType,
                ["dtype"] = Transformer<T>.DTypeName,
                ["input_ids"] = Json.Array(ids),
                ["tokens"] = Json.Array(tokens),
                ["predicted_id"] = predicted,
                ["predicted_token"] = predictedToken,
                ["jacobian"] = kind,
                ["target"] = TargetOptions.ToJson(target),
                ["shape"] = Json.Array([d, n, d]),
                ["reconstruction"] = new JsonObject
                {
                    ["relative_error"] = r.RelativeError,
                    ["max_abs_error"] = r.MaxAbsError,
                },
                ["contribution_norms"] = Json.Array(Enumerable.Range(0, n).Select(i => Norm(r.Contributions.AsSpan(i * d, d)))),
                ["seconds"] = r.Seconds,
                ["out"] = outDir is null ? null : Path.GetFullPath(outDir),
            };
            stdout.WriteLine(Json.Write(o));
        }
        else
        {
            stdout.WriteLine($"{ckpt.Config.ModelType}, {Transformer<T>.DTypeName}, {n} tokens; target: {target.Describe()}");
            stdout.WriteLine($"predicted next token: {Quote(predictedToken)} ({predicted})");
            stdout.WriteLine($"{kind} J shape [{d}, {n}, {d}]; ‖Σ Jᵢxᵢ − y‖/‖y‖ = {r.RelativeError:E2} (max abs error {r.MaxAbsError:E2}); {r.Seconds:F2} s");
            for (int i = 0; i < n; i++)
                stdout.WriteLine($"  token {i,3} {Quote(tokens[i]),-16} ‖Jᵢxᵢ‖ = {Norm(r.Contributions.AsSpan(i * d, d)):G4}");
            if (outDir is not null) stdout.WriteLine($"wrote jacobian.npy, embeddings.npy, output.npy, contributions.npy to {Path.GetFullPath(outDir)}");
        }
        return 0;
    }

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
}
