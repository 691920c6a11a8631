using LinearLens.Loading;

namespace LinearLens.Models;

/// <summary>
/// Qwen 3 (model_type qwen3; architectures.md §2.4): the Llama layer with q and k RMS-normed per head over D (gains
/// q_norm, k_norm) before RoPE; H·D may differ from d; head_dim defaults to 128. Sliding layers by layer_types, or
/// from max_window_layers on when use_sliding_window is set. `attention_bias` adds q, k, v, o biases.
/// </summary>
public sealed class Qwen3 : Family
{
    public override IReadOnlyList<string> ModelTypes => ["qwen3"];
    public override ClassDefaults Defaults => new(151936, 4096, 22016, 32, 32, 32, 128, 32768, 1e-6, 10000, false);
    public override QkNormKind QkNorm => QkNormKind.PerHead;
    internal override int? DefaultWindow => 4096;
    internal override bool[] SlidingLayers(ModelConfig.Keys c, int layers, int? window) => Qwen2.FromMaxWindowLayers(c, layers, window);
    internal override int? ParseWindow(ModelConfig.Keys c) => Qwen2.WindowIfUsed(c, DefaultWindow);

    internal override LayerBiases ParseBiases(ModelConfig.Keys c)
    {
        bool attn = c.Bool("attention_bias") ?? false;
        return new LayerBiases(attn, attn, attn, attn, false, false, false);
    }
}
