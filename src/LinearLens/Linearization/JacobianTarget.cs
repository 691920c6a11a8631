namespace LinearLens.Linearization;

/// <summary>Which intermediate output a Jacobian describes (TransformerLens names in brackets).</summary>
public enum OutputKey
{
    /// <summary>The residual stream after the layer [blocks.{l}.hook_resid_post].</summary>
    Layer,
    /// <summary>What the layer's attention branch adds to the residual stream [blocks.{l}.hook_attn_out]; for Gemma after its post-attention norm.</summary>
    Attn,
    /// <summary>What the layer's MLP branch adds to the residual stream [blocks.{l}.hook_mlp_out]; for Gemma after its post-feedforward norm.</summary>
    Mlp,
}

public enum JacobianMode
{
    /// <summary>With respect to the input embeddings x₀…x_{n−1}: layers 0 … Layer−1.</summary>
    Cumulative,
    /// <summary>With respect to the residual stream entering the layer (blocks.{Layer−1}.hook_resid_pre): that one layer only.</summary>
    Layerwise,
}

/// <summary>
/// The output a (detached or ordinary) Jacobian is taken of: the last position's value of <see cref="Key"/> in the
/// layer numbered <see cref="Layer"/> (1 … L, "after Layer layers"), passed through the model's final norm with its
/// scale frozen at that value (the paper's convention for every layer), or not when <see cref="FinalNorm"/> is false.
/// The default — Layer = L, key layer, cumulative, final norm — is the model's final-normed hidden state y.
/// </summary>
public sealed record JacobianTarget(int Layer, OutputKey Key = OutputKey.Layer, JacobianMode Mode = JacobianMode.Cumulative, bool FinalNorm = true)
{
    public static JacobianTarget Output(int layers) => new(layers);

    /// <summary>First layer the map runs: 0 for cumulative, Layer−1 for layerwise.</summary>
    public int FirstLayer => Mode == JacobianMode.Cumulative ? 0 : Layer - 1;

    public void Validate(int layers)
    {
        if (Layer < 1 || Layer > layers)
            throw new LinearLensException($"--layer {Layer} is outside 1…{layers} (the number of layers run; {layers} is the model output)");
    }

    public string Describe() =>
        $"{Key.ToString().ToLowerInvariant()} output after {Layer} layer{(Layer == 1 ? "" : "s")}, {Mode.ToString().ToLowerInvariant()}{(FinalNorm ? ", final norm applied" : ", no final norm")}";
}
