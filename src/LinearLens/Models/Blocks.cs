using System.Numerics;
using System.Numerics.Tensors;
using LinearLens.Loading;
using LinearLens.Numerics;

namespace LinearLens.Models;

/// <summary>
/// The shared building blocks of every family (architectures.md §1), in the compute type T: float64 does every
/// step in double; float32 follows Hugging Face's float32 order of operations.
/// </summary>
public static class Blocks<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    /// <summary>
    /// RMSNorm of each row of length m: out = gain ⊙ (x · ρ), ρ = (mean x² + ε)^(−1/2), ε inside the root.
    /// The per-row ρ is written to <paramref name="scale"/> (the frozen factor). Gemma's 1+w is folded into gain.
    /// In place is allowed (out == x).
    /// </summary>
    public static void RmsNorm(ReadOnlySpan<T> x, int rows, int m, ReadOnlySpan<T> gain, T eps, Span<T> output, Span<T> scale)
    {
        for (int r = 0; r < rows; r++)
        {
            var row = x.Slice(r * m, m);
            var dst = output.Slice(r * m, m);
            T rho = RmsScale(row, eps);
            if (!scale.IsEmpty) scale[r] = rho;
            TensorPrimitives.Multiply(row, rho, dst);
            TensorPrimitives.Multiply(dst, gain, dst);
        }
    }

    /// <summary>ρ = (mean x² + ε)^(−1/2) of one row: the factor the detached map freezes.</summary>
    public static T RmsScale(ReadOnlySpan<T> row, T eps) =>
        T.One / T.Sqrt(TensorPrimitives.SumOfSquares(row) * (T.One / T.CreateChecked(row.Length)) + eps);

    /// <summary>Applies a frozen row scale and a gain: out = gain ⊙ (x · ρ_row) — the linear map a norm becomes.</summary>
    public static void ScaleRows(ReadOnlySpan<T> x, int rows, int m, ReadOnlySpan<T> gain, ReadOnlySpan<T> scale, Span<T> output)
    {
        for (int r = 0; r < rows; r++)
        {
            var dst = output.Slice(r * m, m);
            TensorPrimitives.Multiply(x.Slice(r * m, m), scale[r], dst);
            TensorPrimitives.Multiply(dst, gain, dst);
        }
    }

    /// <summary>
    /// "rotate_half" RoPE on `heads` head vectors per row, row r at position startPos + r: dimension k pairs with
    /// k + R/2 (architectures.md §1.3); dimensions ≥ R pass through.
    /// </summary>
    public static void Rope(Span<T> x, int rows, int heads, int headDim, RopeTable<T> table, int startPos)
    {
        int half = table.Half;
        for (int r = 0; r < rows; r++)
        {
            var cos = table.Cos(startPos + r);
            var sin = table.Sin(startPos + r);
            for (int h = 0; h < heads; h++)
            {
                var u = x.Slice((r * heads + h) * headDim, headDim);
                for (int k = 0; k < half; k++)
                {
                    T a = u[k], b = u[k + half];
                    u[k] = a * cos[k] - b * sin[k];
                    u[k + half] = b * cos[k] + a * sin[k];
                }
            }
        }
    }

    /// <summary>
    /// Causal (optionally sliding-window) grouped-query attention for `rows` queries at positions startPos…,
    /// over keys/values 0 … startPos+rows−1 held in the cache. Query head h reads kv head h / (H/K).
    /// o[r, h·D…] = Σ_t P_h[r,t] v_t. Probabilities go to <paramref name="probs"/> [H][rows][keys] when given; each
    /// softmax row's maximum and normalizer to <paramref name="rowMax"/>, <paramref name="rowSum"/> [H][rows] (what
    /// recomputes P exactly from q and k, see <see cref="ProbabilityRow"/>).
    /// </summary>
    public static void Attention(T[] q, int rows, int startPos, T[] kCache, T[] vCache, ModelConfig c, int? window,
        T[] scores, T[] o, T[]? probs, T[]? rowMax = null, T[]? rowSum = null)
    {
        int H = c.NumHeads, D = c.HeadDim, G = c.NumHeads / c.NumKvHeads, keys = startPos + rows;
        for (int h = 0; h < H; h++)
        {
            int j = h / G;
            // scores[r, t] = c · ⟨q_{r,h}, k_{t,j}⟩
            MatMul.Run(Pinned.View(q, rows, D, h * D, c.QDim), false, Pinned.View(kCache, keys, D, j * D, c.KvDim), true,
                scores, 0, keys, alpha: c.AttentionScale);
            for (int r = 0; r < rows; r++)
            {
                int s = startPos + r;
                int first = window is int w ? Math.Max(0, s - w + 1) : 0;   // visible keys: 0 ≤ s − t ≤ W − 1
                var row = scores.AsSpan(r * keys, keys);
                var visible = row[first..(s + 1)];
                T max = TensorPrimitives.Max<T>(visible);
                T sum = T.Zero;
                for (int t = 0; t < visible.Length; t++) { visible[t] = T.Exp(visible[t] - max); sum += visible[t]; }
                TensorPrimitives.Divide(visible, sum, visible);
                row[..first].Clear();
                row[(s + 1)..].Clear();
                if (rowMax is not null) { rowMax[h * rows + r] = max; rowSum![h * rows + r] = sum; }
            }
            if (probs is not null) scores.AsSpan(0, rows * keys).CopyTo(probs.AsSpan(h * rows * keys));
            MatMul.Run(Pinned.View(scores, rows, keys), false, Pinned.View(vCache, keys, D, j * D, c.KvDim), false,
                o, h * D, c.QDim);
        }
    }

    /// <summary>
    /// Probabilities of one softmax row from its raw scores (keys t0 … t0+len−1 of query position s), given the row's
    /// maximum and normalizer: the same operations as <see cref="Attention"/> (exp(x − max), then a division by the sum),
    /// so the values are bit for bit the forward pass's; masked keys (t &gt; s, or outside the window) become 0.
    /// </summary>
    public static void ProbabilityRow(Span<T> scores, int s, int t0, int? window, T max, T sum)
    {
        int first = window is int w ? Math.Max(0, s - w + 1) : 0;
        int lo = Math.Clamp(first - t0, 0, scores.Length), hi = Math.Clamp(s + 1 - t0, 0, scores.Length);
        var visible = scores[lo..Math.Max(lo, hi)];
        for (int t = 0; t < visible.Length; t++) visible[t] = T.Exp(visible[t] - max);
        TensorPrimitives.Divide(visible, sum, visible);
        scores[..lo].Clear();
        scores[Math.Max(lo, hi)..].Clear();
    }

    static readonly T K0 = T.CreateChecked(0.7978845608028654), K1 = T.CreateChecked(0.044715), Half = T.CreateChecked(0.5);

    /// <summary>silu(z) = z/(1+e^(−z)); gelu_pytorch_tanh(z) = ½·z·(1 + tanh(√(2/π)·(z + 0.044715·z³))).</summary>
    public static T Activate(Activation act, T z) => act == Activation.Silu
        ? z / (T.One + T.Exp(-z))
        : Half * z * (T.One + T.Tanh(K0 * (z + K1 * z * z * z)));

    /// <summary>The derivative of <see cref="Activate"/> at z.</summary>
    public static T ActivationDerivative(Activation act, T z)
    {
        if (act == Activation.Silu)
        {
            T s = T.One / (T.One + T.Exp(-z));
            return s * (T.One + z * (T.One - s));
        }
        T th = T.Tanh(K0 * (z + K1 * z * z * z));
        return Half * (T.One + th) + Half * z * (T.One - th * th) * K0 * (T.One + T.CreateChecked(3) * K1 * z * z);
    }

    /// <summary>y[rows×out] = x·Wᵀ (+ bias on every row): a linear layer.</summary>
    public static void Linear(T[] x, int rows, MatrixView w, T[]? bias, T[] y)
    {
        MatMul.Linear(x, rows, w, y);
        if (bias is not null) AddBiasRows(y, rows, bias);
    }

    /// <summary>Adds the same bias vector to each of `rows` rows of y.</summary>
    public static void AddBiasRows(T[] y, int rows, ReadOnlySpan<T> bias)
    {
        int m = bias.Length;
        for (int r = 0; r < rows; r++) TensorPrimitives.Add(y.AsSpan(r * m, m), bias, y.AsSpan(r * m, m));
    }

    /// <summary>
    /// Gated MLP: g = W_gate x (+b), u = W_up x (+b), z = act(g) ⊙ u, out = W_down z (+b). The frozen coefficient γ
    /// goes to <paramref name="coefficient"/> when given: act(g) when the gate is frozen, u ⊙ σ(g) when u and σ(g) are
    /// (<see cref="MlpFreezing"/>). <paramref name="gatePre"/> and <paramref name="upOut"/> receive g and u.
    /// </summary>
    public static void GatedMlp(T[] x, int rows, LayerWeights w, MlpBiases<T> b, Activation act, T[] gate, T[] up, T[] output,
        MlpFreezing freezing = MlpFreezing.Gate, T[]? coefficient = null, T[]? gatePre = null, T[]? upOut = null)
    {
        Linear(x, rows, w.Gate, b.Gate, gate);
        Linear(x, rows, w.Up, b.Up, up);
        var g = gate.AsSpan(0, rows * w.Gate.Rows);
        var u = up.AsSpan(0, g.Length);
        if (gatePre is not null) g.CopyTo(gatePre);
        if (upOut is not null) u.CopyTo(upOut);
        if (coefficient is not null && freezing == MlpFreezing.UpAndSigmoid) UpTimesSigmoid(u, g, coefficient);
        for (int i = 0; i < g.Length; i++) g[i] = Activate(act, g[i]);
        if (coefficient is not null && freezing == MlpFreezing.Gate) g.CopyTo(coefficient);
        TensorPrimitives.Multiply(u, g, u);
        Linear(up, rows, w.Down, b.Down, output);
    }

    /// <summary>
    /// The frozen coefficient γ alone, by <see cref="GatedMlp"/>'s own operations (so the same bits): act(W_gate x + b)
    /// into <paramref name="coefficient"/> (which may be <paramref name="gate"/> itself), or u ⊙ σ(g) under the Phi
    /// freezing (which needs <paramref name="up"/>). A long-input trace recomputes it from the stream after attention.
    /// </summary>
    public static void MlpCoefficient(T[] x, int rows, LayerWeights w, MlpBiases<T> b, Activation act, MlpFreezing freezing, T[] gate, T[]? up, T[] coefficient)
    {
        Linear(x, rows, w.Gate, b.Gate, gate);
        var g = gate.AsSpan(0, rows * w.Gate.Rows);
        if (freezing == MlpFreezing.UpAndSigmoid)
        {
            Linear(x, rows, w.Up, b.Up, up!);
            UpTimesSigmoid(up.AsSpan(0, g.Length), g, coefficient);
        }
        else
            for (int i = 0; i < g.Length; i++) coefficient[i] = Activate(act, g[i]);
    }

    static void UpTimesSigmoid(ReadOnlySpan<T> u, ReadOnlySpan<T> g, Span<T> coefficient)
    {
        for (int i = 0; i < g.Length; i++) coefficient[i] = u[i] / (T.One + T.Exp(-g[i]));
    }
}

/// <summary>The MLP's biases widened to T (null where absent).</summary>
public sealed record MlpBiases<T>(T[]? Gate, T[]? Up, T[]? Down);

/// <summary>
/// cos/sin of every rotary angle φ_{p,i} = p·ω_i for positions 0…capacity−1 (architectures.md §1.3), times the
/// attention factor a (longrope; 1 otherwise), computed in T: double throughout in float64, float32 arithmetic (as
/// Hugging Face) in float32. A longrope table uses the short or the long factors, chosen by the caller by sequence length.
/// </summary>
public sealed class RopeTable<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    readonly T[] _cos, _sin;
    public int Half { get; }
    public int Capacity { get; }

    public RopeTable(RopeSpec spec, int headDim, int capacity, bool longFactors = false)
    {
        int R = (int)Math.Floor(headDim * spec.PartialRotaryFactor);
        Half = R / 2; Capacity = capacity;
        var omega = InverseFrequencies(spec, R, longFactors);
        T a = T.CreateChecked(spec.AttentionFactor);
        _cos = new T[(long)capacity * Half];
        _sin = new T[(long)capacity * Half];
        for (int p = 0; p < capacity; p++)
            for (int i = 0; i < Half; i++)
            {
                T phi = T.CreateChecked(p) * omega[i];
                _cos[p * Half + i] = T.Cos(phi) * a;
                _sin[p * Half + i] = T.Sin(phi) * a;
            }
    }

    public ReadOnlySpan<T> Cos(int pos) => _cos.AsSpan(pos * Half, Half);
    public ReadOnlySpan<T> Sin(int pos) => _sin.AsSpan(pos * Half, Half);

    /// <summary>ω_i = 1/θ^(2i/R), then the rope type's scaling, in the order Hugging Face applies it.</summary>
    public static T[] InverseFrequencies(RopeSpec spec, int R, bool longFactors = false)
    {
        T C(double v) => T.CreateChecked(v);
        var omega = new T[R / 2];
        if (spec.Type == "longrope")
        {
            // ω_i = 1 / (e_i · θ^(2i/R)), e = long_factor beyond original_max_position_embeddings, else short_factor
            var e = longFactors ? spec.LongFactor! : spec.ShortFactor!;
            for (int i = 0; i < R / 2; i++) omega[i] = T.One / (C(e[i]) * T.Pow(C(spec.Theta), C(2 * i) / C(R)));
            return omega;
        }
        for (int i = 0; i < R / 2; i++)
            omega[i] = T.One / T.Pow(C(spec.Theta), C(2 * i) / C(R));
        if (spec.FrequencyDivisors is { } div)
            for (int i = 0; i < omega.Length; i++) omega[i] /= C(div[i]);
        switch (spec.Type)
        {
            case "linear":
                for (int i = 0; i < omega.Length; i++) omega[i] /= C(spec.Factor);
                break;
            case "llama3":
                T f = C(spec.Factor), lo = C(spec.LowFreqFactor), hi = C(spec.HighFreqFactor), n0 = C(spec.OriginalMaxPositions);
                T lowWavelen = n0 / lo, highWavelen = n0 / hi;
                for (int i = 0; i < omega.Length; i++)
                {
                    T wavelen = C(2 * Math.PI) / omega[i];
                    if (wavelen > lowWavelen) omega[i] /= f;                   // low frequency: divided by f
                    else if (wavelen >= highWavelen)                            // medium: smooth blend (bounds inclusive)
                    {
                        T s = (n0 / wavelen - lo) / (hi - lo);
                        omega[i] = (T.One - s) * omega[i] / f + s * omega[i];
                    }
                }
                break;
        }
        return omega;
    }
}
