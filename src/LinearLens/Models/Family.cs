using LinearLens.Loading;

namespace LinearLens.Models;

/// <summary>Where a q/k RMSNorm normalizes: none, each head's D values (Qwen 3, Gemma 3), or the whole H·D projection (OLMo 2).</summary>
public enum QkNormKind { None, PerHead, Whole }

/// <summary>
/// Which factor of the gated MLP act(g) ⊙ u the detached map freezes. Gate: act(g) is frozen and the linear path runs
/// through u = W_up x (LinearLens's choice for every family, and the paper's for all but Phi). UpAndSigmoid: u and
/// σ(g) are frozen and the linear path runs through g = W_gate x (the paper's Phi3MLP: u ⊙ σ(g) ⊙ g = u ⊙ silu(g)).
/// </summary>
public enum MlpFreezing { Gate, UpAndSigmoid }

/// <summary>What the detached map freezes and where its attn/mlp outputs are tapped (architectures.md §3.3, §3.7).</summary>
public enum DetachPolicy
{
    /// <summary>LinearLens: act(gate) frozen for every family; attn/mlp taps after their post-norms (what the branch adds).</summary>
    Ours,
    /// <summary>The paper's code: its own MLP freezing per family (Phi: u and σ(g)); attn/mlp taps before post-norms.</summary>
    Reference,
}

/// <summary>Which projections carry an additive bias (they make the frozen map affine, architectures.md §3.6).</summary>
public sealed record LayerBiases(bool Q, bool K, bool V, bool O, bool Gate, bool Up, bool Down)
{
    public static readonly LayerBiases None = new(false, false, false, false, false, false, false);
    public bool Any => Q || K || V || O || Gate || Up || Down;
}

/// <summary>
/// The names of a layer's norms by role, relative to `model.layers.{i}.` (null: the layer has no such norm).
/// Every family's layer is the same skeleton with some of them absent:
///   h ← h + N_attn_out(Attention(N_attn_in(h)))
///   h ← h + N_mlp_out(GatedMlp(N_mlp_in(h)))
/// Pre-norm (Llama …): attn_in, mlp_in. Sandwich (Gemma 3): all four. Branch post-norm (OLMo 2): attn_out, mlp_out.
/// </summary>
public sealed record NormNames(string? AttnIn, string? AttnOut, string? MlpIn, string? MlpOut);

/// <summary>A family's class defaults for the keys every config has (architectures.md §2); null: derived (K → H, D → d/H).</summary>
public sealed record ClassDefaults(
    int Vocab, int Hidden, int Intermediate, int Layers, int Heads, int? KvHeads, int? HeadDim,
    int MaxPositions, double Eps, double Theta, bool Tie);

/// <summary>
/// One decoder family, described once: its config keys and class defaults, its tensor names, and its layer in the
/// shared vocabulary (norm roles, q/k norm, projections, biases, gains). The forward pass, the frozen trace, the frozen
/// map (JVP and VJP) and the ordinary Jacobian read the <see cref="ModelConfig"/> and <see cref="LayerWeights"/> this
/// description produces; no engine code branches on the family. A new family is one file in Models/ (a subclass
/// registered in <see cref="All"/>), its tensor names, its config keys and its tests.
/// </summary>
public abstract class Family
{
    /// <summary>The model_type values of config.json this family reads.</summary>
    public abstract IReadOnlyList<string> ModelTypes { get; }
    public abstract ClassDefaults Defaults { get; }

    // ---- the layer ----------------------------------------------------------------------------------------------
    public virtual NormNames Norms => new("input_layernorm", null, "post_attention_layernorm", null);
    public virtual QkNormKind QkNorm => QkNormKind.None;
    /// <summary>Norm gains stored as offsets: effective gain 1 + w (Gemma).</summary>
    public virtual bool GainOffset => false;
    /// <summary>Input embeddings multiplied by √d (rounded to the compute type) before layer 0 (Gemma).</summary>
    public virtual bool ScalesEmbeddings => false;
    /// <summary>Fused tensors relative to the layer prefix ([q; k; v] rows and [gate; up] rows), or null for separate ones.</summary>
    public virtual string? FusedQkv => null;
    public virtual string? FusedGateUp => null;
    /// <summary>The paper code's MLP freezing for this family (used with --detach reference).</summary>
    public virtual MlpFreezing ReferenceMlp => MlpFreezing.Gate;

    // ---- config keys ---------------------------------------------------------------------------------------------
    /// <summary>The object holding the text model's keys (Gemma 3's multimodal wrapper: text_config).</summary>
    internal virtual ModelConfig.Keys TextKeys(ModelConfig.Keys top) => top;
    internal virtual Activation ParseActivation(ModelConfig.Keys c) => ModelConfig.ActivationNamed(c.String("hidden_act") ?? "silu", c.Where);
    internal virtual LayerBiases ParseBiases(ModelConfig.Keys c) => LayerBiases.None;
    /// <summary>The window (keys with 0 ≤ s−t ≤ W−1 visible) when `sliding_window` is missing; null: no window.</summary>
    internal virtual int? DefaultWindow => null;
    /// <summary>The sliding window the config declares (null: none; sliding layers then are an error).</summary>
    internal virtual int? ParseWindow(ModelConfig.Keys c) => c.Has("sliding_window") ? c.Int("sliding_window") : DefaultWindow;
    /// <summary>Whether an explicit `layer_types` list decides which layers slide (Mistral ignores it).</summary>
    internal virtual bool ReadsLayerTypes => true;
    /// <summary>Which layers slide when config.json has no layer_types (window: the parsed sliding_window, may be null).</summary>
    internal virtual bool[] SlidingLayers(ModelConfig.Keys c, int layers, int? window) => new bool[layers];
    internal virtual double AttentionScale(ModelConfig.Keys c, int headDim) => 1.0 / Math.Sqrt(headDim);
    /// <summary>RoPE of full-attention and of sliding layers.</summary>
    internal virtual (RopeSpec full, RopeSpec sliding) ParseRope(ModelConfig.Keys c, double defaultTheta, int maxPos) =>
        RopeParsing.Uniform(c, defaultTheta, maxPos, originalMaxPositions: null);

    /// <summary>Every family LinearLens runs, in the order error messages list them.</summary>
    public static IReadOnlyList<Family> All { get; } =
        [new Llama(), new Mistral(), new Ministral(), new Qwen2(), new Qwen3(), new Gemma3(), new Phi3(), new Olmo2()];

    public static Family For(string modelType, string where) =>
        All.FirstOrDefault(f => f.ModelTypes.Contains(modelType))
        ?? throw new LinearLensException($"{where}: model_type '{modelType}' is not supported (LinearLens runs {string.Join(", ", All.SelectMany(f => f.ModelTypes))})");

    public override string ToString() => ModelTypes[0];
}
