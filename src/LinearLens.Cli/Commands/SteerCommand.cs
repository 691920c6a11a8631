using System.CommandLine;
using System.Globalization;
using System.Numerics;
using LinearLens.Analysis;
using LinearLens.Loading;
using LinearLens.Models;
using LinearLens.Reporting;

namespace LinearLens.Cli.Commands;

/// <summary>`linearlens steer`: greedy generation steered toward a concept text by its detached-Jacobian operator.</summary>
static class SteerCommand
{
    static readonly double[] DefaultSweep = [0, 0.25, 0.5, 1];

    public static Command Create(TextWriter stdout, TextWriter stderr, Func<HubOptions> hub)
    {
        var input = new ModelInput(hub, stderr);
        var concept = new Option<string>("--concept") { Description = "Concept text to steer toward (tokenized like --text)" };
        var conceptIds = new Option<string>("--concept-token-ids") { Description = "Concept token ids instead of text, e.g. 1,403,407" };
        var layer = new Option<int?>("--layer") { Description = "Layer l of the concept operator J^c (1 … num_layers; default ⌊2·num_layers/3⌋)" };
        var lambda = new Option<double?>("--lambda") { Description = "Steering strength λ ≥ 0: each added vector has norm (λ/2)·‖hᵢ‖" };
        var sweep = new Option<string>("--lambda-sweep") { Description = "Several λ, e.g. 0,0.25,0.5,1 (the default when --lambda is not given)" };
        var maxNew = new Option<int>("--max-new-tokens") { Description = "How many tokens to generate (greedy)", DefaultValueFactory = _ => 24 };
        var alignment = new Option<string>("--alignment") { Description = "consistent: add to the stream after l layers (the one J^c describes); reference: after l−1 layers, as the reference code", DefaultValueFactory = _ => "consistent" };
        var ignoreEos = new Option<bool>("--ignore-eos") { Description = "Keep generating past an end-of-sequence token" };
        var json = new Option<bool>("--json") { Description = "Print one JSON object on stdout" };
        var detach = ModelInput.DetachOption();
        var method = new Option<string>("--method") { Description = "full (form J^c, d·T_c·d numbers), matrix-free (every injected vector by batched JVPs of the concept's frozen map) or auto (full up to 256 MB)", DefaultValueFactory = _ => "auto" };
        var cmd = new Command("steer", "Greedy generation steered toward a concept by its detached Jacobian J^c (cumulative, after --layer layers)");
        input.AddTo(cmd);
        cmd.Options.Add(concept); cmd.Options.Add(conceptIds); cmd.Options.Add(layer); cmd.Options.Add(lambda); cmd.Options.Add(sweep);
        cmd.Options.Add(maxNew); cmd.Options.Add(alignment); cmd.Options.Add(ignoreEos); cmd.Options.Add(json); cmd.Options.Add(detach); cmd.Options.Add(method);
        cmd.SetAction(p =>
        {
            // Cheap checks of the options first, before any file is opened.
            var lambdas = Lambdas(p.GetValue(lambda), p.GetValue(sweep));
            var align = p.GetValue(alignment) switch
            {
                "consistent" => SteeringAlignment.Consistent,
                "reference" => SteeringAlignment.Reference,
                var s => throw new LinearLensException($"--alignment '{s}' is not an alignment; use consistent (after l layers) or reference (after l−1 layers)"),
            };
            int max = p.GetValue(maxNew);
            if (max < 0) throw new LinearLensException($"--max-new-tokens must be ≥ 0 (got {max})");
            // options that would be silently ignored: say so rather than let a user think they changed the result
            if (max == 0 && new Option[] { ignoreEos, lambda, sweep, alignment }.FirstOrDefault(o => p.GetResult(o) is { Implicit: false }) is { } unused)
                throw new LinearLensException($"{unused.Name} has no effect with --max-new-tokens 0 (nothing is generated, so nothing is steered): drop one of them");
            if (lambdas.All(x => x == 0) && p.GetResult(alignment) is { Implicit: false })
                throw new LinearLensException("--alignment chooses where the steering vector is added, and λ = 0 adds none: drop --alignment, or give a λ > 0");
            bool f64 = input.IsFloat64(p);
            using var ckpt = input.Open(p);
            var cids = ConceptIds(p.GetValue(concept), p.GetValue(conceptIds), ckpt);
            var ids = input.Ids(p, ckpt);
            int L = ckpt.Config.NumLayers;
            int l = p.GetValue(layer) ?? SteeringOperator<double>.DefaultLayer(L);
            if (l < 1 || l > L) throw new LinearLensException($"--layer {l} is outside 1…{L} (the layer whose output the concept operator describes); pick one in range");
            bool? form = p.GetValue(method) switch
            {
                "full" => true, "matrix-free" => false, "auto" => null,
                var s => throw new LinearLensException($"--method '{s}' is not a method; use full, matrix-free or auto"),
            };
            var o = new Options(cids, ids, l, lambdas, max, align, !p.GetValue(ignoreEos), p.GetValue(json), ModelInput.ParseDetach(p.GetValue(detach)), form);
            return f64 ? Run<double>(ckpt, o, stdout, stderr) : Run<float>(ckpt, o, stdout, stderr);
        });
        return cmd;
    }

    sealed record Options(int[] ConceptIds, int[] Ids, int Layer, double[] Lambdas, int MaxNew, SteeringAlignment Alignment, bool StopAtEos, bool Json,
        Models.DetachPolicy Detach, bool? Form);

    static double[] Lambdas(double? lambda, string? sweep)
    {
        if (lambda is not null && sweep is not null) throw new LinearLensException("give either --lambda or --lambda-sweep, not both");
        if (lambda is double l) { CheckLambda(l, "--lambda"); return [l]; }
        if (sweep is null) return DefaultSweep;
        var parts = sweep.Split(',', StringSplitOptions.TrimEntries);
        if (parts.All(s => s.Length == 0)) throw new LinearLensException("--lambda-sweep is empty; give values like 0,0.25,0.5,1");
        var result = new double[parts.Length];
        for (int i = 0; i < parts.Length; i++)
        {
            if (!double.TryParse(parts[i], NumberStyles.Float, CultureInfo.InvariantCulture, out result[i]))
                throw new LinearLensException($"--lambda-sweep: '{parts[i]}' (item {i + 1}) is not a number; give values like 0,0.25,0.5,1");
            CheckLambda(result[i], "--lambda-sweep");
        }
        return result;
    }

    static void CheckLambda(double l, string option)
    {
        if (!double.IsFinite(l) || l < 0)
            throw new LinearLensException($"{option}: λ = {l.ToString(CultureInfo.InvariantCulture)} is not allowed; the steering strength must be a finite number ≥ 0");
    }

    /// <summary>The concept: --concept through the tokenizer or --concept-token-ids as given, exactly one of the two.</summary>
    static int[] ConceptIds(string? text, string? ids, Checkpoint ckpt)
    {
        if (text is not null && ids is not null) throw new LinearLensException("give either --concept or --concept-token-ids, not both");
        if (ids is not null)
        {
            try { return ModelInput.ParseIds(ids); }
            catch (LinearLensException e) { throw new LinearLensException(e.Message.Replace("--token-ids", "--concept-token-ids")); }
        }
        if (text is null) throw new LinearLensException("no concept: give --concept \"…\" or --concept-token-ids 1,2,3");
        if (text.Length == 0) throw new LinearLensException("--concept is empty; give the text to steer toward");
        var result = ModelInput.Encode(ckpt, text, "--concept");
        if (result.Length == 0) throw new LinearLensException("--concept encodes to no tokens; give the text to steer toward");
        return result;
    }

    static int Run<T>(Checkpoint ckpt, Options o, TextWriter stdout, TextWriter stderr) where T : unmanaged, IFloatingPointIeee754<T>
    {
        int e = System.Runtime.CompilerServices.Unsafe.SizeOf<T>();
        long d = ckpt.Config.HiddenSize;
        bool formed = o.Form ?? d * o.ConceptIds.Length * d * e <= SteeringOperator<T>.FormedBudgetBytes;
        Checks.Memory(ckpt.Config, new RunShape { Tokens = o.ConceptIds.Length, ElementSize = e, Trace = true, FullJacobians = formed ? 1 : 0 });
        Checks.Memory(ckpt.Config, new RunShape { Tokens = o.Ids.Length, NewTokens = o.MaxNew, ElementSize = e });
        var model = new Transformer<T>(ckpt);
        foreach (int id in o.ConceptIds)
            if ((uint)id >= (uint)ckpt.Config.VocabSize)
                throw new LinearLensException($"--concept-token-ids: token id {id} is outside the vocabulary 0…{ckpt.Config.VocabSize - 1}");
        model.Validate(o.Ids, o.MaxNew);
        var report = Progress.Run(stderr, "concept operator", progress =>
            SteeringReport.Run(model, o.ConceptIds, o.Ids, o.Layer, o.Lambdas, o.MaxNew, o.Alignment, o.StopAtEos, o.Detach, o.Form, progress));
        if (o.Json) { stdout.WriteLine(CommandJson.Write(report.ToJson())); return 0; }
        var tok = ckpt.Tokenizer;
        string concept = tok?.Decode(o.ConceptIds) ?? string.Join(",", o.ConceptIds);
        string prompt = tok?.Decode(o.Ids) ?? string.Join(",", o.Ids);
        stdout.WriteLine($"{report.ModelType}, {report.DType}; concept {JacobianCommand.Quote(concept)} ({report.ConceptIds.Length} tokens), J^c after {o.Layer} of {report.NumLayers} layers; {o.Alignment.ToString().ToLowerInvariant()} alignment: added after {report.InjectAfterLayers} layers");
        stdout.WriteLine("concept log-prob = mean over generated steps of the mean log softmax at the concept's distinct non-BOS/EOS ids");
        foreach (var run in report.Runs)
        {
            string cont = run.Text ?? string.Join(",", run.Result.NewIds);
            stdout.WriteLine($"λ = {run.Result.Lambda.ToString("G4", CultureInfo.InvariantCulture),-6} concept log-prob {Fmt(run.Result.MeanConceptLogProb),8}  {JacobianCommand.Quote(prompt + " ⟶ " + cont)}");
        }
        return 0;
    }

    static string Fmt(double v) => double.IsNaN(v) ? "n/a" : v.ToString("F3", CultureInfo.InvariantCulture);
}
