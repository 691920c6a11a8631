using LinearLens.Loading;

namespace LinearLens.Models;

/// <summary>
/// Mistral (model_type mistral; architectures.md §2.2): the Llama layer without biases; every layer uses the
/// sliding window W = `sliding_window` (default 4096 when the key is missing, none when null). HF's Mistral ignores
/// `layer_types`.
/// </summary>
public sealed class Mistral : Family
{
    public override IReadOnlyList<string> ModelTypes => ["mistral"];
    public override ClassDefaults Defaults => new(32000, 4096, 14336, 32, 32, 8, null, 131072, 1e-6, 10000, false);
    internal override int? DefaultWindow => 4096;
    internal override bool ReadsLayerTypes => false;
    internal override bool[] SlidingLayers(ModelConfig.Keys c, int layers, int? window) => Enumerable.Repeat(window is not null, layers).ToArray();
}

/// <summary>
/// Ministral (model_type ministral; architectures.md §2.2): Mistral with per-layer `layer_types`; without them every
/// layer slides when `sliding_window` is set.
/// </summary>
public sealed class Ministral : Family
{
    public override IReadOnlyList<string> ModelTypes => ["ministral"];
    public override ClassDefaults Defaults => new(32000, 4096, 14336, 32, 32, 8, null, 131072, 1e-6, 10000, false);
    internal override int? DefaultWindow => 4096;
    internal override bool[] SlidingLayers(ModelConfig.Keys c, int layers, int? window) => Enumerable.Repeat(window is not null, layers).ToArray();
}
