using System.Text.Json.Nodes;
using LinearLens.Loading;
using LinearLens.Models;
using LinearLens.Tests.Support;
using static LinearLens.Tests.Support.Close;
using static LinearLens.Tests.Support.CliRunner;

namespace LinearLens.Tests.Models;

/// <summary>
/// Config files as released checkpoints write them, not as our writer does: keys left out (each HF config class's
/// default applies), legacy spellings HF rewrites, and values HF accepts but the engine does not (one-line error,
/// exit 2). Defaults and rewrites from docs/hf-family-notes.md (configuration_*.py).
/// </summary>
public class FamilyConfigTests
{
    static int[] Tokens(int n, int seed) { var r = new Random(seed); return Enumerable.Range(0, n).Select(_ => r.Next(101)).ToArray(); }

    static void Edit(string folder, Action<JsonObject> edit)
    {
        string path = Path.Combine(folder, "config.json");
        var c = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        edit(c);
        File.WriteAllText(path, c.ToJsonString());
    }


    static double[] EngineLogits(string folder, int[] ids)
    {
        using var ckpt = Checkpoint.Open(folder);
        return new Transformer<double>(ckpt).Forward(ids, allLogits: true).Logits.AsSpan(0, ids.Length * 101).ToArray();
    }

    [Theory]
    [InlineData("rms_norm_eps", "tiny-phi3", 1e-5)]
    [InlineData("rms_norm_eps", "tiny-olmo2", 1e-5)]
    [InlineData("rms_norm_eps", "tiny-mistral", 1e-6)]
    [InlineData("rms_norm_eps", "tiny-ministral", 1e-6)]
    [InlineData("rms_norm_eps", "tiny-qwen2", 1e-6)]
    public void Missing_eps_takes_the_class_default(string key, string preset, double expected)
    {
        using var tmp = new ScratchFolder("famcfg");
        var s = RandomCheckpointSpec.Preset(preset) with { RmsNormEps = expected == 1e-5 ? 1e-6 : 1e-5 };
        RandomCheckpoint.Write(tmp.Path, s, 1, keepValues: false);
        Edit(tmp.Path, c => c.Remove(key));
        Assert.Equal(expected, ModelConfig.Load(tmp.Path).RmsNormEps);
    }

    /// <summary>Missing sliding_window: Mistral/Ministral default 4096 (ministral: all layers sliding); Qwen2 none unless use_sliding_window; Phi-3 none.</summary>
    [Theory]
    [InlineData("tiny-mistral", 4096, 4096)]
    [InlineData("tiny-ministral", 4096, 4096)]
    [InlineData("tiny-phi3", null, null)]
    public void Missing_sliding_window_takes_the_class_default(string preset, int? layer0, int? layer1)
    {
        using var tmp = new ScratchFolder("famwin");
        RandomCheckpoint.Write(tmp.Path, RandomCheckpointSpec.Preset(preset), 1, keepValues: false);
        Edit(tmp.Path, c => { c.Remove("sliding_window"); c.Remove("layer_types"); });
        var cfg = ModelConfig.Load(tmp.Path);
        Assert.Equal(layer0, cfg.SlidingWindow[0]);
        Assert.Equal(layer1, cfg.SlidingWindow[1]);
    }

    [Fact]
    public void Qwen2_without_window_keys_has_no_window_and_sliding_layer_types_need_use_sliding_window()
    {
        using var tmp = new ScratchFolder("famqw");
        RandomCheckpoint.Write(tmp.Path, RandomCheckpointSpec.Preset("tiny-qwen2"), 1, keepValues: false);
        Edit(tmp.Path, c => { c.Remove("use_sliding_window"); c.Remove("sliding_window"); c.Remove("max_window_layers"); });
        Assert.All(ModelConfig.Load(tmp.Path).SlidingWindow, w => Assert.Null(w));
        Edit(tmp.Path, c => { c["sliding_window"] = 3; c["use_sliding_window"] = true; c["layer_types"] = new JsonArray("sliding_attention", "sliding_attention"); });
        Assert.All(ModelConfig.Load(tmp.Path).SlidingWindow, w => Assert.Equal(3, w));
    }

    /// <summary>
    /// Sliding layer_types while use_sliding_window is false: Qwen2Config sets sliding_window to None and HF's
    /// create_sliding_window_causal_mask raises ("Could not find a `sliding_window` argument in the config, or it is not
    /// set"). Same for ministral with sliding_window null. The engine should stop with one line, not pick a window.
    /// </summary>
    [Fact]
    public void Ministral_sliding_layers_without_a_window_are_a_one_line_error() => AssertNoWindowIsAnError("tiny-ministral");

    [Fact]
    public void Qwen2_sliding_layers_without_use_sliding_window_are_a_one_line_error() => AssertNoWindowIsAnError("tiny-qwen2");

    static void AssertNoWindowIsAnError(string preset)
    {
        using var tmp = new ScratchFolder("famnowin");
        RandomCheckpoint.Write(tmp.Path, RandomCheckpointSpec.Preset(preset), 1, keepValues: false);
        Edit(tmp.Path, c =>
        {
            if (preset == "tiny-qwen2") c["use_sliding_window"] = false; else c["sliding_window"] = null;
            c["layer_types"] = new JsonArray(Enumerable.Range(0, c["num_hidden_layers"]!.GetValue<int>()).Select(_ => (JsonNode?)"sliding_attention").ToArray());
        });
        AssertOneLineError(CliRunner.Run("generate", "--model", tmp.Path, "--token-ids", "1,2", "--max-new-tokens", "1"), "sliding_window");
    }

    /// <summary>Phi3Config rewrites rope type "su" and "yarn" to "longrope"; "rope_type" is the other spelling of "type".</summary>
    [Theory]
    [InlineData("type", "su")]
    [InlineData("type", "yarn")]
    [InlineData("rope_type", "longrope")]
    public void Phi3_legacy_rope_spellings_are_longrope(string typeKey, string type)
    {
        using var tmp = new ScratchFolder("famsu");
        var w = RandomCheckpoint.Write(tmp.Path, RandomCheckpointSpec.Preset("tiny-phi3"), 8);
        Edit(tmp.Path, c =>
        {
            var rs = c["rope_scaling"]!.AsObject();
            rs.Remove("type");
            rs[typeKey] = type;
        });
        foreach (int n in new[] { 6, 8 })
        {
            int[] ids = Tokens(n, 1);
            Assert.True(RelErr(EngineLogits(tmp.Path, ids), SpecDecoder.Run(w, ids).Logits) <= 1e-12, $"{typeKey}={type} n={n}");
        }
    }

    /// <summary>Without the top-level key Phi-3's N0 is 4096: with max_pos 64 the factor f ≤ 1, so a = 1 and short_factor throughout.</summary>
    [Fact]
    public void Phi3_missing_original_max_position_embeddings_is_4096()
    {
        using var tmp = new ScratchFolder("famn0");
        var w = RandomCheckpoint.Write(tmp.Path, RandomCheckpointSpec.Preset("tiny-phi3"), 8);
        Edit(tmp.Path, c => c.Remove("original_max_position_embeddings"));
        int[] ids = Tokens(9, 2);
        var expected = SpecDecoder.Run(w.Spec with { OriginalMaxPos = 4096 }, w.Values, ids);
        Assert.Equal(1.0, (w.Spec with { OriginalMaxPos = 4096 }).RopeAttentionFactor);
        Assert.True(RelErr(EngineLogits(tmp.Path, ids), expected.Logits) <= 1e-12);
        Assert.True(RelErr(SpecDecoder.Run(w, ids).Logits, expected.Logits) > 1e-6);   // control: N0 = 6 is another model
    }

    [Fact]
    public void Phi3_missing_kv_heads_means_H()
    {
        using var tmp = new ScratchFolder("famkv");
        RandomCheckpoint.Write(tmp.Path, RandomCheckpointSpec.Preset("tiny-phi3") with { KvHeads = 4 }, 1, keepValues: false);
        Edit(tmp.Path, c => c.Remove("num_key_value_heads"));
        Assert.Equal(4, ModelConfig.Load(tmp.Path).NumKvHeads);
    }

    [Theory]
    [InlineData("tiny-qwen2", "yarn")]
    [InlineData("tiny-mistral", "dynamic")]
    public void Unsupported_rope_types_are_one_line_errors(string preset, string type)
    {
        using var tmp = new ScratchFolder("famrope");
        RandomCheckpoint.Write(tmp.Path, RandomCheckpointSpec.Preset(preset), 1, keepValues: false);
        Edit(tmp.Path, c => c["rope_scaling"] = new JsonObject { ["rope_type"] = type, ["factor"] = 4.0, ["original_max_position_embeddings"] = 64 });
        AssertOneLineError(CliRunner.Run("generate", "--model", tmp.Path, "--token-ids", "1,2", "--max-new-tokens", "1"), type);
    }

    [Theory]
    [InlineData("tiny-phi3")]
    [InlineData("tiny-olmo2")]
    public void Unknown_activation_is_a_one_line_error(string preset)
    {
        using var tmp = new ScratchFolder("famact");
        RandomCheckpoint.Write(tmp.Path, RandomCheckpointSpec.Preset(preset), 1, keepValues: false);
        Edit(tmp.Path, c => c["hidden_act"] = "relu2");
        AssertOneLineError(CliRunner.Run("generate", "--model", tmp.Path, "--token-ids", "1,2", "--max-new-tokens", "1"), "relu2");
    }
}
