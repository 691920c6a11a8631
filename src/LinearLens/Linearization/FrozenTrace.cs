using System.Numerics;
using LinearLens.Numerics;

namespace LinearLens.Linearization;

/// <summary>
/// Everything one forward pass computed that the frozen (detached) linear map needs, plus the residual stream
/// for intermediate outputs. Names follow TransformerLens: blocks.{l}.hook_resid_pre, hook_attn_out,
/// hook_mlp_out, ln1/ln2 scales, ln_final.hook_scale. All arrays are row-major over positions and pinned.
///
/// The frozen factors (architectures.md §3.2): every RMSNorm row scale ρ = (mean x² + ε)^(−1/2), every activated
/// gate act(W_gate x), every head's attention probabilities P. With these held fixed the network is linear in
/// the input embeddings.
/// </summary>
public sealed class FrozenTrace<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    public int Tokens { get; }
    public int Layers { get; }

    /// <summary>Input embeddings x₀…x_{n−1} [n×d] (Gemma: already multiplied by √d).</summary>
    public T[] Embeddings { get; }
    /// <summary>Residual stream entering layer l [n×d]; entry Layers is the stream after the last layer.</summary>
    public T[][] ResidPre { get; }
    /// <summary>ρ of the attention input norm (input_layernorm) [n].</summary>
    public T[][] AttnNormScale { get; }
    /// <summary>Attention probabilities [H][n][n]: row s (query), column t (key); zero where masked.</summary>
    public T[][] AttnProbs { get; }
    /// <summary>What the attention branch adds to the residual stream [n×d] (Gemma: after its post-attention norm).</summary>
    public T[][] AttnOut { get; }
    /// <summary>Gemma only: ρ of post_attention_layernorm, applied to the attention output [n].</summary>
    public T[]?[] AttnOutNormScale { get; }
    /// <summary>ρ of the MLP input norm (post_attention_layernorm; Gemma: pre_feedforward_layernorm) [n].</summary>
    public T[][] MlpNormScale { get; }
    /// <summary>Activated gate act(W_gate x) [n×I].</summary>
    public T[][] Gate { get; }
    /// <summary>What the MLP branch adds to the residual stream [n×d] (Gemma: after its post-feedforward norm).</summary>
    public T[][] MlpOut { get; }
    /// <summary>Gemma only: ρ of post_feedforward_layernorm [n].</summary>
    public T[]?[] MlpOutNormScale { get; }
    /// <summary>ρ of the final norm (ln_final.hook_scale) [n].</summary>
    public T[] FinalScale { get; }
    /// <summary>Final-normed hidden states y [n×d].</summary>
    public T[] Final { get; }

    /// <summary>
    /// What the ordinary (non-frozen) Jacobian also needs, recorded only on request: the pre-activations the
    /// frozen map never looks at (q, k before and after their norms and RoPE, v, the gate before its activation,
    /// the up projection, Gemma's branch outputs before their post-norms). Null when not recorded.
    /// </summary>
    public NonlinearTrace<T>? Nonlinear { get; }

    public FrozenTrace(int n, int layers, int d, int heads, int intermediate, bool sandwichNorms, NonlinearTrace<T>? nonlinear = null)
    {
        Nonlinear = nonlinear;
        Tokens = n; Layers = layers;
        Embeddings = Pinned.Array<T>((long)n * d);
        ResidPre = Enumerable.Range(0, layers + 1).Select(_ => Pinned.Array<T>((long)n * d)).ToArray();
        T[][] PerLayer(long len) => Enumerable.Range(0, layers).Select(_ => Pinned.Array<T>(len)).ToArray();
        AttnNormScale = PerLayer(n);
        AttnProbs = PerLayer((long)heads * n * n);
        AttnOut = PerLayer((long)n * d);
        MlpNormScale = PerLayer(n);
        Gate = PerLayer((long)n * intermediate);
        MlpOut = PerLayer((long)n * d);
        AttnOutNormScale = sandwichNorms ? PerLayer(n) : new T[]?[layers];
        MlpOutNormScale = sandwichNorms ? PerLayer(n) : new T[]?[layers];
        FinalScale = Pinned.Array<T>(n);
        Final = Pinned.Array<T>((long)n * d);
    }
}

/// <summary>Per-layer pre-activations for exact derivatives through every nonlinearity (see <see cref="FrozenTrace{T}.Nonlinear"/>).</summary>
public sealed class NonlinearTrace<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    /// <summary>q = W_q x and k = W_k x before per-head norms and RoPE [n×H·D], [n×K·D].</summary>
    public T[][] QRaw { get; }
    public T[][] KRaw { get; }
    /// <summary>ρ of each per-head q/k norm [n·H], [n·K] (Qwen 3, Gemma 3).</summary>
    public T[][] QHeadScale { get; }
    public T[][] KHeadScale { get; }
    /// <summary>q and k as attention saw them: after norms and RoPE.</summary>
    public T[][] QRot { get; }
    public T[][] KRot { get; }
    /// <summary>v = W_v x [n×K·D].</summary>
    public T[][] V { get; }
    /// <summary>The gate before its activation, W_gate x, and the up projection W_up x [n×I].</summary>
    public T[][] GatePre { get; }
    public T[][] Up { get; }
    /// <summary>Gemma: W_o·o and W_down·z before their post-norms [n×d].</summary>
    public T[]?[] AttnRaw { get; }
    public T[]?[] MlpRaw { get; }

    public NonlinearTrace(int n, int layers, int d, int qDim, int kvDim, int heads, int kvHeads, int intermediate, bool sandwichNorms)
    {
        T[][] PerLayer(long len) => Enumerable.Range(0, layers).Select(_ => Pinned.Array<T>(len)).ToArray();
        QRaw = PerLayer((long)n * qDim); KRaw = PerLayer((long)n * kvDim);
        QHeadScale = PerLayer((long)n * heads); KHeadScale = PerLayer((long)n * kvHeads);
        QRot = PerLayer((long)n * qDim); KRot = PerLayer((long)n * kvDim); V = PerLayer((long)n * kvDim);
        GatePre = PerLayer((long)n * intermediate); Up = PerLayer((long)n * intermediate);
        AttnRaw = sandwichNorms ? PerLayer((long)n * d) : new T[]?[layers];
        MlpRaw = sandwichNorms ? PerLayer((long)n * d) : new T[]?[layers];
    }
}
