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
        QkvRope(l, rows, startPos, cache, rope, ws);
        AttentionOut(l, rows, startPos, cache, ws, trace);
        trace?.Let(t => ws.A.AsSpan(0, n).CopyTo(t.AttnOut[l]));
        AddInto(h, ws.A, n);

        Blocks<T>.RmsNorm(h, rows, Hidden, g.PostAttention, eps, ws.X, Or(trace?.MlpNormScale[l], ws.Scale));
        Blocks<T>.GatedMlp(ws.X, rows, w, Config.Activation, ws.Gate, ws.Up, ws.A);
        trace?.Let(t => { ws.Gate.AsSpan(0, rows * Config.IntermediateSize).CopyTo(t.Gate[l]); ws.A.AsSpan(0, n).CopyTo(t.MlpOut[l]); });
        AddInto(h, ws.A, n);
    }
}
