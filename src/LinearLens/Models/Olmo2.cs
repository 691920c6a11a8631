using LinearLens.Loading;

namespace LinearLens.Models;

/// <summary>
/// OLMo 2 (model_type olmo2; architectures.md §2.7): no input norms — attention and MLP read the raw residual — and a
/// post-norm on each branch output before the residual add; q and k RMS-normed over the whole H·D / K·D projection
/// before it is split into heads:
///   h ← h + RMSNorm_post_attention_layernorm(W_o·Attn(RoPE(N_q(W_q h)), RoPE(N_k(W_k h)), W_v h))
///   h ← h + RMSNorm_post_feedforward_layernorm(W_down(silu(W_gate h) ⊙ W_up h))
/// </summary>
public sealed class Olmo2 : Family
{
    public override IReadOnlyList<string> ModelTypes => ["olmo2"];
    public override ClassDefaults Defaults => new(50304, 4096, 11008, 32, 32, null, null, 2048, 1e-5, 10000, false);
    public override NormNames Norms => new(null, "post_attention_layernorm", null, "post_feedforward_layernorm");
    public override QkNormKind QkNorm => QkNormKind.Whole;

    internal override LayerBiases ParseBiases(ModelConfig.Keys c)
    {
        bool attn = c.Bool("attention_bias") ?? false;
        return new LayerBiases(attn, attn, attn, attn, false, false, false);
    }
}
