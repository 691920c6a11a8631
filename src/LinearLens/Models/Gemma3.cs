using System.Text.Json;
using LinearLens.Loading;

namespace LinearLens.Models;

/// <summary>
/// Gemma 3, text part (model_type gemma3_text, or text_config of gemma3; architectures.md §2.5). Sandwich norms with
/// every gain stored as an offset (1 + w), embeddings × √d, GELU-tanh, per-head q/k norms, score scale
/// query_pre_attn_scalar^(−1/2), sliding layers with the local RoPE base and window W:
///   h ← h + RMSNorm_post_attention_layernorm(W_o·Attn(…RMSNorm_input_layernorm(h)))
///   h ← h + RMSNorm_post_feedforward_layernorm(W_down(gelu(W_gate x) ⊙ W_up x)),  x = RMSNorm_pre_feedforward_layernorm(h)
/// </summary>
public sealed class Gemma3 : Family
{
    public override IReadOnlyList<string> ModelTypes => ["gemma3_text", "gemma3"];
    public override ClassDefaults Defaults => new(262208, 2304, 9216, 26, 8, 4, 256, 131072, 1e-6, 1e6, true);
    public override NormNames Norms => new("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm");
    public override QkNormKind QkNorm => QkNormKind.PerHead;
    public override bool GainOffset => true;
    public override bool ScalesEmbeddings => true;
    internal override int? DefaultWindow => 4096;

    internal override ModelConfig.Keys TextKeys(ModelConfig.Keys top) =>
        top.Raw("text_config") is { ValueKind: JsonValueKind.Object } tc ? top.Nested(tc, "text_config") : top;

    internal override Activation ParseActivation(ModelConfig.Keys c) =>
        ModelConfig.ActivationNamed(c.String("hidden_activation") ?? c.String("hidden_act") ?? "gelu_pytorch_tanh", c.Where);

    internal override LayerBiases ParseBiases(ModelConfig.Keys c)
    {
        if (c.Bool("use_bidirectional_attention") == true)
            throw new LinearLensException($"{c.Where}: use_bidirectional_attention = true is not a causal language model; not supported");
        bool attn = c.Bool("attention_bias") ?? false;
        return new LayerBiases(attn, attn, attn, attn, false, false, false);
    }

    /// <summary>Layer i is global (full attention) iff (i + 1) mod P = 0, P = sliding_window_pattern (default 6).</summary>
    internal override bool[] SlidingLayers(ModelConfig.Keys c, int layers, int? window)
    {
        int pattern = c.Int("sliding_window_pattern") ?? c.Int("_sliding_window_pattern") ?? 6;
        return Enumerable.Range(0, layers).Select(i => pattern <= 0 || (i + 1) % pattern != 0).ToArray();
    }

    internal override double AttentionScale(ModelConfig.Keys c, int headDim) => 1.0 / Math.Sqrt(c.Double("query_pre_attn_scalar") ?? 256);

    /// <summary>
    /// Global layers: rope_theta with rope_scaling; local (sliding) layers: rope_local_base_freq, always default RoPE
    /// (legacy rope_scaling is global-only). v5 states both under rope_parameters.full_attention / .sliding_attention.
    /// </summary>
    internal override (RopeSpec full, RopeSpec sliding) ParseRope(ModelConfig.Keys c, double defaultTheta, int maxPos)
    {
        double partial = c.Double("partial_rotary_factor") ?? 1.0;
        if (c.Raw("rope_parameters") is { ValueKind: JsonValueKind.Object } rp && rp.TryGetProperty("full_attention", out var fa))
        {
            var full = RopeParsing.Parse(c.Nested(fa, "rope_parameters.full_attention"), defaultTheta, maxPos, partial, null, null);
            var local = rp.TryGetProperty("sliding_attention", out var sa)
                ? RopeParsing.Parse(c.Nested(sa, "rope_parameters.sliding_attention"), 10000, maxPos, partial, null, null)
                : new RopeSpec("default", 10000);
            return (full, local);
        }
        var (global, _) = RopeParsing.Uniform(c, defaultTheta, maxPos, originalMaxPositions: null);
        return (global, new RopeSpec("default", c.Double("rope_local_base_freq") ?? 10000));
    }
}
