using LinearLens.Linearization;

namespace LinearLens.Models;

public sealed partial class Transformer<T>
{
    /// <summary>
    /// Llama (architectures.md §2.1), pre-norm:
    ///   h ← h + W_o · Attn(RoPE(W_q x), RoPE(W_k x), W_v x),  x = RMSNorm_in(h)
    ///   h ← h + W_down(silu(W_gate x) ⊙ W_up x),               x = RMSNorm_post(h)
    /// </summary>
    void LlamaLayer(int l, T[] h, int rows, int startPos, KvCache<T> cache, RopeTable<T> rope, Workspace ws, FrozenTrace<T>? trace)
    {
        int n = rows * Hidden;
        var w = Checkpoint.Layers[l];
        var g = gains[l];

        Blocks<T>.RmsNorm(h, rows, Hidden, g.Input, eps, ws.X, Or(trace?.AttnNormScale[l], ws.Scale));
        QkvRope(l, rows, startPos, cache, rope, ws, trace?.Nonlinear);
        AttentionOut(l, rows, startPos, cache, ws, trace);
        if (trace is not null) Keep(ws.A, trace.AttnOut[l]);
        AddInto(h, ws.A, n);

        Blocks<T>.RmsNorm(h, rows, Hidden, g.PostAttention, eps, ws.X, Or(trace?.MlpNormScale[l], ws.Scale));
        Blocks<T>.GatedMlp(ws.X, rows, w, Config.Activation, ws.Gate, ws.Up, ws.A, trace?.Nonlinear?.GatePre[l], trace?.Nonlinear?.Up[l]);
        if (trace is not null) { Keep(ws.Gate, trace.Gate[l]); Keep(ws.A, trace.MlpOut[l]); }
        AddInto(h, ws.A, n);
    }
}
