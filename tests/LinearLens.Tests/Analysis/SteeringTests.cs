using System.Text.Json;
using LinearLens.Analysis;
using LinearLens.Linearization;
using LinearLens.Loading;
using LinearLens.Models;
using LinearLens.Tests.Linearization;
using LinearLens.Tests.Support;

namespace LinearLens.Tests.Analysis;

/// <summary>Steering with the concept operator J^c: λ = 0 is plain greedy, every added vector has norm (λ/2)‖hᵢ‖ at the alignment's layer, and on stories260K the concept's tokens gain probability as λ grows.</summary>
public class SteeringTests
{
    static readonly int[] Prompt = [1, 5, 9, 22, 7];
    static readonly int[] Concept = [1, 40, 41, 17];

    // ---- λ = 0 ------------------------------------------------------------------------------------------------

    [Theory]
    [InlineData("tiny-llama", SteeringAlignment.Consistent)]
    [InlineData("tiny-llama", SteeringAlignment.Reference)]
    [InlineData("tiny-gemma3", SteeringAlignment.Consistent)]
    [InlineData("tiny-gemma3", SteeringAlignment.Reference)]
    public void LambdaZeroIsPlainGreedy(string preset, SteeringAlignment alignment)
    {
        using var tmp = new TempCheckpoint(preset);
        var model = new Transformer<double>(tmp.Checkpoint);
        var op = SteeringOperator<double>.Build(model, Concept, model.Config.NumLayers);
        var g = Generator.Greedy(model, Prompt, 12, stopAtEos: false);
        var s = Steering.Generate(model, op, Prompt, 0, 12, alignment, stopAtEos: false);
        Assert.Equal(g.NewIds, s.NewIds.ToArray());
        Assert.Equal(g.LogProbs, s.LogProbs.ToArray());
        Assert.Empty(s.InjectionNorms);
    }

    [SharedFact("models", "stories260K", "hf", "model.safetensors")]
    public void Stories260KLambdaZeroIsPlainGreedyForBothAlignments()
    {
        using var ckpt = Checkpoint.Open(SharedData.Stories260K);
        var model = new Transformer<double>(ckpt);
        var tok = ckpt.RequireTokenizer();
        var ids = tok.Encode("Lily went to the park. She saw a big");
        var op = SteeringOperator<double>.Build(model, tok.Encode("flower"), 3);
        var g = Generator.Greedy(model, ids, 24);
        foreach (var a in new[] { SteeringAlignment.Consistent, SteeringAlignment.Reference })
            Assert.Equal(g.NewIds, Steering.Generate(model, op, ids, 0, 24, a).NewIds.ToArray());
    }

    // ---- the injection itself -----------------------------------------------------------------------------------

    /// <summary>aᵢ = Σ_{k≤i} J^c_{k mod T_c} e_k straight from the [d, T_c, d] Jacobian, naive loops.</summary>
    static double[][] SteeringVectors(JacobianResult<double> jc, double[] embeddings, int positions)
    {
        int d = jc.Hidden, tc = jc.Tokens;
        var a = new double[positions][];
        var sum = new double[d];
        for (int p = 0; p < positions; p++)
        {
            for (int k = 0; k < d; k++)
                for (int j = 0; j < d; j++)
                    sum[k] += jc.At(k, p % tc, j) * embeddings[p * d + j];
            a[p] = (double[])sum.Clone();
        }
        return a;
    }

    static double Norm(ReadOnlySpan<double> v)
    {
        double s = 0;
        foreach (var x in v) s += x * x;
        return Math.Sqrt(s);
    }

    /// <summary>A hand-written hook: after `afterLayers` layers add (λ/2)‖hᵢ‖·aᵢ/‖aᵢ‖ at every absolute position.</summary>
    static ResidualHook<double> ManualHook(int afterLayers, double[][] a, double lambda, List<double> hNorms) =>
        (layersDone, h, rows, startPos) =>
        {
            if (layersDone != afterLayers) return;
            int d = a[0].Length;
            for (int r = 0; r < rows; r++)
            {
                var row = h.AsSpan(r * d, d);
                var v = a[startPos + r];
                double hn = Norm(row), an = Norm(v);
                hNorms.Add(hn);
                for (int k = 0; k < d; k++) row[k] += lambda / 2 * hn / an * v[k];
            }
        };

    [Theory]
    [InlineData("tiny-llama", 1, SteeringAlignment.Consistent)]
    [InlineData("tiny-llama", 2, SteeringAlignment.Consistent)]
    [InlineData("tiny-llama", 2, SteeringAlignment.Reference)]
    [InlineData("tiny-gemma3", 2, SteeringAlignment.Consistent)]
    [InlineData("tiny-gemma3", 3, SteeringAlignment.Reference)]
    public void InjectionHasNormHalfLambdaTimesResidualAtTheAlignmentsLayer(string preset, int layer, SteeringAlignment alignment)
    {
        using var tmp = new TempCheckpoint(preset);
        var model = new Transformer<double>(tmp.Checkpoint);
        const double lambda = 0.8;
        const int maxNew = 8;
        var op = SteeringOperator<double>.Build(model, Concept, layer);
        var s = Steering.Generate(model, op, Prompt, lambda, maxNew, alignment, stopAtEos: false);
        int expectedLayer = alignment == SteeringAlignment.Consistent ? layer : layer - 1;
        Assert.Equal(expectedLayer, s.InjectAfterLayers);

        // Every position run (prompt + all generated tokens but the last) got a vector of norm exactly (λ/2)‖hᵢ‖.
        int positions = Prompt.Length + maxNew - 1;
        Assert.Equal(positions, s.ResidualNorms.Length);
        Assert.Equal(positions, s.InjectionNorms.Length);
        for (int i = 0; i < positions; i++)
            Assert.Equal(lambda / 2 * s.ResidualNorms[i], s.InjectionNorms[i], 1e-12 * s.ResidualNorms[i]);

        // An independent hook at that layer, with aᵢ from the Jacobian as documented, reproduces the run exactly …
        var jc = DetachedJacobian.Compute(new FrozenMap<double>(model, model.Forward(Concept, trace: true).Trace!),
            new JacobianTarget(layer, OutputKey.Layer, JacobianMode.Cumulative, FinalNorm: true));
        int[] all = [.. Prompt, .. s.NewIds];
        var a = SteeringVectors(jc, model.Embed(all), all.Length);
        var hNorms = new List<double>();
        var manual = Generator.Greedy(model, Prompt, maxNew, stopAtEos: false, hook: ManualHook(expectedLayer, a, lambda, hNorms));
        Assert.Equal(s.NewIds.ToArray(), manual.NewIds);
        for (int i = 0; i < maxNew; i++) Assert.Equal(manual.LogProbs[i], s.LogProbs[i], 1e-10);
        for (int i = 0; i < positions; i++) Assert.Equal(hNorms[i], s.ResidualNorms[i], 1e-10 * hNorms[i]);

        // … and the same hook one layer off does not.
        int other = alignment == SteeringAlignment.Consistent ? layer - 1 : layer;
        if (other >= 1)
        {
            var wrong = Generator.Greedy(model, Prompt, maxNew, stopAtEos: false, hook: ManualHook(other, a, lambda, []));
            Assert.True(Math.Abs(wrong.LogProbs[0] - s.LogProbs[0]) > 1e-6, "injecting one layer off should change the output");
        }
    }

    [Fact]
    public void ReferenceAlignmentAtLayerOneShiftsTheEmbeddings()
    {
        using var tmp = new TempCheckpoint("tiny-llama");
        var model = new Transformer<double>(tmp.Checkpoint);
        const double lambda = 1.5;
        var op = SteeringOperator<double>.Build(model, Concept, 1);
        var s = Steering.Generate(model, op, Prompt, lambda, 1, SteeringAlignment.Reference, stopAtEos: false);
        Assert.Equal(0, s.InjectAfterLayers);

        var jc = DetachedJacobian.Compute(new FrozenMap<double>(model, model.Forward(Concept, trace: true).Trace!), new JacobianTarget(1));
        var x = model.Embed(Prompt);
        var a = SteeringVectors(jc, x, Prompt.Length);
        int d = model.Hidden;
        for (int i = 0; i < Prompt.Length; i++)
        {
            double xn = Norm(x.AsSpan(i * d, d)), an = Norm(a[i]);
            for (int k = 0; k < d; k++) x[i * d + k] += lambda / 2 * xn / an * a[i][k];
        }
        var logits = model.ForwardEmbeddings(x, Prompt.Length).Logits;
        int next = Generator.ArgMax<double>(logits);
        Assert.Equal(next, s.NewIds[0]);
        Assert.Equal(Generator.LogSoftmaxAt<double>(logits, next), s.LogProbs[0], 1e-12);
    }

    [Fact]
    public void InjectorHookWorksWithGeneratorGreedyOnThePrompt()
    {
        // The public injector composes with any loop: prepare the rows' embeddings, then run with its hook.
        using var tmp = new TempCheckpoint("tiny-llama");
        var model = new Transformer<double>(tmp.Checkpoint);
        var op = SteeringOperator<double>.Build(model, Concept, 2);
        var inj = new SteeringInjector<double>(op, 0.6, SteeringAlignment.Consistent);
        inj.Prepare(model.Embed(Prompt), Prompt.Length, 0);
        var g = Generator.Greedy(model, Prompt, 1, stopAtEos: false, hook: inj.Hook);
        var s = Steering.Generate(model, op, Prompt, 0.6, 1, SteeringAlignment.Consistent, stopAtEos: false);
        Assert.Equal(s.NewIds.ToArray(), g.NewIds);
        Assert.Equal(s.LogProbs[0], g.LogProbs[0], 1e-12);
    }

    [Fact]
    public void ConceptScoreIsTheMeanLogSoftmaxOverDistinctNonSpecialIds()
    {
        using var tmp = new TempCheckpoint("tiny-llama");
        var model = new Transformer<double>(tmp.Checkpoint);
        int[] concept = [.. (model.Config.BosTokenId is int b ? new[] { b } : []), 40, 41, 40, .. model.Config.EosTokenIds];
        var scored = Steering.ScoredConceptIds(model.Config, concept);
        Assert.Equal([40, 41], scored.ToArray());
        var op = SteeringOperator<double>.Build(model, concept, 2);
        var s = Steering.Generate(model, op, Prompt, 0, 1, stopAtEos: false);
        var logits = model.Forward(Prompt).Logits;
        double expected = (Generator.LogSoftmaxAt<double>(logits, 40) + Generator.LogSoftmaxAt<double>(logits, 41)) / 2;
        Assert.Equal(expected, s.ConceptLogProbs[0], 1e-12);
        Assert.Equal(expected, s.MeanConceptLogProb, 1e-12);
    }

    [Fact]
    public void BadArgumentsAreLinearLensExceptions()
    {
        using var tmp = new TempCheckpoint("tiny-llama");
        var model = new Transformer<double>(tmp.Checkpoint);
        Assert.Contains("no tokens", Assert.Throws<LinearLensException>(() => SteeringOperator<double>.Build(model, [], 1)).Message);
        Assert.Contains("--layer 3 is outside", Assert.Throws<LinearLensException>(() => SteeringOperator<double>.Build(model, Concept, 3)).Message);
        var op = SteeringOperator<double>.Build(model, Concept, 1);
        Assert.Contains("≥ 0", Assert.Throws<LinearLensException>(() => Steering.Generate(model, op, Prompt, -0.5, 4)).Message);
        Assert.Contains("≥ 0", Assert.Throws<LinearLensException>(() => Steering.Generate(model, op, Prompt, double.NaN, 4)).Message);
    }

    [Theory]
    [InlineData("tiny-llama", SteeringAlignment.Consistent)]
    [InlineData("tiny-qwen2", SteeringAlignment.Consistent)]   // affine: aᵢ includes c
    [InlineData("tiny-gemma3", SteeringAlignment.Reference)]
    public void MatrixFreeOperatorSteersLikeTheFormedOne(string preset, SteeringAlignment alignment)
    {
        using var tmp = new TempCheckpoint(preset);
        var model = new Transformer<double>(tmp.Checkpoint);
        int[] concept = [7, 31, 4, 59], prompt = [1, 12, 40, 8, 77];
        var formed = SteeringOperator<double>.Build(model, concept, 2, form: true);
        var free = SteeringOperator<double>.Build(model, concept, 2, form: false);
        Assert.True(formed.IsFormed);
        Assert.False(free.IsFormed);
        Assert.True(free.ReconstructionError < 1e-13 && formed.ReconstructionError < 1e-13);
        foreach (double lambda in new[] { 0.0, 0.7, 2.0 })
        {
            var a = Steering.Generate(model, formed, prompt, lambda, 6, alignment, stopAtEos: false);
            var b = Steering.Generate(model, free, prompt, lambda, 6, alignment, stopAtEos: false);
            Assert.Equal(a.NewIds.ToArray(), b.NewIds.ToArray());
            for (int i = 0; i < a.LogProbs.Length; i++) Assert.True(Math.Abs(a.LogProbs[i] - b.LogProbs[i]) <= 1e-12, $"λ {lambda} step {i}");
            for (int i = 0; i < a.InjectionNorms.Length; i++)
                Assert.True(Math.Abs(a.InjectionNorms[i] - b.InjectionNorms[i]) <= 1e-12 * Math.Max(1, a.InjectionNorms[i]), $"λ {lambda} injection {i}");
        }
        // the matrix-free product of one row equals the formed slice J^c_{p mod T_c} · e
        var e = Enumerable.Range(0, model.Hidden).Select(k => Math.Sin(k + 1.0)).ToArray();
        var ya = new double[model.Hidden]; var yb = new double[model.Hidden];
        formed.AccumulateInto(6, e, ya); free.AccumulateInto(6, e, yb);
        for (int k = 0; k < ya.Length; k++) Assert.True(Math.Abs(ya[k] - yb[k]) <= 1e-12 * Math.Max(1, Math.Abs(ya[k])));
    }

    // ---- stories260K: the concept gains probability -------------------------------------------------------------

    [SharedTheory("models", "stories260K", "hf", "model.safetensors")]
    [InlineData(SteeringAlignment.Consistent)]
    [InlineData(SteeringAlignment.Reference)]
    public void Stories260KSteeringTowardFlowerRaisesItsLogProbability(SteeringAlignment alignment)
    {
        using var ckpt = Checkpoint.Open(SharedData.Stories260K);
        var model = new Transformer<double>(ckpt);
        var tok = ckpt.RequireTokenizer();
        var op = SteeringOperator<double>.Build(model, tok.Encode("flower"), 3);
        Assert.True(op.ReconstructionError < 1e-12);
        var results = Steering.Sweep(model, op, tok.Encode("The girl was happy because"), [0, 0.5, 1, 2], 24, alignment);
        // Measured (float64, consistent): −13.67, −11.60, −9.64, −7.34; reference: −13.67, −11.49, −9.79, −6.89.
        for (int i = 1; i < results.Count; i++)
            Assert.True(results[i].MeanConceptLogProb > results[i - 1].MeanConceptLogProb + 0.5,
                $"λ = {results[i].Lambda}: concept log-prob {results[i].MeanConceptLogProb:F3} is not above λ = {results[i - 1].Lambda}'s {results[i - 1].MeanConceptLogProb:F3} by 0.5");
        Assert.True(results[^1].MeanConceptLogProb > results[0].MeanConceptLogProb + 4);
        if (alignment == SteeringAlignment.Consistent)   // −13.79, −10.96, −8.43, −5.87 right after the prompt
            for (int i = 1; i < results.Count; i++)
                Assert.True(results[i].FirstConceptLogProb > results[i - 1].FirstConceptLogProb + 1);
    }

    // ---- the command line -----------------------------------------------------------------------------------------

    [Fact]
    public void CliJsonHoldsOneResultPerLambdaAndLambdaZeroIsGenerate()
    {
        using var tmp = new TempCheckpoint("tiny-llama");
        var r = CliRunner.Run("steer", "--model", tmp.Folder, "--concept-token-ids", "1,40,41,17", "--token-ids", "1,5,9,22,7",
            "--lambda-sweep", "0,0.5,1", "--max-new-tokens", "6", "--layer", "2", "--alignment", "reference", "--ignore-eos", "--json");
        Assert.Equal(0, r.ExitCode);
        using var doc = JsonDocument.Parse(r.Stdout);
        var o = doc.RootElement;
        Assert.Equal("llama", o.GetProperty("model_type").GetString());
        Assert.Equal("float64", o.GetProperty("dtype").GetString());
        Assert.Equal(2, o.GetProperty("layer").GetInt32());
        Assert.Equal("reference", o.GetProperty("alignment").GetString());
        Assert.Equal(1, o.GetProperty("inject_after_layers").GetInt32());
        Assert.Equal("1,40,41,17", string.Join(",", o.GetProperty("concept_ids").EnumerateArray().Select(e => e.GetInt32())));
        Assert.Equal("64,4,64", string.Join(",", o.GetProperty("operator_shape").EnumerateArray().Select(e => e.GetInt32())));
        Assert.True(o.GetProperty("operator_relative_error").GetDouble() < 1e-12);
        var results = o.GetProperty("results");
        Assert.Equal(3, results.GetArrayLength());
        Assert.Equal([0, 0.5, 1], results.EnumerateArray().Select(e => e.GetProperty("lambda").GetDouble()).ToArray());
        foreach (var e in results.EnumerateArray())
        {
            Assert.Equal(6, e.GetProperty("output_ids").GetArrayLength());
            Assert.Equal(6, e.GetProperty("tokens").GetArrayLength());
            Assert.Equal(6, e.GetProperty("logprobs").GetArrayLength());
            Assert.Equal(6, e.GetProperty("concept_logprob_per_step").GetArrayLength());
            double mean = e.GetProperty("concept_logprob_per_step").EnumerateArray().Average(v => v.GetDouble());
            Assert.Equal(mean, e.GetProperty("concept_logprob_mean").GetDouble(), 1e-12);
            Assert.True(e.TryGetProperty("concept_logprob_first", out _));
            Assert.True(e.TryGetProperty("concept_token_hits", out _));
            Assert.True(e.TryGetProperty("text", out _));
        }
        var gen = CliRunner.Run("generate", "--model", tmp.Folder, "--token-ids", "1,5,9,22,7", "--max-new-tokens", "6", "--ignore-eos", "--json");
        using var g = JsonDocument.Parse(gen.Stdout);
        Assert.Equal(g.RootElement.GetProperty("output_ids").GetRawText(), results[0].GetProperty("output_ids").GetRawText());
    }

    [SharedFact("models", "stories260K", "hf", "model.safetensors")]
    public void CliStories260KTextInputAndDefaults()
    {
        var r = CliRunner.Run("steer", "--model", SharedData.Stories260K, "--concept", "flower", "--text", "Once upon a time", "--lambda", "1", "--json");
        Assert.Equal(0, r.ExitCode);
        using var doc = JsonDocument.Parse(r.Stdout);
        var o = doc.RootElement;
        Assert.Equal(3, o.GetProperty("layer").GetInt32());   // ⌊2·5/3⌋
        Assert.Equal("consistent", o.GetProperty("alignment").GetString());
        Assert.Equal(3, o.GetProperty("inject_after_layers").GetInt32());
        var res = Assert.Single(o.GetProperty("results").EnumerateArray());
        Assert.Equal(24, res.GetProperty("output_ids").GetArrayLength());
        Assert.False(string.IsNullOrEmpty(res.GetProperty("text").GetString()));
    }

    [Theory]
    [InlineData("give either --lambda or --lambda-sweep", "--lambda", "0.5", "--lambda-sweep", "0,1")]
    [InlineData("--lambda: λ = -1 is not allowed", "--lambda", "-1")]
    [InlineData("--lambda-sweep: λ = -0.5 is not allowed", "--lambda-sweep", "0,-0.5")]
    [InlineData("--lambda-sweep: 'x' (item 2) is not a number", "--lambda-sweep", "0,x")]
    [InlineData("--layer 3 is outside 1…2", "--layer", "3")]
    [InlineData("--layer 0 is outside 1…2", "--layer", "0")]
    [InlineData("--alignment 'early'", "--alignment", "early")]
    [InlineData("--concept-token-ids is empty", "--concept-token-ids", "")]
    [InlineData("--concept-token-ids: 'a'", "--concept-token-ids", "1,a")]
    [InlineData("--concept-token-ids: token id 500 is outside the vocabulary", "--concept-token-ids", "1,500")]
    [InlineData("give either --concept or --concept-token-ids", "--concept-token-ids", "1,2", "--concept", "cat")]
    [InlineData("no concept", "--lambda", "1")]
    public void CliBadOptionsAreOneLineErrors(string message, params string[] extra)
    {
        using var tmp = new TempCheckpoint("tiny-llama");
        string[] args = ["steer", "--model", tmp.Folder, "--token-ids", "1,5,9", "--max-new-tokens", "2", .. extra];
        if (!extra.Contains("--concept-token-ids") && !extra.Contains("--concept") && message != "no concept")
            args = [.. args, "--concept-token-ids", "1,40"];
        var r = CliRunner.Run(args);
        Assert.Equal(2, r.ExitCode);
        var lines = r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Single(lines);
        Assert.StartsWith("error: ", lines[0]);
        Assert.Contains(message, lines[0]);
        Assert.Equal("", r.Stdout);
    }

    [SharedFact("models", "stories260K", "hf", "model.safetensors")]
    public void CliEmptyConceptTextIsAnError()
    {
        var r = CliRunner.Run("steer", "--model", SharedData.Stories260K, "--concept", "", "--text", "Once upon a time");
        Assert.Equal(2, r.ExitCode);
        Assert.Contains("--concept is empty", r.Stderr);
    }
}
