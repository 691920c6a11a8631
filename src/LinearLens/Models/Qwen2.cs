using LinearLens.Loading;

namespace LinearLens.Models;

/// <summary>
/// Qwen 2 / 2.5 (model_type qwen2; architectures.md §2.3): the Llama layer with q, k and v biases (always present,
/// not config-controlled; o and the MLP have none). The v bias makes the frozen map affine.
/// </summary>
public sealed class Qwen2 : Family
{
    public override IReadOnlyList<string> ModelTypes => ["qwen2"];
    public override ClassDefaults Defaults => new(151936, 4096, 22016, 32, 32, 32, null, 32768, 1e-6, 10000, false);
    internal override int? DefaultWindow => 4096;
    internal override LayerBiases ParseBiases(ModelConfig.Keys c) => new(true, true, true, false, false, false, false);
    internal override bool[] SlidingLayers(ModelConfig.Keys c, int layers, int? window) => FromMaxWindowLayers(c, layers, window);
    internal override int? ParseWindow(ModelConfig.Keys c) => WindowIfUsed(c, DefaultWindow);

    /// <summary>Qwen2Config/Qwen3Config: sliding_window = sliding_window if use_sliding_window else None.</summary>
    internal static int? WindowIfUsed(ModelConfig.Keys c, int? defaultWindow) =>
        c.Bool("use_sliding_window") ?? false ? c.Has("sliding_window") ? c.Int("sliding_window") : defaultWindow : null;

    /// <summary>Layer i slides iff use_sliding_window, a window is set, and i ≥ max_window_layers (default 28).</summary>
    internal static bool[] FromMaxWindowLayers(ModelConfig.Keys c, int layers, int? window)
    {
        bool use = c.Bool("use_sliding_window") ?? false;
        int maxWindowLayers = c.Int("max_window_layers") ?? 28;
        return Enumerable.Range(0, layers).Select(i => use && window is not null && i >= maxWindowLayers).ToArray();
    }
}
