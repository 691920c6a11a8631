using LinearLens.Loading;
using LinearLens.Models;
using LinearLens.Numerics;
using LinearLens.Tests.Support;

namespace LinearLens.Tests.Models;

/// <summary>
/// The engine's forward pass against the independent <see cref="SpecDecoder"/> for the families added in issue 17
/// (phi3, olmo2, mistral, ministral, qwen2, llama biases): final-normed states, logits at every position and the
/// residual after every layer, ≤ 1e-12 relative in float64 and ≤ 1e-4 in float32. Phi prompts fall on both sides of
/// original_max_position_embeddings (N0 = 6); windows are shorter than the prompts.
/// </summary>
public class FamilyParityTests
{
    const double Tol64 = 1e-12, Tol32 = 1e-4;

    public static TheoryData<string, int> Cases => new()
    {
        { "tiny-phi3", 5 }, { "tiny-phi3", 6 }, { "tiny-phi3", 7 }, { "tiny-phi3", 9 },
        { "tiny-phi4-mini", 6 }, { "tiny-phi4-mini", 8 },
        { "tiny-phi3-plain", 8 }, { "tiny-phi3-bf16", 8 }, { "tiny-phi3-v5", 8 },
        { "tiny-olmo2", 8 }, { "tiny-olmo2-v5", 8 },
        { "tiny-mistral", 8 }, { "tiny-mistral-layer-types", 8 },
        { "tiny-ministral", 8 }, { "tiny-ministral-default", 8 },
        { "tiny-qwen2", 8 }, { "tiny-qwen2-window-off", 8 }, { "tiny-qwen2-bf16", 8 },
        { "tiny-llama-bias", 8 }, { "tiny-llama-bias-v5", 8 },
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
        _ => RandomCheckpointSpec.Preset(name),
    };

    static int[] Tokens(int n, int seed) { var r = new Random(seed); return Enumerable.Range(0, n).Select(_ => r.Next(101)).ToArray(); }

    static double RelErr<T>(T[] a, double[] b) where T : unmanaged, System.Numerics.IFloatingPointIeee754<T>
    {
        double num = 0, den = 0;
        for (int i = 0; i < b.Length; i++)
        {
            double diff = double.CreateChecked(a[i]) - b[i];
            num += diff * diff;
            den += b[i] * b[i];
        }
        Assert.True(den > 0);
        return Math.Sqrt(num / den);
    }

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

    /// <summary>The plain Phi checkpoint and its Llama split are one function: identical engine logits in float64.</summary>
    [Fact]
    public void Phi3_plain_and_llama_split_give_identical_engine_logits()
    {
        using var tmp = new ScratchFolder("famsplit");
        var spec = RandomCheckpointSpec.Preset("tiny-phi3-plain");
        var phi = RandomCheckpoint.Write(tmp.Sub("phi"), spec, 21);
        var llama = RandomCheckpoint.WriteLlamaSplitOfPhi3(tmp.Sub("llama"), spec, 21);
        int[] ids = Tokens(8, 3);
        using var a = Checkpoint.Open(phi.Folder);
        using var b = Checkpoint.Open(llama.Folder);
        var ra = new Transformer<double>(a).Forward(ids, allLogits: true);
        var rb = new Transformer<double>(b).Forward(ids, allLogits: true);
        Assert.Equal(rb.Logits, ra.Logits);
        Assert.Equal(rb.Final, ra.Final);
    }
}
