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
        var attribute = new Option<string[]>("--attribute") { Description = "Also attribute these tokens' logits: an id (e.g. 42) or a text that is one token (e.g. \" Golden\" for byte-level BPE, \"Golden\" for SentencePiece, which adds the space itself); repeatable", AllowMultipleArgumentsPerToken = false };
        var noOrdinary = new Option<bool>("--no-ordinary") { Description = "Skip the ordinary (non-frozen) Jacobian used for the reconstruction comparison" };
        var outDir = new Option<string>("--out") { Description = "Write analysis.json, report.html and the PNG figures here (with --prompts: one folder per prompt, summary.json and summary.html)" };
        var prompts = new Option<string>("--prompts") { Description = "Analyse many prompts with one model load: a text file with one prompt per line, or JSON Lines with a \"text\" field; needs --out; an interrupted run resumes" };
        var figures = new Option<bool>("--figures") { Description = "With --prompts: also write each prompt's PNG figures (always written for a single input)" };
        var json = new Option<bool>("--json") { Description = "Print the analysis JSON on stdout" };
        var detach = ModelInput.DetachOption();
        var method = new Option<string>("--method") { Description = "full (form every Jacobian), matrix-free (Lanczos over JVP/VJP products; ‖J‖_F² estimated; no column/row norms or ordinary Jacobian) or auto (by estimated cost)", DefaultValueFactory = _ => "auto" };
        var cmd = new Command("analyze", "Per-token and combined SVD decoded to tokens, layer sweep with stable rank and path, exact logit attribution, figures")
        { components, layers, attribute, noOrdinary, outDir, json, method, detach, prompts, figures };
        input.AddTo(cmd);
        cmd.SetAction(p =>
        {
            // options that would be silently ignored: say so rather than let a user think they changed the result
            if (p.GetResult(figures) is { Implicit: false } && p.GetValue(prompts) is null)
                throw new LinearLensException("--figures applies to --prompts; a single input's figures are always written with --out: drop --figures");
            if (p.GetResult(noOrdinary) is { Implicit: false } && p.GetValue(method) == "matrix-free")
                throw new LinearLensException("--no-ordinary skips the ordinary Jacobian, which --method matrix-free never computes: drop --no-ordinary, or use --method full");
            Checks.OutputFolder(p.GetValue(outDir));
            var source = input.Resolve(p);
            using var ckpt = input.Open(source);
            if (p.GetResult(components) is { Implicit: false }) Checks.Components(p.GetValue(components), ckpt.Config);
            var options = new AnalysisOptions
            {
                Components = p.GetValue(components),
                Layers = p.GetValue(layers) is { } s ? ParseLayers(s, ckpt.Config.NumLayers) : null,
                AttributeTokens = (p.GetValue(attribute) ?? []).Select(a => AttributeId(ckpt, a)).ToArray(),
                Ordinary = !p.GetValue(noOrdinary),
                Detach = ModelInput.ParseDetach(p.GetValue(detach)),
                Method = p.GetValue(method) switch
                {
                    "full" => SvdMethod.Full, "matrix-free" => SvdMethod.MatrixFree, "auto" => SvdMethod.Auto,
                    var other => throw new LinearLensException($"--method '{other}' is not a method; use full, matrix-free or auto"),
                },
            };
            if (p.GetValue(prompts) is { } file)
            {
                if (p.GetValue(input.Text) is not null || p.GetValue(input.TokenIds) is not null)
                    throw new LinearLensException("give either --prompts FILE or --text/--token-ids, not both");
                if (p.GetValue(json)) throw new LinearLensException("--json prints one analysis; with --prompts the results are the folders and summary.json under --out");
                string dir = p.GetValue(outDir) ?? throw new LinearLensException("--prompts needs --out DIR: each prompt gets a folder there, with summary.json and summary.html beside them");
                var list = PromptFile.Read(file);
                return input.IsFloat64(p)
                    ? RunPrompts<double>(ckpt, source, list, options, dir, p.GetValue(figures), stdout, stderr)
                    : RunPrompts<float>(ckpt, source, list, options, dir, p.GetValue(figures), stdout, stderr);
            }
            var ids = input.Ids(p, ckpt);
            string? text = p.GetValue(input.Text);
            return input.IsFloat64(p)
                ? Run<double>(ckpt, source, ids, text, options, p.GetValue(outDir), p.GetValue(json), stdout, stderr)
                : Run<float>(ckpt, source, ids, text, options, p.GetValue(outDir), p.GetValue(json), stdout, stderr);
        });
        return cmd;
    }

    /// <summary>
    /// --layers in increasing order, each once: the sweep is a curve over depth and the path is projected on its last
    /// (deepest) layer, so "8,1" must not project on layer 1, and a layer given twice would be computed and listed twice.
    /// </summary>
    static int[] ParseLayers(string s, int numLayers)
    {
        int[] layers;
        try { layers = ModelInput.ParseIds(s); }
        catch (LinearLensException) { throw new LinearLensException($"--layers '{s}' is not a list of layer numbers; give e.g. 1,4,8"); }
        // here, not only in the analysis: a --prompts run has created its --out folder by then
        foreach (int l in layers)
            if (l < 1 || l > numLayers) throw new LinearLensException($"--layers: layer {l} is outside 1…{numLayers}");
        if (layers.GroupBy(l => l).FirstOrDefault(g => g.Count() > 1) is { } twice)
            throw new LinearLensException($"--layers '{s}' names layer {twice.Key} more than once; give each layer once, e.g. 1,4,8");
        return [.. layers.Order()];
    }

    static int AttributeId(Checkpoint ckpt, string a)
    {
        // digits only: " 5" and "+5" are texts (" 5" is one token in most BPE vocabularies), not the id 5
        if (int.TryParse(a, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int id))
            return (uint)id < (uint)ckpt.Config.VocabSize ? id
                : throw new LinearLensException($"--attribute {id} is outside the vocabulary 0…{ckpt.Config.VocabSize - 1}; give a token id in range or a token text");
        var tokenizer = ckpt.RequireTokenizer();
        var ids = tokenizer.EncodeWithoutSpecialTokens(a);
        if (ids.Length != 1)
        {
            // a SentencePiece tokenizer puts its own space before a word: " big" is "▁" + "▁big", and "big" is the token
            string trimmed = a.TrimStart();
            string hint = trimmed.Length < a.Length && trimmed.Length > 0 && tokenizer.EncodeWithoutSpecialTokens(trimmed) is [int one]
                ? $"; this tokenizer adds the leading space itself: \"{trimmed}\" is the one token {one}:{JacobianCommand.Quote(tokenizer.TokenString(one))}" : "";
            throw new LinearLensException($"--attribute \"{a}\" is {ids.Length} tokens ({string.Join(" ", ids.Select(i => $"{i}:{JacobianCommand.Quote(tokenizer.TokenString(i))}"))}){hint}; give one token or its id");
        }
        return ids[0];
    }

    static int Run<T>(Checkpoint ckpt, ResolvedModel source, int[] ids, string? inputText, AnalysisOptions options, string? outDir, bool json, TextWriter stdout, TextWriter stderr)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        Checks.Memory(ckpt.Config, Analyzer.Shape(ckpt.Config, ids.Length, options, System.Runtime.CompilerServices.Unsafe.SizeOf<T>()));
        var model = new Transformer<T>(ckpt);
        var report = Progress.RunStages(stderr, "analysis", progress => Analyzer.Run(model, ids, options, progress))
            with { InputText = inputText, HubId = source.HubId, HubRevision = source.Revision, HubCommit = source.Commit };
        stderr.WriteLine($"method: {report.Method} ({report.MethodReason})");
        if (outDir is not null) AnalysisFolder.Write(report, outDir, figures: true);
        if (json) { stdout.WriteLine(AnalysisJson.Write(report)); return 0; }
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
        if (outDir is not null) o.WriteLine($"wrote analysis.json, figures and {Path.Combine(Path.GetFullPath(outDir), HtmlReport.FileName)}");
    }

    /// <summary>Many prompts, one model load: a line per prompt on stderr with an ETA; Ctrl-C stops after the current prompt.</summary>
    static int RunPrompts<T>(Checkpoint ckpt, ResolvedModel source, Prompt[] prompts, AnalysisOptions options, string outDir, bool figures, TextWriter stdout, TextWriter stderr)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        var model = new Transformer<T>(ckpt);
        using var cancel = new CancellationTokenSource();
        ConsoleCancelEventHandler onCancel = (_, e) => { e.Cancel = true; cancel.Cancel(); stderr.WriteLine("stopping after the current prompt (finished prompts are kept; run again to resume)"); };
        Console.CancelKeyPress += onCancel;
        try
        {
            var result = PromptBatch.Run(model, prompts, outDir, options, figures, p =>
                stderr.WriteLine($"prompt {p.Done}/{p.Total} (line {p.Prompt.Line}, {p.Tokens} tokens): " +
                                 (p.Reused ? "already done" : $"{p.Seconds:F2} s") + (p.EtaSeconds is double eta ? $"; ETA {Eta(eta)}" : "")), cancel.Token, source);
            stdout.WriteLine($"{prompts.Length} prompts: {result.Computed} analysed, {result.Reused} already done; wrote {result.SummaryJson} and {result.SummaryHtml}");
            return 0;
        }
        catch (OperationCanceledException)
        {
            stderr.WriteLine("error: interrupted; the finished prompts' folders are complete; run the same command again to do the rest");
            return 130;
        }
        finally { Console.CancelKeyPress -= onCancel; }
    }

    static string Eta(double s) => s < 90 ? $"{s:F0} s" : s < 5400 ? $"{s / 60:F1} min" : $"{s / 3600:F1} h";
}

/// <summary>`linearlens report DIR`: rebuilds report.html from DIR/analysis.json (and summary.html from DIR/summary.json).</summary>
static class ReportCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var dir = new Argument<string>("DIR") { Description = "A folder written by 'analyze --out' (analysis.json) or 'analyze --prompts … --out' (summary.json)" };
        var cmd = new Command("report", "Rebuild report.html from analysis.json (and summary.html from summary.json) in a folder") { dir };
        cmd.SetAction(p =>
        {
            string folder = p.GetValue(dir)!;
            if (!Directory.Exists(folder)) throw new LinearLensException($"{folder} is not a folder; give the --out folder of an 'analyze' run");
            bool any = false;
            if (File.Exists(Path.Combine(folder, AnalysisFolder.JsonName))) { stdout.WriteLine($"wrote {HtmlReport.WriteFromFolder(folder)}"); any = true; }
            if (File.Exists(Path.Combine(folder, BatchSummary.JsonName))) { stdout.WriteLine($"wrote {BatchSummary.WriteHtmlFromFolder(folder)}"); any = true; }
            if (!any) throw new LinearLensException($"{Path.GetFullPath(folder)} has neither analysis.json nor summary.json; run 'linearlens analyze --out {folder}' first");
            return 0;
        });
        return cmd;
    }
}
