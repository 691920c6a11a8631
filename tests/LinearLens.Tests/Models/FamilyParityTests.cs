using LinearLens.Loading;
using LinearLens.Models;
using LinearLens.Numerics;
using LinearLens.Tests.Support;
using static LinearLens.Tests.Support.Close;

namespace LinearLens.Tests.Models;

/// <summary>
/// The engine's forward pass against the independent <see cref="SpecDecoder"/> for variants of the new families that
/// <see cref="FamilyTests"/> (the presets themselves) does not run: stored bf16, v5 rope_parameters configs, mistral with
/// layer_types (ignored by HF), ministral's default layer_types, qwen2 with the window off, a Phi prompt one past N0;
/// final-normed states, logits at every position and the residual after every layer, ≤ 1e-12 relative in float64 and
/// ≤ 1e-4 in float32. Also: generation across N0 through the CLI, and the real-shape configs.
/// </summary>
public class FamilyParityTests
{
    const double Tol64 = 1e-12, Tol32 = 1e-4;

    public static TheoryData<string, int> Cases => new()
    {
        { "tiny-phi3", 7 }, { "tiny-phi4-mini", 7 },
        { "tiny-phi3-bf16", 8 }, { "tiny-phi3-v5", 5 }, { "tiny-phi3-v5", 8 },
        { "tiny-olmo2-v5", 8 }, { "tiny-mistral-layer-types", 8 }, { "tiny-ministral-default", 8 },
        { "tiny-qwen2-window-off", 8 }, { "tiny-qwen2-bf16", 8 }, { "tiny-llama-bias-v5", 8 }, { "tiny-mistral-head-dim", 8 },
        { "tiny-olmo2-bias", 8 },
    };

    static RandomCheckpointSpec Case(string name) => name switch
    {
        "tiny-phi3-bf16" => RandomCheckpointSpec.Preset("tiny-phi3") with { DType = DType.BF16 },
        "tiny-phi3-v5" => RandomCheckpointSpec.Preset("tiny-phi3") with { UseRopeParametersV5 = true },
        "tiny-olmo2-v5" => RandomCheckpointSpec.Preset("tiny-olmo2") with { UseRopeParametersV5 = true },
        "tiny-mistral-layer-types" => RandomCheckpointSpec.Preset("tiny-mistral") with { LayerTypes = ["full_attention", "sliding_attention"] },
        "tiny-ministral-default" => RandomCheckpointSpec.Preset("tiny-ministral") with { LayerTypes = null },
        "tiny-qwen2-window-off" => RandomCheckpointSpec.Preset("tiny-qwen2") with { UseSlidingWindow = false },
        "tiny-qwen2-bf16" => RandomCheckpointSpec.Preset("tiny-qwen2") with { DType = DType.BF16 },
        "tiny-llama-bias-v5" => RandomCheckpointSpec.Preset("tiny-llama-bias") with { UseRopeParametersV5 = true },
        "tiny-olmo2-bias" => RandomCheckpointSpec.Preset("tiny-olmo2") with { AttentionBias = true },
        // Mistral-Nemo style: head_dim given and H·D = 64 ≠ d = 48.
        "tiny-mistral-head-dim" => RandomCheckpointSpec.Preset("tiny-mistral") with { Hidden = 48, Intermediate = 80 },
        _ => RandomCheckpointSpec.Preset(name),
    };

    static int[] Tokens(int n, int seed) { var r = new Random(seed); return Enumerable.Range(0, n).Select(_ => r.Next(101)).ToArray(); }


    static void Compare<T>(string what, string folder, SpecOutput spec, int[] ids, double tol) where T : unmanaged, System.Numerics.IFloatingPointIeee754<T>
    {
        using var ckpt = Checkpoint.Open(folder);
        var model = new Transformer<T>(ckpt);
        var r = model.Forward(ids, allLogits: true);
        var layers = new T[model.Config.NumLayers][];
        var cache = new KvCache<T>(model.Config, ids.Length);
        model.Run(model.Embed(ids), ids.Length, cache, null,
            (done, residual, rows, start) => layers[done - 1] = residual.AsSpan(0, rows * model.Hidden).ToArray());
        var errors = new List<string>();
        void Check(string name, T[] a, double[] b)
        {
            double e = RelErr(a, b);
            if (!(e <= tol)) errors.Add($"{name}: rel err {e:E3} > {tol:E0}");
        }
        for (int l = 0; l < layers.Length; l++) Check($"residual after layer {l}", layers[l], spec.LayerOutputs[l]);
        Check("final", r.Final, spec.Final);
        Check("logits", r.Logits, spec.Logits);
        Assert.True(errors.Count == 0, $"{what} ({typeof(T).Name}): " + string.Join("; ", errors));
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Engine_matches_spec(string name, int n)
    {
        using var tmp = new ScratchFolder("famparity");
        var w = RandomCheckpoint.Write(tmp.Path, Case(name), seed: 4321);
        int[] ids = Tokens(n, name.Length);
        var spec = SpecDecoder.Run(w, ids);
        Compare<double>($"{name} n={n}", w.Folder, spec, ids, Tol64);
        Compare<float>($"{name} n={n}", w.Folder, spec, ids, Tol32);
    }

    /// <summary>
    /// Greedy generation through the CLI (FamilyTests runs the Generator API on tiny-phi3) that grows past N0 = 6
    /// (prompt 4, 5 new tokens) with partial rotary: `generate --json` tokens and log-probabilities equal
    /// the spec decoder run on the whole sequence at every step — HF's semantics, where the cache is recomputed with the
    /// long factors when the length first exceeds N0. A cache kept across the switch would change the last steps.
    /// </summary>
    [Theory]
    [InlineData("tiny-phi4-mini")]
    public void Generation_across_N0_matches_the_spec_on_the_whole_sequence(string preset)
    {
        using var tmp = new ScratchFolder("famgen");
        var w = RandomCheckpoint.Write(tmp.Path, RandomCheckpointSpec.Preset(preset), 3);
        var ids = new List<int> { 5, 17, 33, 2 };
        var r = CliRunner.Run("generate", "--model", w.Folder, "--token-ids", string.Join(",", ids), "--max-new-tokens", "5",
            "--ignore-eos", "--json");
        Assert.True(r.ExitCode == 0, r.Stderr);
        using var doc = System.Text.Json.JsonDocument.Parse(r.Stdout);
        int[] outIds = doc.RootElement.GetProperty("output_ids").EnumerateArray().Select(x => x.GetInt32()).ToArray();
        double[] logprobs = doc.RootElement.GetProperty("logprobs").EnumerateArray().Select(x => x.GetDouble()).ToArray();
        Assert.Equal(5, outIds.Length);
        int V = w.Spec.Vocab;
        for (int step = 0; step < 5; step++)
        {
            var o = SpecDecoder.Run(w, ids.ToArray());
            var last = o.LogitsRow(ids.Count - 1).ToArray();
            int best = Array.IndexOf(last, last.Max());
            double max = last.Max(), lse = max + Math.Log(last.Sum(z => Math.Exp(z - max)));
            Assert.Equal(best, outIds[step]);
            Assert.True(Math.Abs(last[best] - lse - logprobs[step]) <= 1e-10, $"step {step} (length {ids.Count}): logprob {logprobs[step]:R}, spec {last[best] - lse:R}");
            ids.Add(best);
        }
        Assert.True(ids.Count > w.Spec.LongRopeOriginalMax + 1);

        // Control: a model that never switched to long_factor gives a different last log-probability.
        var s = w.Spec.RopeScaling!;
        var shortOnly = w.Spec with { RopeScaling = s with { LongFactor = s.ShortFactor } };
        var prefix = ids.Take(ids.Count - 1).ToArray();
        var lastShort = SpecDecoder.Run(shortOnly, w.Values, prefix).LogitsRow(prefix.Length - 1).ToArray();
        double m = lastShort.Max(), l = m + Math.Log(lastShort.Sum(z => Math.Exp(z - m)));
        Assert.True(Math.Abs(lastShort[outIds[4]] - l - logprobs[4]) > 1e-6);
    }

    /// <summary>The real-shape presets' config.json (no weights written) loads with the intended shape and windows.</summary>
    [Theory]
    [InlineData("phi-4")]
    [InlineData("phi-4-mini")]
    [InlineData("olmo-2-7b")]
    [InlineData("ministral-8b")]
    [InlineData("qwen2.5-7b")]
    [InlineData("qwen3-8b")]
    [InlineData("qwen3-14b")]
    public void Real_shape_configs_load(string preset)
    {
        using var tmp = new ScratchFolder("famreal");
        var s = RandomCheckpointSpec.Preset(preset);
        File.WriteAllText(Path.Combine(tmp.Path, "config.json"), RandomCheckpoint.ConfigJson(s));
        var c = ModelConfig.Load(tmp.Path);
        Assert.Equal(s.Hidden, c.HiddenSize);
        Assert.Equal(s.Intermediate, c.IntermediateSize);
        Assert.Equal(s.Layers, c.NumLayers);
        Assert.Equal(s.Heads, c.NumHeads);
        Assert.Equal(s.KvHeads, c.NumKvHeads);
        Assert.Equal(s.HeadDim, c.HeadDim);
        Assert.Equal(s.Vocab, c.VocabSize);
        Assert.Equal(s.Tie, c.TieWordEmbeddings);
        Assert.Equal(s.RmsNormEps, c.RmsNormEps);
        for (int l = 0; l < s.Layers; l++)
        {
            Assert.Equal(s.WindowOf(l), c.SlidingWindow[l]);
            Assert.Equal(s.ScalingOf(l)?.Type ?? "default", c.Rope[l].Type);
            Assert.Equal(s.RopeTheta, c.Rope[l].Theta);
        }
    }
}
