using LinearLens.Linearization;

namespace LinearLens.Models;

public sealed partial class Transformer<T>
{
    /// <summary>
    /// Qwen 3 (architectures.md §2.4): the Llama recipe, with q and k RMS-normed per head over D (gains q_norm,
    /// k_norm) before RoPE — done inside QkvRope whenever the layer has q/k norm gains. H·D may differ from d.
    /// Sliding layers (layer_types / use_sliding_window) get their window from the config.
    /// </summary>
    void Qwen3Layer(int l, T[] h, int rows, int startPos, KvCache<T> cache, RopeTable<T> rope, Workspace ws, FrozenTrace<T>? trace) =>
        LlamaLayer(l, h, rows, startPos, cache, rope, ws, trace);
}
