using LinearLens.Models;

namespace LinearLens.Tests.Support;

/// <summary>
/// What a detached Jacobian is taken of: the last position's residual after <see cref="Layer"/> layers (Key "layer"),
/// or that layer's attention / MLP branch output ("attn", "mlp"); w.r.t. the embeddings (cumulative) or the stream
/// entering the layer (Layerwise); with the final norm applied at its own frozen factor unless FinalNorm is false.
/// Reference: the paper's freezing (Phi: u and σ(gate) frozen, gate linear; Gemma 3 / OLMo 2 branches tapped before
/// their post-norms); otherwise ours (act(gate) frozen, branches tapped after their post-norms).
/// </summary>
public sealed record SpecTarget(int Layer, string Key = "layer", bool Layerwise = false, bool FinalNorm = true, bool Reference = false);

/// <summary>
/// An independent evaluation of the frozen network F̃(X; X*) (architectures.md §3.2–§3.6) from the factors the
/// <see cref="SpecDecoder"/> recorded at the real input: every RMS factor, activated gate (or Phi's u and σ(g)) and
/// attention probability held at its X* value, everything else — projections, biases, gains, residual adds — applied
/// as is. Linear in X up to the bias constants, so J and the offset c follow from unit inputs: c = F̃(0),
/// Jᵢⱼ = F̃(e_ij) − c. Shares no code with the engine.
/// </summary>
public static class SpecFrozenMap
{
    public sealed record Result(double[] J, double[] Offset, double[] Output, double[] Input, int N, int Hidden);

    /// <summary>
    /// J [d, n, d] row-major ((k·n + i)·d + j), the offset c [d], the output y* [d] and the input X* [n, d]. With
    /// <paramref name="inputDims"/> only the columns (i, j ∈ inputDims) for every position i are evaluated (the others
    /// are NaN) — each column costs one frozen pass.
    /// </summary>
    public static Result Jacobian(RandomWeights w, int[] ids, SpecTarget target, int[]? inputDims = null) =>
        Jacobian(w.Spec, w.Values, ids, target, inputDims);

    public static Result Jacobian(RandomCheckpointSpec spec, Func<string, double[]> W, int[] ids, SpecTarget target, int[]? inputDims = null)
    {
        var star = SpecDecoder.Run(spec, W, ids);
        int n = ids.Length, d = spec.Hidden;
        double[] xStar = !target.Layerwise || target.Layer == 1 ? star.Embeddings : star.LayerOutputs[target.Layer - 2];
        bool gemma = spec.ModelType is "gemma3" or "gemma3_text";
        double[] tapStar = Tap(spec, W, star, target, xStar);
        double[] finalGain = W("model.norm.weight");
        double rf = 1.0 / Math.Sqrt(tapStar.Sum(x => x * x) / d + spec.RmsNormEps);
        double[] Out(double[] x)
        {
            double[] t = Tap(spec, W, star, target, x);
            if (!target.FinalNorm) return t;
            for (int k = 0; k < d; k++) t[k] = gemma ? t[k] * rf * (1.0 + finalGain[k]) : finalGain[k] * (t[k] * rf);
            return t;
        }
        double[] c = Out(new double[n * d]);
        double[] y = Out(xStar);
        var J = new double[d * n * d];
        if (inputDims is not null) Array.Fill(J, double.NaN);
        var e = new double[n * d];
        for (int i = 0; i < n; i++)
            foreach (int j in inputDims ?? Enumerable.Range(0, d).ToArray())
            {
                e[i * d + j] = 1;
                double[] col = Out(e);
                e[i * d + j] = 0;
                for (int k = 0; k < d; k++) J[(k * n + i) * d + j] = col[k] - c[k];
            }
        return new Result(J, c, y, xStar, n, d);
    }

    /// <summary>The tapped vector (before any final norm) of the frozen network at input rows X (n×d).</summary>
    static double[] Tap(RandomCheckpointSpec spec, Func<string, double[]> W, SpecOutput star, SpecTarget target, double[] X)
    {
        int n = star.N, d = spec.Hidden, H = spec.Heads, K = spec.KvHeads, D = spec.HeadDim, I = spec.Intermediate, G = H / K;
        string family = spec.ModelType;
        bool gemma = family is "gemma3" or "gemma3_text", phi3 = family == "phi3", olmo2 = family == "olmo2";
        bool postNorms = gemma || olmo2;
        bool qkvBias = family == "qwen2" || (family is "llama" or "olmo2" && spec.AttentionBias);
        bool oBias = family is "llama" or "olmo2" && spec.AttentionBias, mlpBias = family == "llama" && spec.MlpBias;
        bool gateLinear = target.Reference && phi3;
        bool tapBeforePostNorm = target.Reference && postNorms;
        var f = star.Factors;

        double[] Gain(double[] w, double r, double[] x)
        {
            var y = new double[x.Length];
            for (int k = 0; k < x.Length; k++) y[k] = gemma ? x[k] * r * (1.0 + w[k]) : w[k] * (x[k] * r);
            return y;
        }

        var h = new double[n][];
        for (int s = 0; s < n; s++) h[s] = X.AsSpan(s * d, d).ToArray();
        int first = target.Layerwise ? target.Layer - 1 : 0;
        for (int l = first; l < target.Layer; l++)
        {
            string p = $"model.layers.{l}.";
            // Attention: only v is a path; P is frozen.
            var v = new double[n][];
            for (int s = 0; s < n; s++)
            {
                double[] a = olmo2 ? h[s] : Gain(W(p + "input_layernorm.weight"), f.AttnIn[l][s], h[s]);
                v[s] = phi3
                    ? SpecDecoder.MatVec(SpecDecoder.Rows(W(p + "self_attn.qkv_proj.weight"), H * D + K * D, K * D, d), a, K * D, d)
                    : SpecDecoder.MatVec(W(p + "self_attn.v_proj.weight"), a, K * D, d);
                if (qkvBias) SpecDecoder.AddInPlace(v[s], W(p + "self_attn.v_proj.bias"));
            }
            var attnRaw = new double[n][];
            var attnOut = new double[n][];
            for (int s = 0; s < n; s++)
            {
                var o = new double[H * D];
                for (int hh = 0; hh < H; hh++)
                {
                    int j = hh / G;
                    for (int t = 0; t <= s; t++)
                    {
                        double prob = star.Attention[l][hh][s][t];
                        if (prob == 0) continue;
                        for (int k = 0; k < D; k++) o[hh * D + k] += prob * v[t][j * D + k];
                    }
                }
                attnRaw[s] = SpecDecoder.MatVec(W(p + "self_attn.o_proj.weight"), o, d, H * D);
                if (oBias) SpecDecoder.AddInPlace(attnRaw[s], W(p + "self_attn.o_proj.bias"));
                attnOut[s] = postNorms ? Gain(W(p + "post_attention_layernorm.weight"), f.AttnOut[l][s], attnRaw[s]) : attnRaw[s];
            }
            var mid = new double[n][];
            for (int s = 0; s < n; s++) { mid[s] = (double[])h[s].Clone(); SpecDecoder.AddInPlace(mid[s], attnOut[s]); }

            // MLP: ours — act(gate) frozen, up is the path; Phi reference — u and σ(gate) frozen, gate is the path.
            var mlpRaw = new double[n][];
            var mlpOut = new double[n][];
            for (int s = 0; s < n; s++)
            {
                double[] b = gemma ? Gain(W(p + "pre_feedforward_layernorm.weight"), f.MlpIn[l][s], mid[s])
                    : olmo2 ? mid[s]
                    : Gain(W(p + "post_attention_layernorm.weight"), f.MlpIn[l][s], mid[s]);
                double[] lin;
                if (phi3)
                {
                    double[] gu = W(p + "mlp.gate_up_proj.weight");
                    lin = SpecDecoder.MatVec(SpecDecoder.Rows(gu, gateLinear ? 0 : I, I, d), b, I, d);
                }
                else
                {
                    lin = SpecDecoder.MatVec(W(p + "mlp.up_proj.weight"), b, I, d);
                    if (mlpBias) SpecDecoder.AddInPlace(lin, W(p + "mlp.up_proj.bias"));
                }
                var inner = new double[I];
                for (int i = 0; i < I; i++)
                    inner[i] = gateLinear ? f.Up[l][s * I + i] * f.SigmoidGate[l][s * I + i] * lin[i] : f.ActGate[l][s * I + i] * lin[i];
                mlpRaw[s] = SpecDecoder.MatVec(W(p + "mlp.down_proj.weight"), inner, d, I);
                if (mlpBias) SpecDecoder.AddInPlace(mlpRaw[s], W(p + "mlp.down_proj.bias"));
                mlpOut[s] = postNorms ? Gain(W(p + "post_feedforward_layernorm.weight"), f.MlpOut[l][s], mlpRaw[s]) : mlpRaw[s];
            }
            for (int s = 0; s < n; s++) { h[s] = mid[s]; SpecDecoder.AddInPlace(h[s], mlpOut[s]); }

            if (l == target.Layer - 1)
            {
                int last = n - 1;
                return target.Key switch
                {
                    "layer" => (double[])h[last].Clone(),
                    "attn" => (double[])(tapBeforePostNorm ? attnRaw[last] : attnOut[last]).Clone(),
                    "mlp" => (double[])(tapBeforePostNorm ? mlpRaw[last] : mlpOut[last]).Clone(),
                    _ => throw new ArgumentException($"key '{target.Key}'"),
                };
            }
        }
        throw new ArgumentException($"layer {target.Layer} outside 1..{spec.Layers}");
    }
}
