using System.Numerics;
using LinearLens.Linearization;
using LinearLens.Loading;
using LinearLens.Models;
using LinearLens.Tests.Support;
using static LinearLens.Tests.Support.Close;
using LinearLens.Tests.Linearization;

namespace LinearLens.Tests.Models;

/// <summary>
/// Every family through the one layer description: the engine against the independent <see cref="SpecDecoder"/>
/// (float64 ≤ 1e-12, float32 ≤ 1e-4), the detached J against finite differences of the frozen map and the adjoint
/// identity, and exact reconstruction y = Σᵢ Jᵢxᵢ (+ c with biases) ≤ 1e-13 for every layer, key and mode.
/// </summary>
public class FamilyTests
{
    public static TheoryData<string> NewFamilies => new()
    {
        "tiny-phi3", "tiny-phi4-mini", "tiny-phi3-plain", "tiny-olmo2", "tiny-mistral", "tiny-ministral", "tiny-qwen2", "tiny-llama-bias",
    };

    public static TheoryData<string> AllFamilies
    {
        get { var all = new TheoryData<string> { "tiny-llama", "tiny-qwen3", "tiny-gemma3" }; foreach (var f in NewFamilies) all.Add(f); return all; }
    }

    static int[] Tokens(int n, int seed) { var r = new Random(seed); return Enumerable.Range(0, n).Select(_ => r.Next(101)).ToArray(); }


    static IEnumerable<JacobianTarget> AllTargets(int layers) => DetachedJacobianTests.AllTargets(layers);

    /// <summary>Lengths on both sides of a longrope checkpoint's original_max_position_embeddings (6 for the tiny Phi presets).</summary>
    public static TheoryData<string, int> ForwardCases()
    {
        var data = new TheoryData<string, int>();
        foreach (var f in NewFamilies) data.Add(f, 9);
        data.Add("tiny-phi3", 5);
        data.Add("tiny-phi3", 6);
        data.Add("tiny-phi4-mini", 4);
        return data;
    }

    [Theory]
    [MemberData(nameof(ForwardCases))]
    public void EngineMatchesTheSpecDecoder(string preset, int n)
    {
        using var tmp = new ScratchFolder("family");
        var w = RandomCheckpoint.Write(tmp.Path, RandomCheckpointSpec.Preset(preset), seed: 21);
        int[] ids = Tokens(n, 3);
        var spec = SpecDecoder.Run(w, ids);
        using var ckpt = Checkpoint.Open(w.Folder);
        Check<double>(1e-12);
        Check<float>(1e-4);

        void Check<T>(double tol) where T : unmanaged, IFloatingPointIeee754<T>
        {
            var model = new Transformer<T>(ckpt);
            var r = model.Forward(ids, allLogits: true, trace: true);
            double eFinal = RelErr<T>(r.Final, spec.Final), eLogits = RelErr<T>(r.Logits, spec.Logits);
            Assert.True(eFinal <= tol && eLogits <= tol, $"{preset} n={n} {typeof(T).Name}: final {eFinal:E2}, logits {eLogits:E2}");
            for (int l = 0; l < ckpt.Config.NumLayers; l++)
            {
                double e = RelErr<T>(r.Trace!.ResidPre[l + 1], spec.LayerOutputs[l]);
                Assert.True(e <= tol, $"{preset} {typeof(T).Name}: residual after layer {l + 1} differs by {e:E2}");
            }
        }
    }

    [Theory]
    [MemberData(nameof(NewFamilies))]
    public void EveryTargetReconstructsWithin1e13(string preset)
    {
        using var tmp = new TempCheckpoint(preset);
        var model = new Transformer<double>(tmp.Checkpoint);
        int[] ids = Tokens(9, 4);
        var run = model.Forward(ids, trace: true);
        var map = new FrozenMap<double>(model, run.Trace!);
        foreach (var t in AllTargets(model.Config.NumLayers))
        {
            var r = DetachedJacobian.Compute(map, t);
            Assert.True(r.RelativeError <= 1e-13, $"{preset} {t.Describe()}: relative error {r.RelativeError:E2}");
            var (free, _) = DetachedJacobian.Errors<double>(map.Reconstruct(t), map.Output(t));
            Assert.True(free <= 1e-13, $"{preset} {t.Describe()}: JVP + offset reconstruction {free:E2}");
        }
        var y = map.Output(JacobianTarget.Output(model.Config.NumLayers));
        Assert.Equal(run.Final.AsSpan((ids.Length - 1) * model.Hidden, model.Hidden).ToArray(), y);
    }

    [Theory]
    [InlineData("tiny-qwen2")]
    [InlineData("tiny-llama-bias")]
    public void BiasedModelsAreAffineAndReconstructOnlyWithTheOffset(string preset)
    {
        using var tmp = new TempCheckpoint(preset);
        var model = new Transformer<double>(tmp.Checkpoint);
        var map = new FrozenMap<double>(model, model.Forward(Tokens(9, 5), trace: true).Trace!);
        Assert.True(map.IsAffine);
        var t = JacobianTarget.Output(model.Config.NumLayers);
        var r = DetachedJacobian.Compute(map, t);
        var linearOnly = new double[model.Hidden];
        for (int i = 0; i < r.Tokens; i++)
            for (int k = 0; k < model.Hidden; k++) linearOnly[k] += r.Contributions[i * model.Hidden + k];
        double without = DetachedJacobian.Errors<double>(linearOnly, r.Output).relative;
        Assert.True(r.RelativeError <= 1e-13, $"with c: {r.RelativeError:E2}");
        Assert.True(without > 1e-4, $"without c the reconstruction should fail, got {without:E2}");
        // c is the frozen map at zero input: a second route, the JVP being linear, is F̃(x) − J·x
        Assert.True(r.Offset.Any(v => v != 0));
    }

    [Theory]
    [MemberData(nameof(AllFamilies))]
    public void JacobianEqualsFiniteDifferencesOfTheFrozenMapAndTheAdjointHolds(string preset)
    {
        using var tmp = new TempCheckpoint(preset);
        var model = new Transformer<double>(tmp.Checkpoint);
        int[] ids = Tokens(9, 6);
        var map = new FrozenMap<double>(model, model.Forward(ids, trace: true).Trace!);
        int n = ids.Length, d = model.Hidden, L = model.Config.NumLayers;
        foreach (var t in new[] { JacobianTarget.Output(L), new JacobianTarget(L, OutputKey.Attn), new JacobianTarget(L, OutputKey.Mlp, JacobianMode.Layerwise) })
        {
            var r = DetachedJacobian.Compute(map, t);   // by VJPs
            var x = map.Input(t);
            foreach (var (i, j) in new[] { (0, 0), (3, 17), (n - 1, d - 1), (5, 40) })
            {
                const double eps = 1e-3;
                var plus = (double[])x.Clone(); plus[i * d + j] += eps;
                var minus = (double[])x.Clone(); minus[i * d + j] -= eps;
                var fp = new double[d]; var fm = new double[d];
                map.Jvp(t, plus, 1, fp); map.Jvp(t, minus, 1, fm);
                for (int k = 0; k < d; k++)
                {
                    double fd = (fp[k] - fm[k]) / (2 * eps);
                    Assert.True(Math.Abs(fd - r.At(k, i, j)) <= 1e-9 * Math.Max(1, Math.Abs(fd)), $"{preset} {t.Describe()} J[{k},{i},{j}] = {r.At(k, i, j)}, FD {fd}");
                }
            }
            var rng = new Random(9);
            var v = Enumerable.Range(0, n * d).Select(_ => rng.NextDouble() - 0.5).ToArray();
            var u = Enumerable.Range(0, d).Select(_ => rng.NextDouble() - 0.5).ToArray();
            var jv = new double[d]; var jtu = new double[n * d];
            map.Jvp(t, v, 1, jv); map.Vjp(t, u, 1, jtu);
            double lhs = jv.Zip(u, (a, b) => a * b).Sum(), rhs = v.Zip(jtu, (a, b) => a * b).Sum();
            Assert.True(Math.Abs(lhs - rhs) <= 1e-12 * Math.Max(1, Math.Abs(lhs)), $"{preset} {t.Describe()}: ⟨Jv,u⟩ {lhs} vs ⟨v,Jᵀu⟩ {rhs}");
        }
    }

    [Theory]
    [InlineData("tiny-phi3")]
    [InlineData("tiny-olmo2")]
    [InlineData("tiny-qwen2")]
    [InlineData("tiny-phi4-mini")]
    public void OrdinaryJacobianEqualsFiniteDifferencesOfTheRealForwardPass(string preset)
    {
        using var tmp = new TempCheckpoint(preset);
        var model = new Transformer<double>(tmp.Checkpoint);
        int[] ids = Tokens(8, 7);
        var run = model.Forward(ids, trace: true, nonlinear: true);
        var t = JacobianTarget.Output(model.Config.NumLayers);
        var J = new OrdinaryJacobian<double>(model, run.Trace!).Compute(t);
        int n = ids.Length, d = model.Hidden;
        var x = run.Trace!.Embeddings;
        // positions inside the receptive field of the last one (tiny-phi3's window of 4 over 2 layers does not reach 0)
        foreach (var (i, j) in new[] { (n - 5, 3), (n - 3, 20), (n - 1, 11) })
        {
            const double eps = 1e-5;
            var plus = (double[])x.Clone(); plus[i * d + j] += eps;
            var minus = (double[])x.Clone(); minus[i * d + j] -= eps;
            var yp = model.ForwardEmbeddings(plus, n).Final.AsSpan((n - 1) * d, d).ToArray();
            var ym = model.ForwardEmbeddings(minus, n).Final.AsSpan((n - 1) * d, d).ToArray();
            var fd = yp.Zip(ym, (a, b) => (a - b) / (2 * eps)).ToArray();
            var col = Enumerable.Range(0, d).Select(k => J.At(k, i, j)).ToArray();
            double rel = RelErr<double>(col, fd);
            Assert.True(rel <= 1e-6, $"{preset} column ({i},{j}): ordinary J vs finite differences {rel:E2}");
        }
    }

    [Fact]
    public void PhiWithoutScalingOrWindowEqualsTheSameWeightsSplitIntoALlamaFolder()
    {
        using var tmp = new ScratchFolder("phi-llama");
        var spec = RandomCheckpointSpec.Preset("tiny-phi3-plain");
        var phi = RandomCheckpoint.Write(tmp.Sub("phi"), spec, seed: 5, keepValues: false);
        var llama = RandomCheckpoint.WriteLlamaSplitOfPhi3(tmp.Sub("llama"), spec, seed: 5);
        using var a = Checkpoint.Open(phi.Folder);
        using var b = Checkpoint.Open(llama.Folder);
        Assert.Equal("phi3", a.Config.ModelType);
        Assert.Equal("llama", b.Config.ModelType);
        int[] ids = Tokens(9, 8);
        var ma = new Transformer<double>(a); var mb = new Transformer<double>(b);
        var ra = ma.Forward(ids, allLogits: true, trace: true); var rb = mb.Forward(ids, allLogits: true, trace: true);
        Assert.Equal(rb.Logits, ra.Logits);
        var t = JacobianTarget.Output(a.Config.NumLayers);
        var ja = DetachedJacobian.Compute(new FrozenMap<double>(ma, ra.Trace!), t);
        var jb = DetachedJacobian.Compute(new FrozenMap<double>(mb, rb.Trace!), t);
        Assert.Equal(jb.J, ja.J);
    }

    [Fact]
    public void ReferenceDetachOnPhiFreezesUpAndSigmoidAndStillReconstructs()
    {
        using var tmp = new TempCheckpoint("tiny-phi3");
        var model = new Transformer<double>(tmp.Checkpoint);
        int[] ids = Tokens(9, 10);
        var ours = new FrozenMap<double>(model, model.Forward(ids, trace: true).Trace!);
        var reference = new FrozenMap<double>(model, model.Forward(ids, trace: true, detach: DetachPolicy.Reference).Trace!);
        Assert.Equal(MlpFreezing.UpAndSigmoid, reference.Trace.MlpFreezing);
        foreach (var t in AllTargets(model.Config.NumLayers).Where(t => t.Mode == JacobianMode.Cumulative))
        {
            var jo = DetachedJacobian.Compute(ours, t);
            var jr = DetachedJacobian.Compute(reference, t);
            Assert.True(jr.RelativeError <= 1e-13, $"reference {t.Describe()}: {jr.RelativeError:E2}");
            Assert.Equal(jo.Output, jr.Output);   // the same real output, reached by a different linear system
            if (t.Key != OutputKey.Attn || t.Layer > 1)
                Assert.True(DetachedJacobian.Errors<double>(jr.J, jo.J).relative > 1e-3, $"{t.Describe()}: the two freezings should give different J");
        }
    }

    [Theory]
    [InlineData("tiny-gemma3")]
    [InlineData("tiny-olmo2")]
    public void ReferenceDetachTapsAttnAndMlpBeforeTheirPostNorms(string preset)
    {
        using var tmp = new TempCheckpoint(preset);
        var model = new Transformer<double>(tmp.Checkpoint);
        int[] ids = Tokens(8, 11);
        var run = model.Forward(ids, trace: true, detach: DetachPolicy.Reference);
        var map = new FrozenMap<double>(model, run.Trace!);
        int d = model.Hidden, n = ids.Length;
        foreach (var key in new[] { OutputKey.Attn, OutputKey.Mlp })
        {
            var t = new JacobianTarget(1, key, FinalNorm: false);
            var raw = key == OutputKey.Attn ? run.Trace!.AttnRaw[0]! : run.Trace!.MlpRaw[0]!;
            Assert.Equal(raw, map.Output(t));
            var r = DetachedJacobian.Compute(map, t);
            Assert.True(r.RelativeError <= 1e-13, $"{key}: {r.RelativeError:E2}");
        }
        // ours: the same target is what the branch adds (after its post-norm), a different vector
        var oursMap = new FrozenMap<double>(model, model.Forward(ids, trace: true).Trace!);
        Assert.NotEqual(map.Output(new JacobianTarget(1, OutputKey.Attn, FinalNorm: false)), oursMap.Output(new JacobianTarget(1, OutputKey.Attn, FinalNorm: false)));
    }

    [Fact]
    public void ReferenceDetachIsOursForLlama()
    {
        using var tmp = new TempCheckpoint("tiny-llama");
        var model = new Transformer<double>(tmp.Checkpoint);
        int[] ids = Tokens(8, 12);
        var t = new JacobianTarget(2, OutputKey.Mlp);
        var a = DetachedJacobian.Compute(new FrozenMap<double>(model, model.Forward(ids, trace: true).Trace!), t);
        var b = DetachedJacobian.Compute(new FrozenMap<double>(model, model.Forward(ids, trace: true, detach: DetachPolicy.Reference).Trace!), t);
        Assert.Equal(a.J, b.J);
    }

    [Theory]
    [InlineData("tiny-phi3")]
    [InlineData("tiny-mistral")]
    [InlineData("tiny-qwen2")]
    public void GreedyGenerationMatchesTheSpecDecoderAcrossTheLongropeSwitch(string preset)
    {
        // tiny-phi3: N0 = 6, so a 4-token prompt with 6 new tokens crosses it; the generation recomputes its whole
        // sequence with the long factors there (HF's Phi3ForCausalLM drops its cache at that point).
        using var tmp = new ScratchFolder("gen");
        var w = RandomCheckpoint.Write(tmp.Path, RandomCheckpointSpec.Preset(preset), seed: 31);
        using var ckpt = Checkpoint.Open(w.Folder);
        var model = new Transformer<double>(ckpt);
        int[] prompt = Tokens(4, 13);
        var stepLogits = new List<double[]>();
        var g = Generator.Greedy(model, prompt, 6, stopAtEos: false, onLogits: l => stepLogits.Add((double[])l.Clone()));
        var seq = prompt.ToList();
        for (int s = 0; s < g.NewIds.Length; s++)
        {
            var spec = SpecDecoder.Run(w, seq.ToArray());
            var last = spec.LogitsRow(seq.Count - 1).ToArray();
            double e = RelErr<double>(stepLogits[s], last);
            Assert.True(e <= 1e-12, $"{preset} step {s} (length {seq.Count}): logits differ from the spec by {e:E2}");
            Assert.Equal(Generator.ArgMax<double>(last), g.NewIds[s]);
            seq.Add(g.NewIds[s]);
        }
    }

    [Theory]
    [InlineData("""{"model_type":"qwen3","rope_scaling":{"rope_type":"yarn","factor":4}}""", "rope_type 'yarn' is not supported")]
    [InlineData("""{"model_type":"llama","rope_scaling":{"type":"dynamic","factor":2}}""", "rope_type 'dynamic' is not supported")]
    [InlineData("""{"model_type":"mistral","hidden_act":"relu"}""", "activation 'relu' is not supported")]
    [InlineData("""{"model_type":"gpt_neox"}""", "model_type 'gpt_neox' is not supported")]
    [InlineData("""{"model_type":"phi3","head_dim":16,"num_attention_heads":4,"hidden_size":64,"rope_scaling":{"type":"longrope","short_factor":[1,1],"long_factor":[1,1]}}""", "longrope short_factor/long_factor have 2/2 entries")]
    public void UnsupportedConfigurationsAreOneClearError(string json, string message)
    {
        using var doc = System.Text.Json.JsonDocument.Parse(json);
        var e = Assert.Throws<LinearLensException>(() => ModelConfig.Parse(doc.RootElement));
        Assert.Contains(message, e.Message);
    }

    [Fact]
    public void PhiRewritesSuAndYarnToLongropeWithTheTopLevelOriginalLength()
    {
        foreach (var type in new[] { "su", "yarn", "longrope" })
        {
            string json = """{"model_type":"phi3","hidden_size":64,"num_attention_heads":4,"max_position_embeddings":131072,"original_max_position_embeddings":4096,"rope_scaling":{"type":"TYPE","short_factor":[1,1,1,1,1,1,1,1],"long_factor":[2,2,2,2,2,2,2,2]}}""";
            using var doc = System.Text.Json.JsonDocument.Parse(json.Replace("TYPE", type));
            var c = ModelConfig.Parse(doc.RootElement);
            var r = c.Rope[0];
            Assert.Equal("longrope", r.Type);
            Assert.Equal(4096, r.OriginalMaxPositions);
            Assert.Equal(1.1902380714238083, r.AttentionFactor, 1e-15);   // √(1 + ln 32 / ln 4096), architectures.md §5
            Assert.False(r.UsesLongFactors(4096));
            Assert.True(r.UsesLongFactors(4097));
        }
    }
}
