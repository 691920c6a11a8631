using LinearLens.Loading;
using LinearLens.Models;
using LinearLens.Numerics;
using LinearLens.Tests.Support;
using static LinearLens.Tests.Support.Close;

namespace LinearLens.Tests.Models;

/// <summary>
/// The engine's forward pass (Transformer&lt;double&gt; and Transformer&lt;float&gt;) against the independent
/// <see cref="SpecDecoder"/> on random checkpoints written by <see cref="RandomCheckpoint"/>: final-normed hidden
/// states, logits at every position and the residual stream after every layer. Relative error ‖a−b‖/‖b‖ over all
/// outputs: ≤ 1e-12 in float64, ≤ 1e-4 in float32.
/// </summary>
public class ForwardParityTests
{
    const double Tol64 = 1e-12, Tol32 = 1e-4;
    const int N = 8;

    public static TheoryData<string> Cases => new()
    {
        "tiny-llama", "tiny-qwen3", "tiny-gemma3",
        "tiny-llama-bf16", "tiny-gemma3-bf16", "tiny-qwen3-f16", "tiny-llama-f64",
        "tiny-qwen3-sharded", "tiny-gemma3-multimodal",
        "tiny-llama-v5", "tiny-gemma3-v5", "tiny-gemma3-multimodal-v5", "tiny-gemma3-pattern",
    };

    static RandomCheckpointSpec Case(string name) => name switch
    {
        "tiny-llama-bf16" => RandomCheckpointSpec.Preset("tiny-llama") with { DType = DType.BF16 },
        "tiny-gemma3-bf16" => RandomCheckpointSpec.Preset("tiny-gemma3") with { DType = DType.BF16 },
        "tiny-qwen3-f16" => RandomCheckpointSpec.Preset("tiny-qwen3") with { DType = DType.F16 },
        "tiny-llama-f64" => RandomCheckpointSpec.Preset("tiny-llama") with { DType = DType.F64 },
        "tiny-qwen3-sharded" => RandomCheckpointSpec.Preset("tiny-qwen3") with { Shards = 3, DType = DType.BF16 },
        "tiny-llama-v5" => RandomCheckpointSpec.Preset("tiny-llama") with { UseRopeParametersV5 = true },
        "tiny-gemma3-v5" => RandomCheckpointSpec.Preset("tiny-gemma3") with { UseRopeParametersV5 = true },
        "tiny-gemma3-multimodal-v5" => RandomCheckpointSpec.Preset("tiny-gemma3-multimodal") with { UseRopeParametersV5 = true },
        // No layer_types: pattern 2 → layers 0 and 2 sliding, layer 1 full.
        "tiny-gemma3-pattern" => RandomCheckpointSpec.Preset("tiny-gemma3") with { LayerTypes = null, SlidingWindowPattern = 2 },
        _ => RandomCheckpointSpec.Preset(name),
    };

    static int[] Tokens(int n, int seed) { var r = new Random(seed); return Enumerable.Range(0, n).Select(_ => r.Next(101)).ToArray(); }


    /// <summary>Runs the engine in T, returning final, all logits and the residual after each layer.</summary>
    static (T[] Final, T[] Logits, T[][] Layers) Engine<T>(string folder, int[] ids) where T : unmanaged, System.Numerics.IFloatingPointIeee754<T>
    {
        using var ckpt = Checkpoint.Open(folder);
        var model = new Transformer<T>(ckpt);
        var r = model.Forward(ids, allLogits: true);
        Assert.Equal(ids.Length, r.Tokens);

        var layers = new T[model.Config.NumLayers][];
        var cache = new KvCache<T>(model.Config, ids.Length);
        var final = model.Run(model.Embed(ids), ids.Length, cache, null,
            (done, residual, rows, start) => layers[done - 1] = residual.AsSpan(0, rows * model.Hidden).ToArray());
        Assert.Equal(r.Final.AsSpan(0, ids.Length * model.Hidden).ToArray(), final.AsSpan(0, ids.Length * model.Hidden).ToArray());
        return (r.Final, r.Logits, layers);
    }

    static void Compare<T>(string what, RandomWeights w, SpecOutput spec, int[] ids, double tol) where T : unmanaged, System.Numerics.IFloatingPointIeee754<T>
    {
        var (final, logits, layers) = Engine<T>(w.Folder, ids);
        var errors = new List<string>();
        void Check(string name, T[] a, double[] b)
        {
            double e = RelErr(a.Length > b.Length ? a.AsSpan(0, b.Length).ToArray() : a, b);
            if (!(e <= tol)) errors.Add($"{name}: rel err {e:E3} > {tol:E0}");
        }
        for (int l = 0; l < layers.Length; l++) Check($"residual after layer {l}", layers[l], spec.LayerOutputs[l]);
        Check("final", final, spec.Final);
        Check("logits", logits, spec.Logits);
        Assert.True(errors.Count == 0, $"{what} ({typeof(T).Name}): " + string.Join("; ", errors));
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Engine_matches_spec(string name)
    {
        using var tmp = new ScratchFolder("parity");
        var w = RandomCheckpoint.Write(tmp.Path, Case(name), seed: 1234);
        int[] ids = Tokens(N, name.Length);
        var spec = SpecDecoder.Run(w, ids);
        Compare<double>(name, w, spec, ids, Tol64);
        Compare<float>(name, w, spec, ids, Tol32);
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Config_parses_as_written(string name)
    {
        using var tmp = new ScratchFolder("config");
        var s = Case(name);
        RandomCheckpoint.Write(tmp.Path, s, seed: 1);
        var c = ModelConfig.Load(tmp.Path);
        Assert.Equal(s.Hidden, c.HiddenSize);
        Assert.Equal(s.Intermediate, c.IntermediateSize);
        Assert.Equal(s.Layers, c.NumLayers);
        Assert.Equal(s.Heads, c.NumHeads);
        Assert.Equal(s.KvHeads, c.NumKvHeads);
        Assert.Equal(s.HeadDim, c.HeadDim);
        Assert.Equal(s.Vocab, c.VocabSize);
        Assert.Equal(s.MaxPos, c.MaxPositions);
        Assert.Equal(s.RmsNormEps, c.RmsNormEps);
        Assert.Equal(s.Tie, c.TieWordEmbeddings);
        Assert.Equal(s.IsGemma ? Activation.GeluTanh : Activation.Silu, c.Activation);
        Assert.Equal(s.AttentionScale, c.AttentionScale, 1e-15);
        for (int l = 0; l < s.Layers; l++)
        {
            Assert.Equal(s.WindowOf(l), c.SlidingWindow[l]);
            var rope = c.Rope[l];
            var scaling = s.ScalingOf(l);
            Assert.Equal(s.ThetaOf(l), rope.Theta);
            Assert.Equal(scaling?.Type ?? "default", rope.Type);
            if (scaling is not null)
            {
                Assert.Equal(scaling.Factor, rope.Factor);
                if (scaling.Type == "llama3")
                {
                    Assert.Equal(scaling.LowFreqFactor, rope.LowFreqFactor);
                    Assert.Equal(scaling.HighFreqFactor, rope.HighFreqFactor);
                    Assert.Equal(scaling.OriginalMaxPositionEmbeddings, rope.OriginalMaxPositions);
                }
            }
        }
    }

    [Fact]
    public void Multimodal_wrapper_equals_text_only_model()
    {
        using var tmp = new ScratchFolder("mm");
        var spec = RandomCheckpointSpec.Preset("tiny-gemma3");
        var text = RandomCheckpoint.Write(tmp.Sub("t"), spec, 77);
        var mm = RandomCheckpoint.Write(tmp.Sub("m"), spec with { ModelType = "gemma3" }, 77);
        int[] ids = Tokens(N, 5);
        var a = Engine<double>(text.Folder, ids);
        var b = Engine<double>(mm.Folder, ids);
        Assert.Equal(a.Final, b.Final);
        Assert.Equal(a.Logits, b.Logits);
    }

    /// <summary>Feeding the prompt one token at a time through the KV cache gives the same states (window kept across calls).</summary>
    [Theory]
    [InlineData("tiny-gemma3")]
    [InlineData("tiny-qwen3")]
    public void Incremental_decoding_matches_spec(string name)
    {
        using var tmp = new ScratchFolder("incr");
        var w = RandomCheckpoint.Write(tmp.Path, Case(name), seed: 99);
        int[] ids = Tokens(N, 7);
        var spec = SpecDecoder.Run(w, ids);
        using var ckpt = Checkpoint.Open(w.Folder);
        var model = new Transformer<double>(ckpt);
        var cache = new KvCache<double>(model.Config, N);
        int d = model.Hidden;
        var final = new double[N * d];
        for (int t = 0; t < N; t++)
        {
            var y = model.Run(model.Embed(ids.AsSpan(t, 1)), 1, cache);
            y.AsSpan(0, d).CopyTo(final.AsSpan(t * d));
        }
        Assert.True(RelErr(final, spec.Final) <= Tol64, $"rel err {RelErr(final, spec.Final):E3}");
    }
}
