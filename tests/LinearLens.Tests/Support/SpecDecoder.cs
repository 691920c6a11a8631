using LinearLens.Models;

namespace LinearLens.Tests.Support;

/// <summary>Everything the reference evaluation computes, row-major per position.</summary>
public sealed record SpecOutput(
    int N,
    int Hidden,
    int Vocab,
    double[] Embeddings,          // n×d: input of layer 0 (Gemma: after the √d scale)
    double[][] LayerOutputs,      // [L] n×d: residual stream after each layer
    double[][][][] Attention,     // [L][H][s][t]: attention probabilities (0 where masked)
    double[] Final,               // n×d: final-normed hidden states
    double[] Logits)              // n×V
{
    public ReadOnlySpan<double> FinalRow(int t) => Final.AsSpan(t * Hidden, Hidden);
    public ReadOnlySpan<double> LogitsRow(int t) => Logits.AsSpan(t * Vocab, Vocab);

    /// <summary>The nonlinear factors of this forward pass, for the frozen evaluation (<see cref="SpecFrozenMap"/>).</summary>
    public required SpecFactors Factors { get; init; }
}

/// <summary>
/// Every input-dependent factor of one forward pass, per layer and position: the RMS factors r = (mean x² + ε)^(−1/2)
/// of the attention-in, attention-out (Gemma/OLMo-2 post-norm), MLP-in and MLP-out norms (NaN where the family has
/// no such norm), and per MLP unit the activated gate act(g), the up projection u and σ(g).
/// </summary>
public sealed record SpecFactors(
    double[][] AttnIn, double[][] AttnOut, double[][] MlpIn, double[][] MlpOut,
    double[][] ActGate, double[][] Up, double[][] SigmoidGate);

/// <summary>
/// An independent, deliberately plain evaluation of the decoder forward pass straight from architectures.md §1–§2.7 and
/// Hugging Face's modeling files (docs/hf-family-notes.md), entirely in double precision: token by token (as in generation
/// with a key/value cache), naive loops, no shared code with the engine. Reads weights from a
/// <see cref="RandomWeights"/> dictionary (values exactly as stored) and the configuration from its
/// <see cref="RandomCheckpointSpec"/>. Families: llama (optional attention/MLP biases), qwen2 (q/k/v biases), qwen3,
/// gemma3, mistral/ministral (windows), phi3 (fused projections read as row slices, partial rotary, longrope) and olmo2
/// (no input norm, post-norms on the branch outputs, q/k norms over the whole projection).
/// Longrope: the factor list is the one HF uses for the whole n-token sequence (long iff n &gt; N0). A single forward
/// of n tokens selects by max(position)+1 = n; HF's generation reaches the same state because
/// Phi3ForCausalLM.prepare_inputs_for_generation drops the cache when the length first exceeds N0 and recomputes all
/// positions with the long factors. So every key in the cache uses the list chosen by n.
/// </summary>
public static class SpecDecoder
{
    /// <summary>
    /// Inverse RoPE frequencies ω_i, i = 0 .. R/2−1, in double: ω_i = 1/θ^(2i/R), then scaling (§1.3):
    /// linear ω/f; llama3 by wavelength λ = 2π/ω: λ &lt; N0/h unchanged, λ &gt; N0/l divided by f, otherwise the blend
    /// (1−s)·ω/f + s·ω with s = (N0/λ − l)/(h − l).
    /// </summary>
    public static double[] InverseFrequencies(double theta, int rotaryDim, RopeScalingSpec? scaling)
    {
        var w = new double[rotaryDim / 2];
        for (int i = 0; i < w.Length; i++)
        {
            double omega = 1.0 / Math.Pow(theta, (2.0 * i) / rotaryDim);
            if (scaling is { Type: "linear" }) omega /= scaling.Factor;
            else if (scaling is { Type: "llama3" })
            {
                double f = scaling.Factor, l = scaling.LowFreqFactor, h = scaling.HighFreqFactor, n0 = scaling.OriginalMaxPositionEmbeddings;
                double lambda = 2 * Math.PI / omega;
                if (lambda < n0 / h) { }
                else if (lambda > n0 / l) omega /= f;
                else
                {
                    double s = (n0 / lambda - l) / (h - l);
                    omega = (1 - s) * omega / f + s * omega;
                }
            }
            else if (scaling is not null) throw new NotSupportedException(scaling.Type);
            w[i] = omega;
        }
        return w;
    }

    /// <summary>True when λ_i lies in the llama3 blend region [N0/h, N0/l] (boundaries inclusive).</summary>
    public static bool IsLlama3Medium(double theta, int rotaryDim, RopeScalingSpec s, int i)
    {
        double lambda = 2 * Math.PI * Math.Pow(theta, (2.0 * i) / rotaryDim);
        return lambda >= s.OriginalMaxPositionEmbeddings / s.HighFreqFactor && lambda <= s.OriginalMaxPositionEmbeddings / s.LowFreqFactor;
    }

    /// <summary>Longrope inverse frequencies ω_i = 1 / (e_i · θ^(2i/R)), i = 0 .. R/2−1, e = the chosen factor list.</summary>
    public static double[] LongRopeInverseFrequencies(double theta, int rotaryDim, double[] factors)
    {
        if (factors.Length != rotaryDim / 2) throw new ArgumentException("longrope factor list length != R/2");
        var w = new double[rotaryDim / 2];
        for (int i = 0; i < w.Length; i++) w[i] = 1.0 / (factors[i] * Math.Pow(theta, (2.0 * i) / rotaryDim));
        return w;
    }

    /// <summary>Longrope attention factor √(1 + ln f / ln N0), f = maxPos / N0; 1 when f ≤ 1.</summary>
    public static double LongRopeAttentionFactor(int maxPos, int originalMaxPos)
    {
        double f = (double)maxPos / originalMaxPos;
        return f <= 1.0 ? 1.0 : Math.Sqrt(1.0 + Math.Log(f) / Math.Log(originalMaxPos));
    }

    public static SpecOutput Run(RandomWeights weights, ReadOnlySpan<int> ids) =>
        Run(weights.Spec, weights.Values, ids);

    /// <summary>The forward pass of <paramref name="spec"/>'s model; <paramref name="W"/> returns stored values by canonical name.</summary>
    public static SpecOutput Run(RandomCheckpointSpec spec, Func<string, double[]> W, ReadOnlySpan<int> ids)
    {
        int n = ids.Length, d = spec.Hidden, H = spec.Heads, K = spec.KvHeads, D = spec.HeadDim, I = spec.Intermediate, V = spec.Vocab, L = spec.Layers;
        int G = H / K;
        string family = spec.ModelType;
        bool gemma = family is "gemma3" or "gemma3_text";
        bool phi3 = family == "phi3", olmo2 = family == "olmo2";
        bool qkvBias = family == "qwen2" || (family is "llama" or "olmo2" && spec.AttentionBias);
        bool oBias = family is "llama" or "olmo2" && spec.AttentionBias;
        bool mlpBias = family == "llama" && spec.MlpBias;
        bool headQkNorm = family is "qwen3" or "gemma3" or "gemma3_text";
        double eps = spec.RmsNormEps;
        double c = spec.AttentionScale;
        int R = (int)(D * spec.PartialRotaryFactor);

        double[] E = W("model.embed_tokens.weight");
        double[] lmHead = spec.Tie ? E : W("lm_head.weight");
        var omegas = new double[L][];
        double attnFactor = 1.0;
        for (int l = 0; l < L; l++)
        {
            var scaling = spec.ScalingOf(l);
            if (scaling is { Type: "longrope" })
            {
                int n0 = spec.OriginalMaxPos ?? spec.MaxPos;
                omegas[l] = LongRopeInverseFrequencies(spec.ThetaOf(l), R, n > n0 ? scaling.LongFactor! : scaling.ShortFactor!);
                attnFactor = LongRopeAttentionFactor(spec.MaxPos, n0);
            }
            else omegas[l] = InverseFrequencies(spec.ThetaOf(l), R, scaling);
        }

        var emb = new double[n * d];
        var layerOut = new double[L][];
        for (int l = 0; l < L; l++) layerOut[l] = new double[n * d];
        var attn = new double[L][][][];
        for (int l = 0; l < L; l++)
        {
            attn[l] = new double[H][][];
            for (int h = 0; h < H; h++) { attn[l][h] = new double[n][]; for (int s = 0; s < n; s++) attn[l][h][s] = new double[n]; }
        }
        var final = new double[n * d];
        var logits = new double[n * V];
        double[][] F(int width) { var a = new double[L][]; for (int l = 0; l < L; l++) { a[l] = new double[n * width]; Array.Fill(a[l], double.NaN); } return a; }
        var factors = new SpecFactors(F(1), F(1), F(1), F(1), F(I), F(I), F(I));

        // Key/value cache per layer: [t][K·D] (keys after q/k norm and RoPE).
        var kCache = new List<double[]>[L];
        var vCache = new List<double[]>[L];
        for (int l = 0; l < L; l++) { kCache[l] = []; vCache[l] = []; }

        for (int s = 0; s < n; s++)
        {
            int id = ids[s];
            if (id < 0 || id >= V) throw new ArgumentOutOfRangeException(nameof(ids));
            var h = new double[d];
            double embScale = gemma ? Math.Sqrt(d) : 1.0;
            for (int k = 0; k < d; k++) h[k] = E[(long)id * d + k] * embScale;
            Array.Copy(h, 0, emb, s * d, d);

            for (int l = 0; l < L; l++)
            {
                string p = $"model.layers.{l}.";
                // --- attention branch --- (OLMo 2: no input norm, the raw residual goes in)
                double[] x = olmo2 ? (double[])h.Clone() : Norm(h, W(p + "input_layernorm.weight"), eps, gemma, out factors.AttnIn[l][s]);
                double[] q, kk, v;
                if (phi3)
                {
                    double[] qkv = W(p + "self_attn.qkv_proj.weight");          // rows [q; k; v]
                    q = MatVec(Rows(qkv, 0, H * D, d), x, H * D, d);
                    kk = MatVec(Rows(qkv, H * D, K * D, d), x, K * D, d);
                    v = MatVec(Rows(qkv, H * D + K * D, K * D, d), x, K * D, d);
                }
                else
                {
                    q = MatVec(W(p + "self_attn.q_proj.weight"), x, H * D, d);
                    kk = MatVec(W(p + "self_attn.k_proj.weight"), x, K * D, d);
                    v = MatVec(W(p + "self_attn.v_proj.weight"), x, K * D, d);
                }
                if (qkvBias)
                {
                    AddInPlace(q, W(p + "self_attn.q_proj.bias"));
                    AddInPlace(kk, W(p + "self_attn.k_proj.bias"));
                    AddInPlace(v, W(p + "self_attn.v_proj.bias"));
                }
                if (headQkNorm)
                {
                    double[] qn = W(p + "self_attn.q_norm.weight"), kn = W(p + "self_attn.k_norm.weight");
                    for (int hh = 0; hh < H; hh++) NormHeadInPlace(q, hh * D, D, qn, eps, gemma);
                    for (int j = 0; j < K; j++) NormHeadInPlace(kk, j * D, D, kn, eps, gemma);
                }
                if (olmo2)
                {
                    // One RMS over the whole H·D (K·D) projection, before the split into heads.
                    q = Norm(q, W(p + "self_attn.q_norm.weight"), eps, false);
                    kk = Norm(kk, W(p + "self_attn.k_norm.weight"), eps, false);
                }
                for (int hh = 0; hh < H; hh++) RotateInPlace(q, hh * D, D, R, s, omegas[l], attnFactor);
                for (int j = 0; j < K; j++) RotateInPlace(kk, j * D, D, R, s, omegas[l], attnFactor);
                kCache[l].Add(kk);
                vCache[l].Add(v);

                int? window = spec.WindowOf(l);
                var o = new double[H * D];
                for (int hh = 0; hh < H; hh++)
                {
                    int j = hh / G;                                   // blockwise GQA: kv head ⌊h/G⌋
                    var scores = new double[s + 1];
                    var allowed = new bool[s + 1];
                    double max = double.NegativeInfinity;
                    for (int t = 0; t <= s; t++)
                    {
                        allowed[t] = window is null || s - t <= window.Value - 1;   // 0 ≤ s−t ≤ W−1
                        if (!allowed[t]) continue;
                        double dot = 0;
                        for (int k = 0; k < D; k++) dot += q[hh * D + k] * kCache[l][t][j * D + k];
                        scores[t] = c * dot;
                        if (scores[t] > max) max = scores[t];
                    }
                    double sum = 0;
                    for (int t = 0; t <= s; t++) if (allowed[t]) { scores[t] = Math.Exp(scores[t] - max); sum += scores[t]; }
                    for (int t = 0; t <= s; t++)
                    {
                        double prob = allowed[t] ? scores[t] / sum : 0.0;
                        attn[l][hh][s][t] = prob;
                        if (prob == 0) continue;
                        for (int k = 0; k < D; k++) o[hh * D + k] += prob * vCache[l][t][j * D + k];
                    }
                }
                double[] a = MatVec(W(p + "self_attn.o_proj.weight"), o, d, H * D);
                if (oBias) AddInPlace(a, W(p + "self_attn.o_proj.bias"));
                if (gemma || olmo2) a = Norm(a, W(p + "post_attention_layernorm.weight"), eps, gemma, out factors.AttnOut[l][s]);
                for (int k = 0; k < d; k++) h[k] += a[k];

                // --- MLP branch ---
                double[] xm = gemma ? Norm(h, W(p + "pre_feedforward_layernorm.weight"), eps, true, out factors.MlpIn[l][s])
                    : olmo2 ? (double[])h.Clone()
                    : Norm(h, W(p + "post_attention_layernorm.weight"), eps, false, out factors.MlpIn[l][s]);
                double[] g, u;
                if (phi3)
                {
                    double[] gu = W(p + "mlp.gate_up_proj.weight");              // rows [gate; up]
                    g = MatVec(Rows(gu, 0, I, d), xm, I, d);
                    u = MatVec(Rows(gu, I, I, d), xm, I, d);
                }
                else
                {
                    g = MatVec(W(p + "mlp.gate_proj.weight"), xm, I, d);
                    u = MatVec(W(p + "mlp.up_proj.weight"), xm, I, d);
                }
                if (mlpBias)
                {
                    AddInPlace(g, W(p + "mlp.gate_proj.bias"));
                    AddInPlace(u, W(p + "mlp.up_proj.bias"));
                }
                var act = new double[I];
                for (int i = 0; i < I; i++)
                {
                    double ag = gemma ? GeluTanh(g[i]) : Silu(g[i]);
                    act[i] = ag * u[i];
                    factors.ActGate[l][s * I + i] = ag;
                    factors.Up[l][s * I + i] = u[i];
                    factors.SigmoidGate[l][s * I + i] = 1.0 / (1.0 + Math.Exp(-g[i]));
                }
                double[] m = MatVec(W(p + "mlp.down_proj.weight"), act, d, I);
                if (mlpBias) AddInPlace(m, W(p + "mlp.down_proj.bias"));
                if (gemma || olmo2) m = Norm(m, W(p + "post_feedforward_layernorm.weight"), eps, gemma, out factors.MlpOut[l][s]);
                for (int k = 0; k < d; k++) h[k] += m[k];

                Array.Copy(h, 0, layerOut[l], s * d, d);
            }

            double[] y = Norm(h, W("model.norm.weight"), eps, gemma);
            Array.Copy(y, 0, final, s * d, d);
            double[] z = MatVec(lmHead, y, V, d);
            Array.Copy(z, 0, logits, s * V, V);
        }
        return new SpecOutput(n, d, V, emb, layerOut, attn, final, logits) { Factors = factors };
    }

    /// <summary>RMSNorm, ε inside the root. Llama order w·(x·r); Gemma (1+w)·x·r.</summary>
    static double[] Norm(double[] x, double[] w, double eps, bool gemma) => Norm(x, w, eps, gemma, out _);

    static double[] Norm(double[] x, double[] w, double eps, bool gemma, out double r)
    {
        if (w.Length != x.Length) throw new ArgumentException("norm gain length mismatch");
        double ms = 0;
        for (int k = 0; k < x.Length; k++) ms += x[k] * x[k];
        ms /= x.Length;
        r = 1.0 / Math.Sqrt(ms + eps);
        var y = new double[x.Length];
        for (int k = 0; k < x.Length; k++) y[k] = gemma ? x[k] * r * (1.0 + w[k]) : w[k] * (x[k] * r);
        return y;
    }

    static void NormHeadInPlace(double[] x, int offset, int len, double[] w, double eps, bool gemma)
    {
        var seg = new double[len];
        Array.Copy(x, offset, seg, 0, len);
        Array.Copy(Norm(seg, w, eps, gemma), 0, x, offset, len);
    }

    /// <summary>
    /// rotate_half RoPE on one head (length D) at position t over the first R dims: dimension k &lt; R paired with
    /// k ± R/2, angle t·ω_(k mod R/2), cos and sin both multiplied by the attention factor a; dims [R, D) pass through.
    /// </summary>
    public static double[] Rotate(double[] head, int t, double[] omega, int rotaryDim, double attentionFactor = 1.0)
    {
        var x = (double[])head.Clone();
        RotateInPlace(x, 0, head.Length, rotaryDim, t, omega, attentionFactor);
        return x;
    }

    static void RotateInPlace(double[] x, int offset, int D, int R, int t, double[] omega, double a)
    {
        if (omega.Length != R / 2) throw new ArgumentException("omega length != R/2");
        int half = R / 2;
        var u = new double[R];
        Array.Copy(x, offset, u, 0, R);
        for (int k = 0; k < R; k++)
        {
            int i = k % half;
            double phi = t * omega[i];
            double cos = a * Math.Cos(phi), sin = a * Math.Sin(phi);
            x[offset + k] = k < half ? u[k] * cos - u[k + half] * sin : u[k] * cos + u[k - half] * sin;
        }
    }

    /// <summary>Rows [first, first+count) of a row-major matrix with <paramref name="cols"/> columns.</summary>
    internal static double[] Rows(double[] w, int first, int count, int cols) => w.AsSpan(first * cols, count * cols).ToArray();

    internal static void AddInPlace(double[] y, double[] b)
    {
        if (b.Length != y.Length) throw new ArgumentException("bias length mismatch");
        for (int i = 0; i < y.Length; i++) y[i] += b[i];
    }

    /// <summary>y = W·x with W stored [rows, cols] row-major.</summary>
    internal static double[] MatVec(double[] w, double[] x, int rows, int cols)
    {
        if (w.Length != (long)rows * cols || x.Length != cols) throw new ArgumentException("shape mismatch");
        var y = new double[rows];
        for (int r = 0; r < rows; r++)
        {
            double acc = 0;
            for (int k = 0; k < cols; k++) acc += w[(long)r * cols + k] * x[k];
            y[r] = acc;
        }
        return y;
    }

    static double Silu(double z) => z / (1.0 + Math.Exp(-z));

    static double GeluTanh(double z) => 0.5 * z * (1.0 + Math.Tanh(Math.Sqrt(2.0 / Math.PI) * (z + 0.044715 * z * z * z)));
}

/// <summary>A fresh folder under the system temp directory, deleted (with its contents) on dispose.</summary>
public sealed class ScratchFolder : IDisposable
{
    public string Path { get; }

    public ScratchFolder(string tag = "ll")
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "linearlens-tests", $"{tag}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(Path);
    }

    public string Sub(string name)
    {
        string p = System.IO.Path.Combine(Path, name);
        Directory.CreateDirectory(p);
        return p;
    }

    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}
