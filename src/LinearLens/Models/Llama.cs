using LinearLens.Loading;

namespace LinearLens.Models;

/// <summary>
/// Llama 1–3.x and SmolLM2 (model_type llama; architectures.md §2.1), pre-norm:
///   h ← h + W_o·Attn(RoPE(W_q x), RoPE(W_k x), W_v x),  x = RMSNorm_input_layernorm(h)
///   h ← h + W_down(silu(W_gate x) ⊙ W_up x),             x = RMSNorm_post_attention_layernorm(h)
/// RoPE default or llama3-scaled; `attention_bias` adds q, k, v, o biases and `mlp_bias` gate, up, down biases.
/// </summary>
public sealed class Llama : Family
{
    public override IReadOnlyList<string> ModelTypes => ["llama"];
    public override ClassDefaults Defaults => new(32000, 4096, 11008, 32, 32, null, null, 2048, 1e-6, 10000, false);

    internal override LayerBiases ParseBiases(ModelConfig.Keys c)
    {
        bool attn = c.Bool("attention_bias") ?? false, mlp = c.Bool("mlp_bias") ?? false;
        return new LayerBiases(attn, attn, attn, attn, mlp, mlp, mlp);
    }
}
