using System.Text.Json;
using LinearLens.Analysis;
using LinearLens.Linearization;
using LinearLens.Loading;
using LinearLens.Models;
using LinearLens.Tests.Linearization;
using LinearLens.Tests.Support;

namespace LinearLens.Tests.Analysis;

public class AnalysisTests
{
    static readonly int[] Ids = [1, 5, 9, 22, 7, 3, 50, 11];

    [Fact]
    public void PlantedLowRankJacobianDecodesToThePlantedTokens()
    {
        // A tied checkpoint whose embedding rows 10, 20, 30 are 10·e₀, 10·e₁, 10·e₂: a matrix Σ σₖ eₖ eₖᵀ has those
        // rows as its singular vectors, so U by logit and V by cosine must both name exactly tokens 10, 20, 30.
        using var tmp = new TempCheckpoint("tiny-qwen3");
        string folder = tmp.Folder + "-planted";
        Directory.CreateDirectory(folder);
        try
        {
            var spec = RandomCheckpointSpec.Preset("tiny-qwen3");
            var w = RandomCheckpoint.Write(folder, spec, seed: 3);
            int d = spec.Hidden;
            int[] planted = [10, 20, 30];
            var tensors = w.Tensors.Select(kv =>
            {
                var values = (double[])kv.Value.Values!.Clone();
                if (kv.Key == "model.embed_tokens.weight")
                    for (int k = 0; k < planted.Length; k++)
                    {
                        Array.Clear(values, planted[k] * d, d);
                        values[planted[k] * d + k] = 10;
                    }
                return (kv.Key, LinearLens.Numerics.DType.F32, kv.Value.Shape, LinearLens.Loading.SafetensorsWriter.Encode(values, LinearLens.Numerics.DType.F32));
            }).ToList();
            LinearLens.Loading.SafetensorsWriter.Write(Path.Combine(folder, "model.safetensors"), tensors);
            using var ckpt = Checkpoint.Open(folder);
            var decoder = new TokenDecoder(ckpt);
            var sigma = new[] { 5.0, 3.0, 2.0 };
            var m = new double[d * d];
            for (int k = 0; k < 3; k++) m[k * d + k] = sigma[k];
            var t = Svd.Dense(m, d, d, 3);
            var y = new double[d]; y[0] = 1; y[1] = 1; y[2] = 1;
            var s = Spectra.Decode("planted", t, Spectra.FrobeniusSquared(m), y, decoder, 3, decodeRight: true);
            for (int k = 0; k < 3; k++)
            {
                Assert.Equal(sigma[k], s.SingularValues[k], 1e-12);
                Assert.Equal(planted[k], s.Components[k].Left[0].Id);
                Assert.Equal(planted[k], s.Components[k].Right![0].Id);
                Assert.Equal(1.0, s.Components[k].Right![0].Score, 1e-12);
                Assert.Equal(1, s.Components[k].Sign);
            }
        }
        finally { Directory.Delete(folder, true); }
    }

    [Theory]
    [InlineData("tiny-llama")]
    [InlineData("tiny-gemma3")]
    public void AttributionSumsToTheLogit(string preset)
    {
        using var tmp = new TempCheckpoint(preset);
        var model = new Transformer<double>(tmp.Checkpoint);
        var run = model.Forward(Ids, trace: true);
        var map = new FrozenMap<double>(model, run.Trace!);
        var c = Attribution.Contributions(map, JacobianTarget.Output(model.Config.NumLayers));
        var decoder = new TokenDecoder(tmp.Checkpoint);
        foreach (int token in new[] { Generator.ArgMax<double>(run.Logits), 0, 17, 100 })
        {
            var a = Attribution.ForToken(tmp.Checkpoint, c, map.Offset(JacobianTarget.Output(model.Config.NumLayers)), Ids.Length, token, run.Logits[token], decoder);
            Assert.True(a.SumError <= 1e-10 * Math.Max(1, Math.Abs(a.Logit)), $"token {token}: Σ {a.Sum} vs logit {a.Logit}");
            Assert.Equal(Ids.Length, a.Contributions.Length);
        }
    }

    [Fact]
    public void ContributionsFromOneJvpEqualJiXiFromTheFullJacobian()
    {
        using var tmp = new TempCheckpoint("tiny-qwen3");
        var model = new Transformer<double>(tmp.Checkpoint);
        var map = new FrozenMap<double>(model, model.Forward(Ids, trace: true).Trace!);
        var t = new JacobianTarget(1, OutputKey.Attn);
        var full = DetachedJacobian.Compute(map, t);
        var c = Attribution.Contributions(map, t);
        var (rel, _) = DetachedJacobian.Errors<double>(c, full.Contributions);
        Assert.True(rel < 1e-13, $"{rel:E2}");
    }

    [SharedFact("models", "stories260K", "hf", "model.safetensors")]
    public void Stories260KSingularValuesMatchDenseSvdAndVectorsAreOrthonormal()
    {
        using var ckpt = Checkpoint.Open(SharedData.Stories260K);
        var model = new Transformer<double>(ckpt);
        var ids = ckpt.RequireTokenizer().Encode("Lily went to the park. She saw a big");
        var J = DetachedJacobian.Compute(new FrozenMap<double>(model, model.Forward(ids, trace: true).Trace!), JacobianTarget.Output(5));
        int d = model.Hidden;
        var ji = Spectra.TokenMatrix(J, ids.Length - 1);
        var all = Svd.Dense(ji, d, d, d);
        // σ² are the eigenvalues of JᵢᵀJᵢ: check Σσ² = ‖Jᵢ‖_F² and each A vₖ = σₖ uₖ, Aᵀuₖ = σₖ vₖ.
        Assert.Equal(Spectra.FrobeniusSquared(ji), all.Values.Sum(v => v * v), 1e-10);
        for (int k = 0; k < 8; k++)
        {
            var u = all.Left(k).ToArray(); var v = all.Right(k).ToArray();
            for (int r = 0; r < d; r++)
            {
                double av = 0, atu = 0;
                for (int j = 0; j < d; j++) { av += ji[r * d + j] * v[j]; atu += ji[j * d + r] * u[j]; }
                Assert.True(Math.Abs(av - all.Values[k] * u[r]) <= 1e-10 * all.Values[0]);
                Assert.True(Math.Abs(atu - all.Values[k] * v[r]) <= 1e-10 * all.Values[0]);
            }
            for (int l = 0; l < 8; l++)
            {
                double uu = 0, vv = 0;
                for (int r = 0; r < d; r++) { uu += all.U[k * d + r] * all.U[l * d + r]; vv += all.V[k * d + r] * all.V[l * d + r]; }
                Assert.Equal(k == l ? 1 : 0, uu, 1e-12);
                Assert.Equal(k == l ? 1 : 0, vv, 1e-12);
            }
        }
        // The top-8 path gives the same values as the full decomposition.
        var top = Svd.Dense(ji, d, d, 8);
        for (int k = 0; k < 8; k++) Assert.True(Math.Abs(top.Values[k] - all.Values[k]) <= 1e-10 * all.Values[k]);
    }

    [Fact]
    public void MatrixFreeAnalysisAgreesWithTheFullOne()
    {
        using var tmp = new TempCheckpoint("tiny-gemma3");
        var model = new Transformer<double>(tmp.Checkpoint);
        var full = Analyzer.Run(model, Ids, new AnalysisOptions { Components = 3, Method = SvdMethod.Full });
        var free = Analyzer.Run(model, Ids, new AnalysisOptions { Components = 3, Method = SvdMethod.MatrixFree, Tolerance = 1e-10, FormOutputJacobian = false });
        Assert.Equal("full", full.Method);
        Assert.Equal("matrix-free", free.Method);
        Assert.True(free.RelativeError < 1e-13);
        void Same(Spectrum a, Spectrum b)
        {
            for (int k = 0; k < a.SingularValues.Length; k++)
                Assert.True(Math.Abs(a.SingularValues[k] - b.SingularValues[k]) <= 1e-8 * a.SingularValues[0], $"{a.Name} σ{k}: {a.SingularValues[k]} vs {b.SingularValues[k]}");
            Assert.InRange(b.FrobeniusSquared / a.FrobeniusSquared, 0.6, 1.4);   // Hutchinson estimate
        }
        Same(full.Combined, free.Combined);
        for (int i = 0; i < Ids.Length; i++) Same(full.PerToken[i], free.PerToken[i]);
        Assert.Equal(full.LayerSweep.Length, free.LayerSweep.Length);
        for (int j = 0; j < full.LayerSweep.Length; j++)
        {
            Same(full.LayerSweep[j].Spectrum, free.LayerSweep[j].Spectrum);
            Assert.True(free.LayerSweep[j].RelativeError < 1e-13);
        }
        var (heatErr, _) = DetachedJacobian.Errors<double>(free.HeatmapMatrix, full.HeatmapMatrix);
        Assert.True(heatErr < 1e-13, $"heat-map Jᵢ by JVPs differs from the full J by {heatErr:E2}");
        Assert.Equal(full.Attributions[0].Sum, free.Attributions[0].Sum, 1e-12);
    }

    [Fact]
    public void MatrixFreeAnalysisFormsTheOutputJacobianWhenThatIsCheaper()
    {
        // tiny-gemma3 (d = 64): all tokens' Lanczos runs would cost more than the 64 transpose products of the output's J,
        // so the matrix-free analysis forms it: exact per-token spectra, ‖Jᵢ‖_F and column/row norms; the sweep stays matrix-free.
        using var tmp = new TempCheckpoint("tiny-gemma3");
        var model = new Transformer<double>(tmp.Checkpoint);
        var full = Analyzer.Run(model, Ids, new AnalysisOptions { Components = 3, Method = SvdMethod.Full });
        var free = Analyzer.Run(model, Ids, new AnalysisOptions { Components = 3, Method = SvdMethod.MatrixFree });
        Assert.Equal("matrix-free", free.Method);
        Assert.Contains("output's J", free.MethodReason);
        for (int i = 0; i < Ids.Length; i++)
        {
            Assert.False(free.PerToken[i].FrobeniusEstimated);
            Assert.Equal(full.PerToken[i].FrobeniusSquared, free.PerToken[i].FrobeniusSquared, 1e-12);
            Assert.Equal(full.PerToken[i].SingularValues, free.PerToken[i].SingularValues);
            Assert.Equal(full.ColumnsAndRows[i].TopColumns, free.ColumnsAndRows[i].TopColumns);
        }
        Assert.Equal(full.HeatmapMatrix, free.HeatmapMatrix);
        // the sweep stays matrix-free, except its entry for the model output, which is the exact combined spectrum above
        int L = model.Config.NumLayers;
        static bool IsOutput(LayerSpectrum s, int L) => s.Layer == L && s.Key == OutputKey.Layer && s.Mode == JacobianMode.Cumulative;
        Assert.True(free.LayerSweep.Where(s => !IsOutput(s, L)).All(s => s.Spectrum.FrobeniusEstimated));
        var output = Assert.Single(free.LayerSweep, s => IsOutput(s, L));
        Assert.False(output.Spectrum.FrobeniusEstimated);
        Assert.Equal(free.Combined.SingularValues, output.Spectrum.SingularValues);
        Assert.Equal(full.LayerSweep.Single(s => IsOutput(s, L)).Spectrum.SingularValues, output.Spectrum.SingularValues);
    }

    [SharedFact("models", "stories260K", "hf", "model.safetensors")]
    public void AnalyzeWritesTheJsonAndEveryFigure()
    {
        string dir = Directory.CreateTempSubdirectory("ll-analyze").FullName;
        try
        {
            var r = CliRunner.Run("analyze", "--model", SharedData.Stories260K, "--text", "Lily went to the park. She saw a big", "--out", dir, "--attribute", "388");
            Assert.True(r.ExitCode == 0, r.Stderr);
            using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "analysis.json")));
            var o = doc.RootElement;
            Assert.True(o.GetProperty("reconstruction").GetProperty("relative_error").GetDouble() < 1e-13);
            Assert.Equal(14, o.GetProperty("per_token").GetArrayLength());
            Assert.Equal(5 * 6, o.GetProperty("layer_sweep").GetArrayLength());
            Assert.Equal(2, o.GetProperty("attribution").GetArrayLength());
            foreach (var a in o.GetProperty("attribution").EnumerateArray())
                Assert.True(a.GetProperty("sum_error").GetDouble() < 1e-10);
            foreach (var png in new[] { "jacobian_heatmap", "reconstruction", "singular_values", "column_norms", "layer_spectra_layer_cumulative",
                         "layer_spectra_attn_layerwise", "stable_rank", "path", "attribution" })
            {
                var f = new FileInfo(Path.Combine(dir, png + ".png"));
                Assert.True(f.Exists && f.Length > 10_000, $"{png}.png missing or empty");
            }
        }
        finally { Directory.Delete(dir, true); }
    }
}
