using LinearLens.Loading;

namespace LinearLens.Models;

/// <summary>
/// Phi-3 / 3.5, Phi-4, Phi-4-mini (model_type phi3; architectures.md §2.6): the Llama layer with fused projections —
/// `qkv_proj` rows [q; k; v] and `gate_up_proj` rows [gate; up], read as row slices of the mapped tensor (no copy) —,
/// partial rotary (`partial_rotary_factor`), longrope (short/long factors by sequence length against the top-level
/// `original_max_position_embeddings`, the attention factor on cos and sin) and `sliding_window` on every layer.
/// The paper's code freezes u and σ(g) here and makes g the linear path (--detach reference).
/// </summary>
public sealed class Phi3 : Family
{
    public override IReadOnlyList<string> ModelTypes => ["phi3"];
    public override ClassDefaults Defaults => new(32064, 3072, 8192, 32, 32, null, null, 4096, 1e-5, 10000, false);
    public override string? FusedQkv => "self_attn.qkv_proj.weight";
    public override string? FusedGateUp => "mlp.gate_up_proj.weight";
    public override MlpFreezing ReferenceMlp => MlpFreezing.UpAndSigmoid;
    internal override bool[] SlidingLayers(ModelConfig.Keys c, int layers, int? window) => Enumerable.Repeat(window is not null, layers).ToArray();

    /// <summary>Phi3Config rewrites rope_scaling types "su" and "yarn" to longrope; N0 is the top-level key (default 4096).</summary>
    internal override (RopeSpec full, RopeSpec sliding) ParseRope(ModelConfig.Keys c, double defaultTheta, int maxPos) =>
        RopeParsing.Uniform(c, defaultTheta, maxPos, originalMaxPositions: c.Int("original_max_position_embeddings") ?? 4096,
            aliases: new Dictionary<string, string> { ["su"] = "longrope", ["yarn"] = "longrope" });
}
