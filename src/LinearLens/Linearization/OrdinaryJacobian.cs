using System.Diagnostics;
using System.Numerics;
using System.Numerics.Tensors;
using LinearLens.Loading;
using LinearLens.Models;
using LinearLens.Numerics;

namespace LinearLens.Linearization;

/// <summary>
/// The ordinary Jacobian ∂(output)/∂xᵢ of the real, non-frozen network, by exact reverse-mode derivative rules
/// through every nonlinearity: RMSNorm (with its scale's dependence on x), per-head q/k norms, RoPE, softmax,
/// SiLU / GELU-tanh gates. It is the first Taylor term, so Σᵢ Jᵢxᵢ does not reconstruct y — the comparison the
/// paper draws against the detached Jacobian. Batched like <see cref="FrozenMap{T}"/>: B cotangents as n·B
/// position-major rows, weight products as GEMMs.
/// </summary>
public sealed class OrdinaryJacobian<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    readonly Transformer<T> model;
    readonly FrozenTrace<T> trace;
    readonly NonlinearTrace<T> nl;
    readonly FrozenMap<T> frozen;   // for the target's input and output values
    readonly ModelConfig c;
    readonly int n, d;
    readonly T eps;

    public OrdinaryJacobian(Transformer<T> model, FrozenTrace<T> trace)
    {
        this.model = model; this.trace = trace;
        nl = trace.Nonlinear ?? throw new ArgumentException("the ordinary Jacobian needs a trace recorded with nonlinear: true");
        frozen = new FrozenMap<T>(model, trace);
        c = model.Config; n = trace.Tokens; d = c.HiddenSize; eps = T.CreateChecked(c.RmsNormEps);
    }

    /// <summary>The full ordinary Jacobian [d, n, d] of a target, with Σᵢ Jᵢxᵢ and its (large) distance from y.</summary>
    public JacobianResult<T> Compute(JacobianTarget target, Action<double>? progress = null)
    {
        var sw = Stopwatch.StartNew();
        var J = DetachedJacobian.Assemble<T>(n, d, Math.Clamp(4096 / n, 1, d), (u, b, g) => Vjp(target, u, b, g), progress);
        // the first Taylor term: Σᵢ Jᵢxᵢ alone (no constant term is claimed)
        return DetachedJacobian.Explain(target, n, d, J, frozen.Input(target), frozen.Output(target), new T[d], sw);
    }

    /// <summary>uᵀ·∂(output)/∂(input) for B cotangents [B][d] → [n][B][d] position-major.</summary>
    public void Vjp(JacobianTarget t, ReadOnlySpan<T> cotangents, int B, T[] result)
    {
        t.Validate(c.NumLayers);
        int R = n * B, last = (n - 1) * B * d;
        var g = Pinned.Array<T>((long)R * d);
        var top = g.AsSpan(last, B * d);
        cotangents[..(B * d)].CopyTo(top);
        if (t.FinalNorm)
        {
            var site = frozen.SiteValue(t).ToArray();
            T rho = frozen.OutputScale(t);
            for (int b = 0; b < B; b++) NormVjp(site, rho, model.FinalNormGain, top.Slice(b * d, d), top.Slice(b * d, d));
        }
        int l = t.Layer - 1;
        switch (t.Key)
        {
            case OutputKey.Layer: Mlp(l, g, B, addResidual: true); Attention(l, g, B, addResidual: true); break;
            case OutputKey.Mlp: Mlp(l, g, B, addResidual: false); Attention(l, g, B, addResidual: true); break;
            case OutputKey.Attn: Attention(l, g, B, addResidual: false); break;
        }
        for (l = t.Layer - 2; l >= t.FirstLayer; l--)
        {
            Mlp(l, g, B, addResidual: true);
            Attention(l, g, B, addResidual: true);
        }
        g.AsSpan(0, R * d).CopyTo(result);
    }

    /// <summary>RMSNorm VJP: y = w ⊙ x·ρ(x) ⇒ Γₓ = ρ·(w⊙Γ) − x·ρ³·⟨x, w⊙Γ⟩/m. In place allowed.</summary>
    static void NormVjp(ReadOnlySpan<T> x, T rho, ReadOnlySpan<T> gain, ReadOnlySpan<T> gOut, Span<T> gIn)
    {
        int m = x.Length;
        Span<T> wg = m <= 512 ? stackalloc T[m] : new T[m];
        TensorPrimitives.Multiply(gain, gOut, wg);
        T coef = rho * rho * rho * TensorPrimitives.Dot<T>(x, wg) / T.CreateChecked(m);
        for (int i = 0; i < m; i++) gIn[i] = rho * wg[i] - coef * x[i];
    }

    /// <summary>Applies NormVjp to every row (t, b), x and ρ taken per position t; result added to dst or written.</summary>
    void NormVjpRows(T[] x, T[] rho, T[] gain, T[] gOut, int B, T[] dst, bool add)
    {
        Parallel.For(0, n, t =>
        {
            var xt = x.AsSpan(t * d, d);
            var tmp = new T[d];
            for (int b = 0; b < B; b++)
            {
                int o = (t * B + b) * d;
                NormVjp(xt, rho[t], gain, gOut.AsSpan(o, d), tmp);
                if (add) TensorPrimitives.Add(dst.AsSpan(o, d), tmp, dst.AsSpan(o, d)); else tmp.CopyTo(dst.AsSpan(o, d));
            }
        });
    }

    /// <summary>g (cotangent of the MLP block's output, or of h'' when addResidual) → g of h' (MLP branch added).</summary>
    void Mlp(int l, T[] g, int B, bool addResidual)
    {
        var p = model.Params(l);
        var w = p.Weights;
        int R = n * B, I = c.IntermediateSize;
        var gm = Pinned.Array<T>((long)R * d);
        if (p.MlpOut is { } gOut) NormVjpRows(nl.MlpRaw[l]!, trace.MlpOutScale[l]!, gOut, g, B, gm, add: false);
        else g.AsSpan(0, R * d).CopyTo(gm);
        var gz = Pinned.Array<T>((long)R * I);
        MatMul.Run(Pinned.View(gm, R, d), false, w.Down, false, gz, 0, I);
        // Γ_u = act(g) ⊙ Γ_z;  Γ_gate = act'(g) ⊙ u ⊙ Γ_z
        var gg = Pinned.Array<T>((long)R * I);
        Parallel.For(0, n, t =>
        {
            var pre = nl.GatePre[l].AsSpan(t * I, I);
            var up = nl.Up[l].AsSpan(t * I, I);
            for (int b = 0; b < B; b++)
            {
                var zrow = gz.AsSpan((t * B + b) * I, I);
                var grow = gg.AsSpan((t * B + b) * I, I);
                for (int i = 0; i < I; i++)
                {
                    grow[i] = Blocks<T>.ActivationDerivative(c.Activation, pre[i]) * up[i] * zrow[i];
                    zrow[i] *= Blocks<T>.Activate(c.Activation, pre[i]);
                }
            }
        });
        var gx = Pinned.Array<T>((long)R * d);
        MatMul.Run(Pinned.View(gz, R, I), false, w.Up, false, gx, 0, d);
        MatMul.Run(Pinned.View(gg, R, I), false, w.Gate, false, gx, 0, d, beta: 1);
        if (!addResidual) Array.Clear(g, 0, R * d);
        if (p.MlpIn is { } gIn) NormVjpRows(trace.ResidMid[l]!, trace.MlpInScale[l]!, gIn, gx, B, g, add: true);
        else TensorPrimitives.Add(g.AsSpan(0, R * d), gx.AsSpan(0, R * d), g.AsSpan(0, R * d));
    }

    /// <summary>g (cotangent of h', or of the attention output when !addResidual) → g of h (attention branch added).</summary>
    void Attention(int l, T[] g, int B, bool addResidual)
    {
        var p = model.Params(l);
        var w = p.Weights;
        int R = n * B, H = c.NumHeads, K = c.NumKvHeads, D = c.HeadDim, G = H / K, q = c.QDim, kv = c.KvDim;
        var ga = Pinned.Array<T>((long)R * d);
        if (p.AttnOut is { } gOut) NormVjpRows(nl.AttnRaw[l]!, trace.AttnOutScale[l]!, gOut, g, B, ga, add: false);
        else g.AsSpan(0, R * d).CopyTo(ga);
        var go = Pinned.Array<T>((long)R * q);
        MatMul.Run(Pinned.View(ga, R, d), false, w.O, false, go, 0, q);

        var gq = Pinned.Array<T>((long)R * q);
        var gk = Pinned.Array<T>((long)R * kv);
        var gv = Pinned.Array<T>((long)R * kv);
        var P = trace.AttnProbs[l];
        var qr = nl.QRot[l]; var kr = nl.KRot[l]; var v = nl.V[l];
        T scale = T.CreateChecked(c.AttentionScale);
        // per batch row b and head h: Γ_P[s,t] = ⟨Γ_o[s], v_t⟩; Γ_S = P ⊙ (Γ_P − rowsum(P ⊙ Γ_P));
        // Γ_q[s] += c Σ_t Γ_S[s,t] k_t;  Γ_k[t] += c Σ_s Γ_S[s,t] q_s;  Γ_v[t] += Σ_s P[s,t] Γ_o[s]
        Parallel.For(0, B, b =>
        {
            var gS = new T[n * n];
            for (int h = 0; h < H; h++)
            {
                int j = h / G;
                for (int s = 0; s < n; s++)
                {
                    var gos = go.AsSpan((s * B + b) * q + h * D, D);
                    T dot = T.Zero;
                    for (int t = 0; t <= s; t++)
                    {
                        T p = P[(h * n + s) * n + t];
                        T gp = p == T.Zero ? T.Zero : TensorPrimitives.Dot<T>(gos, v.AsSpan(t * kv + j * D, D));
                        gS[s * n + t] = gp;
                        dot += p * gp;
                    }
                    for (int t = 0; t <= s; t++)
                    {
                        T p = P[(h * n + s) * n + t];
                        gS[s * n + t] = p * (gS[s * n + t] - dot);
                        if (p == T.Zero) continue;
                        var dv = gv.AsSpan((t * B + b) * kv + j * D, D);
                        TensorPrimitives.MultiplyAdd(gos, p, dv, dv);
                        var dq = gq.AsSpan((s * B + b) * q + h * D, D);
                        TensorPrimitives.MultiplyAdd(kr.AsSpan(t * kv + j * D, D), scale * gS[s * n + t], dq, dq);
                        var dk = gk.AsSpan((t * B + b) * kv + j * D, D);
                        TensorPrimitives.MultiplyAdd(qr.AsSpan(s * q + h * D, D), scale * gS[s * n + t], dk, dk);
                    }
                }
            }
        });
        // RoPE transposed (rotation by −φ), then per-head q/k norms.
        var rope = model.RopeFor(l, n);
        RopeTranspose(gq, B, H, rope);
        RopeTranspose(gk, B, K, rope);
        if (p.QNorm is { } qg)
        {
            // per head over D, or over the whole H·D / K·D projection (one "head" of that width)
            bool whole = c.QkNorm == Models.QkNormKind.Whole;
            HeadNormVjp(gq, nl.QRaw[l], nl.QNormScale[l], qg, B, whole ? 1 : H, whole ? q : D);
            HeadNormVjp(gk, nl.KRaw[l], nl.KNormScale[l], p.KNorm!, B, whole ? 1 : K, whole ? kv : D);
        }
        var gx = Pinned.Array<T>((long)R * d);
        MatMul.Run(Pinned.View(gq, R, q), false, w.Q, false, gx, 0, d);
        MatMul.Run(Pinned.View(gk, R, kv), false, w.K, false, gx, 0, d, beta: 1);
        MatMul.Run(Pinned.View(gv, R, kv), false, w.V, false, gx, 0, d, beta: 1);
        if (!addResidual) Array.Clear(g, 0, R * d);
        if (p.AttnIn is { } gIn) NormVjpRows(trace.ResidPre[l], trace.AttnInScale[l]!, gIn, gx, B, g, add: true);
        else TensorPrimitives.Add(g.AsSpan(0, R * d), gx.AsSpan(0, R * d), g.AsSpan(0, R * d));
    }

    void RopeTranspose(T[] gr, int B, int heads, RopeTable<T> rope)
    {
        int D = c.HeadDim, half = rope.Half;
        Parallel.For(0, n, t =>
        {
            var cos = rope.Cos(t); var sin = rope.Sin(t);
            for (int b = 0; b < B; b++)
                for (int h = 0; h < heads; h++)
                {
                    var u = gr.AsSpan(((t * B + b) * heads + h) * D, D);
                    for (int k = 0; k < half; k++)
                    {
                        T a = u[k], e = u[k + half];
                        u[k] = a * cos[k] + e * sin[k];
                        u[k + half] = e * cos[k] - a * sin[k];
                    }
                }
        });
    }

    void HeadNormVjp(T[] gr, T[] raw, T[] scale, T[] gain, int B, int heads, int D)
    {
        Parallel.For(0, n, t =>
        {
            for (int b = 0; b < B; b++)
                for (int h = 0; h < heads; h++)
                {
                    var u = gr.AsSpan(((t * B + b) * heads + h) * D, D);
                    NormVjp(raw.AsSpan((t * heads + h) * D, D), scale[t * heads + h], gain, u, u);
                }
        });
    }
}
