using System.CommandLine;
using System.Numerics;
using LinearLens.Analysis;
using LinearLens.Loading;
using LinearLens.Models;
using LinearLens.Reporting;

namespace LinearLens.Cli.Commands;

/// <summary>`linearlens analyze`: SVD decoded to tokens, layer sweeps, stable rank, exact attribution; analysis.json and PNG figures.</summary>
static class AnalyzeCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr, Func<HubOptions> hub)
    {
        var input = new ModelInput(hub, stderr);
        var components = new Option<int>("--components") { Description = "Singular triplets per matrix", DefaultValueFactory = _ => 8 };
        var layers = new Option<string>("--layers") { Description = "Layers of the sweep, e.g. 1,4,8 (default: about 8 evenly spaced, the last included)" };
        var attribute = new Option<string[]>("--attribute") { Description = "Also attribute these tokens' logits: an id (e.g. 42) or a text that is one token (e.g. \" Golden\"); repeatable", AllowMultipleArgumentsPerToken = false };
        var noOrdinary = new Option<bool>("--no-ordinary") { Description = "Skip the ordinary (non-frozen) Jacobian used for the reconstruction comparison" };
        var outDir = new Option<string>("--out") { Description = "Write analysis.json and the PNG figures here" };
        var json = new Option<bool>("--json") { Description = "Print the analysis JSON on stdout" };
        var detach = ModelInput.DetachOption();
        var method = new Option<string>("--method") { Description = "full (form every Jacobian), matrix-free (Lanczos over JVP/VJP products; ‖J‖_F² estimated; no column/row norms or ordinary Jacobian) or auto (by estimated cost)", DefaultValueFactory = _ => "auto" };
        var cmd = new Command("analyze", "Per-token and combined SVD decoded to tokens, layer sweep with stable rank and path, exact logit attribution, figures")
        { components, layers, attribute, noOrdinary, outDir, json, method, detach };
        input.AddTo(cmd);
        cmd.SetAction(p =>
        {
            using var ckpt = input.Open(p);
            var ids = input.Ids(p, ckpt);
            var options = new AnalysisOptions
            {
                Components = p.GetValue(components),
                Layers = p.GetValue(layers) is { } s ? ParseLayers(s) : null,
                AttributeTokens = (p.GetValue(attribute) ?? []).Select(a => AttributeId(ckpt, a)).ToArray(),
                Ordinary = !p.GetValue(noOrdinary),
                Detach = ModelInput.ParseDetach(p.GetValue(detach)),
                Method = p.GetValue(method) switch
                {
                    "full" => SvdMethod.Full, "matrix-free" => SvdMethod.MatrixFree, "auto" => SvdMethod.Auto,
                    var other => throw new LinearLensException($"--method '{other}' is not a method; use full, matrix-free or auto"),
                },
            };
            return input.IsFloat64(p)
                ? Run<double>(ckpt, ids, options, p.GetValue(outDir), p.GetValue(json), stdout, stderr)
                : Run<float>(ckpt, ids, options, p.GetValue(outDir), p.GetValue(json), stdout, stderr);
        });
        return cmd;
    }

    static int[] ParseLayers(string s)
    {
        try { return ModelInput.ParseIds(s); }
        catch (LinearLensException) { throw new LinearLensException($"--layers '{s}' is not a list of layer numbers; give e.g. 1,4,8"); }
    }

    static int AttributeId(Checkpoint ckpt, string a)
    {
        if (int.TryParse(a, out int id)) return id;
        var ids = ckpt.RequireTokenizer().EncodeWithoutSpecialTokens(a);
        if (ids.Length != 1)
            throw new LinearLensException($"--attribute \"{a}\" is {ids.Length} tokens ({string.Join(" ", ids.Select(i => $"{i}:{JacobianCommand.Quote(ckpt.Tokenizer!.TokenString(i))}"))}); give one token or its id");
        return ids[0];
    }

    static int Run<T>(Checkpoint ckpt, int[] ids, AnalysisOptions options, string? outDir, bool json, TextWriter stdout, TextWriter stderr)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        var model = new Transformer<T>(ckpt);
        var report = Progress.RunStages(stderr, "analysis", progress => Analyzer.Run(model, ids, options, progress));
        stderr.WriteLine($"method: {report.Method} ({report.MethodReason})");
        string text = AnalysisJson.Write(report);
        if (outDir is not null)
        {
            Directory.CreateDirectory(outDir);
            File.WriteAllText(Path.Combine(outDir, "analysis.json"), text);
            Figures.WriteAll(report, outDir);
        }
        if (json) { stdout.WriteLine(text); return 0; }
        Summary(report, outDir, stdout);
        return 0;
    }

    static void Summary(AnalysisReport r, string? outDir, TextWriter o)
    {
        string Q(string s) => JacobianCommand.Quote(s);
        string Toks(IEnumerable<ScoredToken> t) => string.Join(" ", t.Select(x => Q(x.Text)));
        o.WriteLine($"{r.ModelType}, {r.DType}, {r.InputIds.Length} tokens → predicted {Q(r.PredictedToken)} ({r.PredictedId})");
        o.WriteLine($"method: {r.Method} ({r.MethodReason})");
        o.WriteLine($"detached reconstruction ‖Σ Jᵢxᵢ − y‖/‖y‖ = {r.RelativeError:E2}" + (r.OrdinaryRelativeError is double e ? $"; ordinary Jacobian {e:E2}" : ""));
        o.WriteLine("per-token SVD (σ₀, U₀ by logit | V₀ by input-embedding cosine):");
        for (int i = 0; i < r.PerToken.Length; i++)
        {
            var c = r.PerToken[i].Components.FirstOrDefault();
            if (c is null) continue;
            o.WriteLine($"  token {i,3} {Q(r.Tokens[i]),-14} σ₀ = {c.Sigma,9:G4}  U₀: {Toks(c.Left)}  | V₀: {Toks(c.Right ?? [])}");
        }
        o.WriteLine($"tokens combined: σ = [{string.Join(", ", r.Combined.SingularValues.Select(v => v.ToString("G4")))}], stable rank {r.Combined.StableRank:G4}");
        foreach (var c in r.Combined.Components) o.WriteLine($"  U{c.Index}: {Toks(c.Left)}");
        o.WriteLine("layer sweep (stable rank; U₀):");
        foreach (var s in r.LayerSweep)
            o.WriteLine($"  {s.Mode.ToString().ToLowerInvariant(),-10} {s.Key.ToString().ToLowerInvariant(),-5} layer {s.Layer,3}: stable rank {s.Spectrum.StableRank,8:G4}; U₀ {Toks(s.Spectrum.Components.FirstOrDefault()?.Left.Take(4) ?? [])}");
        foreach (var a in r.Attributions)
        {
            o.WriteLine($"attribution of {Q(a.Token)} ({a.TokenId}): Σ contributions = {a.Sum:G10}, logit = {a.Logit:G10}, |diff| = {a.SumError:E1}");
            o.WriteLine("  " + string.Join("  ", a.Contributions.Select((v, i) => $"{Q(r.Tokens[i])} {v:+0.000;-0.000}")));
        }
        if (outDir is not null) o.WriteLine($"wrote analysis.json and figures to {Path.GetFullPath(outDir)}");
    }
}
