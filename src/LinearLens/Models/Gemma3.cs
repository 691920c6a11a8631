using LinearLens.Linearization;

namespace LinearLens.Models;

public sealed partial class Transformer<T>
{
    /// <summary>
    /// Gemma 3 (architectures.md §2.5), sandwich norms, every gain 1 + w, GELU-tanh, score scale
    /// query_pre_attn_scalar^(−1/2), sliding layers with local RoPE base and window W:
    ///   h ← h + RMSNorm_postA(W_o · Attn(q_norm/k_norm, RoPE)),  x = RMSNorm_in(h)
    ///   h ← h + RMSNorm_postF(W_down(gelu(W_gate x) ⊙ W_up x)),  x = RMSNorm_preF(h)
    /// (Embeddings were multiplied by √d in Embed.)
    /// </summary>
    void Gemma3Layer(int l, T[] h, int rows, int startPos, KvCache<T> cache, RopeTable<T> rope, Workspace ws, FrozenTrace<T>? trace)
    {
        int n = rows * Hidden;
        var w = Checkpoint.Layers[l];
        var g = gains[l];
        var nl = trace?.Nonlinear;

        Blocks<T>.RmsNorm(h, rows, Hidden, g.Input, eps, ws.X, Or(trace?.AttnNormScale[l], ws.Scale));
        QkvRope(l, rows, startPos, cache, rope, ws, nl);
        AttentionOut(l, rows, startPos, cache, ws, trace);
        if (nl is not null) Keep(ws.A, nl.AttnRaw[l]!);   // before its post-norm, for the ordinary Jacobian
        Blocks<T>.RmsNorm(ws.A, rows, Hidden, g.PostAttention, eps, ws.A, Or(trace?.AttnOutNormScale[l], ws.Scale));
        if (trace is not null) Keep(ws.A, trace.AttnOut[l]);
        AddInto(h, ws.A, n);

        Blocks<T>.RmsNorm(h, rows, Hidden, g.PreFeedforward!, eps, ws.X, Or(trace?.MlpNormScale[l], ws.Scale));
        Blocks<T>.GatedMlp(ws.X, rows, w, Config.Activation, ws.Gate, ws.Up, ws.A, nl?.GatePre[l], nl?.Up[l]);
        if (nl is not null) Keep(ws.A, nl.MlpRaw[l]!);
        Blocks<T>.RmsNorm(ws.A, rows, Hidden, g.PostFeedforward!, eps, ws.A, Or(trace?.MlpOutNormScale[l], ws.Scale));
        if (trace is not null) { Keep(ws.Gate, trace.Gate[l]); Keep(ws.A, trace.MlpOut[l]); }
        AddInto(h, ws.A, n);
    }
}
