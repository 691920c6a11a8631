using System.Numerics;
using LinearLens.Loading;
using LinearLens.Models;
using LinearLens.Numerics;

namespace LinearLens.Linearization;

/// <summary>
/// Everything one forward pass computed that the frozen (detached) linear map needs, plus the residual stream
/// for intermediate outputs. Names follow TransformerLens: blocks.{l}.hook_resid_pre, hook_attn_out,
/// hook_mlp_out, ln1/ln2 scales, ln_final.hook_scale. All arrays are row-major over positions and pinned.
///
/// The frozen factors (architectures.md §3.2): every RMSNorm row scale ρ = (mean x² + ε)^(−1/2), the MLP's frozen
/// coefficient γ (act(W_gate x), or u ⊙ σ(W_gate x) under the paper's Phi freezing), every head's attention
/// probabilities P. With these held fixed the network is linear (affine with biases) in the input embeddings.
/// Norm scales exist only for the norms the layer has (null otherwise; see <see cref="NormNames"/>).
/// </summary>
public sealed class FrozenTrace<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    public int Tokens { get; }
    public int Layers { get; }
    /// <summary>What was frozen and where attn/mlp are tapped.</summary>
    public DetachPolicy Detach { get; }
    /// <summary>Which MLP factor <see cref="MlpCoefficient"/> holds (and so which projection is the linear path).</summary>
    public MlpFreezing MlpFreezing { get; }

    /// <summary>Input embeddings x₀…x_{n−1} [n×d] (Gemma: already multiplied by √d).</summary>
    public T[] Embeddings { get; }
    /// <summary>Residual stream entering layer l [n×d]; entry Layers is the stream after the last layer.</summary>
    public T[][] ResidPre { get; }
    /// <summary>ρ of the attention input norm [n] (ln1.hook_scale), where the layer has one.</summary>
    public T[]?[] AttnInScale { get; }
    /// <summary>
    /// Attention probabilities [H][n][n]: row s (query), column t (key); zero where masked — or null when the trace keeps
    /// instead what recomputes them exactly (<see cref="RecomputesProbabilities"/>): H·n² numbers per layer would make a
    /// 2,048-token trace of a 28-layer model 15 GB.
    /// </summary>
    public T[]?[] AttnProbs { get; }
    /// <summary>Whether P is rebuilt blockwise inside the frozen map's products from q, k (after norms and RoPE) and each row's maximum and normalizer.</summary>
    public bool RecomputesProbabilities { get; }
    /// <summary>
    /// Whether, beyond P, the trace also leaves out q and the MLP coefficients γ (n·(H·D + I) per layer: 2.3 GB for 2,048
    /// tokens of Qwen3-0.6B) and keeps the n·d stream after attention (<see cref="ResidMid"/>) instead: the frozen map
    /// recomputes both per layer by the forward pass's own operations (<see cref="Models.Transformer{T}.RecomputeQuery"/>),
    /// the same bits, for about a third more work per single-vector product.
    /// </summary>
    public bool RecomputesCoefficients { get; }
    /// <summary>Recomputing P: q [n×H·D] (null when <see cref="RecomputesCoefficients"/>) and k [n×K·D] as attention saw them, each softmax row's max and sum [H][n].</summary>
    public T[]?[] AttnQ { get; }
    public T[]?[] AttnK { get; private set; }
    public T[]?[] AttnRowMax { get; }
    public T[]?[] AttnRowSum { get; }

    /// <summary>Takes the forward pass's key cache (k after norms and RoPE, [n×K·D] per layer) when P is to be recomputed: no copy.</summary>
    internal void KeepKeys(T[][] keys)
    {
        if (RecomputesProbabilities) AttnK = keys.Select(k => (T[]?)k).ToArray();
    }

    /// <summary>Bytes of stored probabilities above which a trace recomputes them instead (unless asked otherwise).</summary>
    public const long ProbabilityBudgetBytes = 512L << 20;

    /// <summary>Up to this many tokens P is always stored (n² is tiny), whatever was asked for: a recomputed block of P spans
    /// at least <see cref="FrozenMap{T}.MinBlock"/> rows and keys, so that its scores take the GEMM path the forward pass's
    /// took (the same sums, bit for bit), and fewer tokens have no such block; `jacobian --probabilities recomputed` refuses them.</summary>
    public const int AlwaysStoredTokens = FrozenMap<double>.MinBlock - 1;

    /// <summary>Bytes of stored q and γ above which a trace that recomputes P recomputes them as well (unless asked otherwise).</summary>
    public const long CoefficientBudgetBytes = 1L << 30;
    /// <summary>The attention branch W_o·o (+ b_o) before its post-norm, last position [d], where the layer has an attention-out norm.</summary>
    public T[]?[] AttnRaw { get; }
    /// <summary>ρ of the attention output norm [n], where the layer has one (Gemma 3, OLMo 2).</summary>
    public T[]?[] AttnOutScale { get; }
    /// <summary>What the attention branch adds to the residual stream, last position [d] (hook_attn_out; after its post-norm).</summary>
    public T[][] AttnOut { get; }
    /// <summary>ρ of the MLP input norm [n] (ln2.hook_scale), where the layer has one.</summary>
    public T[]?[] MlpInScale { get; }
    /// <summary>The MLP's frozen coefficient γ [n×I]: act(W_gate x), or u ⊙ σ(W_gate x) (see <see cref="MlpFreezing"/>); null when <see cref="RecomputesCoefficients"/>.</summary>
    public T[]?[] MlpCoefficient { get; }
    /// <summary>The residual stream after attention, before the MLP [n×d]: kept where γ is recomputed from it, or for the ordinary Jacobian.</summary>
    public T[]?[] ResidMid { get; }
    /// <summary>The MLP branch W_down z (+ b) before its post-norm, last position [d], where the layer has an MLP-out norm.</summary>
    public T[]?[] MlpRaw { get; }
    /// <summary>ρ of the MLP output norm [n], where the layer has one.</summary>
    public T[]?[] MlpOutScale { get; }
    /// <summary>What the MLP branch adds to the residual stream, last position [d] (hook_mlp_out; after its post-norm).</summary>
    public T[][] MlpOut { get; }
    /// <summary>ρ of the final norm (ln_final.hook_scale) [n].</summary>
    public T[] FinalScale { get; }
    /// <summary>Final-normed hidden states y [n×d].</summary>
    public T[] Final { get; }

    /// <summary>
    /// What the ordinary (non-frozen) Jacobian also needs, recorded only on request: the pre-activations the frozen
    /// map never looks at (q, k before and after their norms and RoPE, v, the gate before its activation, the up
    /// projection). Null when not recorded.
    /// </summary>
    public NonlinearTrace<T>? Nonlinear { get; }

    /// <summary>
    /// What a trace of n tokens with elements of <paramref name="elementSize"/> bytes leaves out and recomputes: P past
    /// <see cref="ProbabilityBudgetBytes"/> (never for the ordinary Jacobian, which reads P, or n ≤ 4), and then q and γ
    /// past <see cref="CoefficientBudgetBytes"/> — the one rule the trace and the memory estimate both follow.
    /// </summary>
    public static (bool probabilities, bool coefficients) Recomputes(ModelConfig c, int n, int elementSize, bool nonlinear = false,
        bool? storeProbabilities = null, bool? storeCoefficients = null)
    {
        long probBytes = (long)c.NumHeads * n * n * c.NumLayers * elementSize;
        bool store = nonlinear || (storeProbabilities ?? probBytes <= ProbabilityBudgetBytes) || n <= AlwaysStoredTokens;
        long coefficientBytes = (long)c.NumLayers * n * (c.QDim + c.IntermediateSize) * elementSize;
        return (!store, !store && !(storeCoefficients ?? coefficientBytes <= CoefficientBudgetBytes));
    }

    /// <param name="storeProbabilities">Keep P itself (null: when H·n²·L fits <see cref="ProbabilityBudgetBytes"/>, or the
    /// ordinary Jacobian needs it); false: keep q, k and the row statistics and recompute P inside each product.</param>
    /// <param name="storeCoefficients">When P is recomputed: keep q and γ (null: when they fit <see cref="CoefficientBudgetBytes"/>); false: recompute them too.</param>
    public FrozenTrace(ModelConfig c, int n, DetachPolicy detach = DetachPolicy.Ours, bool nonlinear = false, bool? storeProbabilities = null,
        bool? storeCoefficients = null)
    {
        Tokens = n; Layers = c.NumLayers; Detach = detach;
        MlpFreezing = detach == DetachPolicy.Reference ? c.Family.ReferenceMlp : MlpFreezing.Gate;
        int d = c.HiddenSize, layers = c.NumLayers;
        var norms = c.Family.Norms;
        Embeddings = Pinned.Array<T>((long)n * d);
        ResidPre = Enumerable.Range(0, layers + 1).Select(_ => Pinned.Array<T>((long)n * d)).ToArray();
        T[][] PerLayer(long len) => Enumerable.Range(0, layers).Select(_ => Pinned.Array<T>(len)).ToArray();
        T[]?[] Where(bool present, long len) => present ? PerLayer(len) : new T[]?[layers];
        AttnInScale = Where(norms.AttnIn is not null, n);
        (RecomputesProbabilities, RecomputesCoefficients) =
            Recomputes(c, n, System.Runtime.CompilerServices.Unsafe.SizeOf<T>(), nonlinear, storeProbabilities, storeCoefficients);
        bool store = !RecomputesProbabilities;
        AttnProbs = Where(store, (long)c.NumHeads * n * n);
        AttnQ = Where(!store && !RecomputesCoefficients, (long)n * c.QDim);
        AttnK = new T[]?[layers];   // the forward pass's own key cache, handed over by KeepKeys
        AttnRowMax = Where(!store, (long)c.NumHeads * n);
        AttnRowSum = Where(!store, (long)c.NumHeads * n);
        // branch outputs are read only at the last position (the taps); the ordinary Jacobian keeps its own full copies
        AttnRaw = Where(norms.AttnOut is not null, d);
        AttnOutScale = Where(norms.AttnOut is not null, n);
        AttnOut = PerLayer(d);
        MlpInScale = Where(norms.MlpIn is not null, n);
        MlpCoefficient = Where(!RecomputesCoefficients, (long)n * c.IntermediateSize);
        ResidMid = Where(RecomputesCoefficients || nonlinear, (long)n * d);
        MlpRaw = Where(norms.MlpOut is not null, d);
        MlpOutScale = Where(norms.MlpOut is not null, n);
        MlpOut = PerLayer(d);
        FinalScale = Pinned.Array<T>(n);
        Final = Pinned.Array<T>((long)n * d);
        Nonlinear = nonlinear ? new NonlinearTrace<T>(c, n) : null;
    }
}

/// <summary>Per-layer pre-activations for exact derivatives through every nonlinearity (see <see cref="FrozenTrace{T}.Nonlinear"/>).</summary>
public sealed class NonlinearTrace<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    /// <summary>q = W_q x and k = W_k x (+ biases) before q/k norms and RoPE [n×H·D], [n×K·D].</summary>
    public T[][] QRaw { get; }
    public T[][] KRaw { get; }
    /// <summary>ρ of each q/k norm row: [n·H], [n·K] per head, or [n] for a whole-projection norm.</summary>
    public T[][] QNormScale { get; }
    public T[][] KNormScale { get; }
    /// <summary>q and k as attention saw them: after norms and RoPE.</summary>
    public T[][] QRot { get; }
    public T[][] KRot { get; }
    /// <summary>v = W_v x (+ b_v) [n×K·D].</summary>
    public T[][] V { get; }
    /// <summary>The gate before its activation, W_gate x, and the up projection W_up x [n×I].</summary>
    public T[][] GatePre { get; }
    public T[][] Up { get; }
    /// <summary>The branches before their post-norms at every position [n×d], where the layer has them.</summary>
    public T[]?[] AttnRaw { get; }
    public T[]?[] MlpRaw { get; }

    public NonlinearTrace(ModelConfig c, int n)
    {
        T[][] PerLayer(long len) => Enumerable.Range(0, c.NumLayers).Select(_ => Pinned.Array<T>(len)).ToArray();
        QRaw = PerLayer((long)n * c.QDim); KRaw = PerLayer((long)n * c.KvDim);
        QNormScale = PerLayer((long)n * c.NumHeads); KNormScale = PerLayer((long)n * c.NumKvHeads);
        QRot = PerLayer((long)n * c.QDim); KRot = PerLayer((long)n * c.KvDim); V = PerLayer((long)n * c.KvDim);
        GatePre = PerLayer((long)n * c.IntermediateSize); Up = PerLayer((long)n * c.IntermediateSize);
        var norms = c.Family.Norms;
        AttnRaw = norms.AttnOut is null ? new T[]?[c.NumLayers] : PerLayer((long)n * c.HiddenSize);
        MlpRaw = norms.MlpOut is null ? new T[]?[c.NumLayers] : PerLayer((long)n * c.HiddenSize);
    }
}
