using System.Numerics;
using LinearLens.Linearization;

namespace LinearLens.Analysis;

/// <summary>
/// How much each input token adds to one output logit, exactly: ⟨W_U[t], Jᵢxᵢ⟩ through the frozen final norm, and —
/// for a model with biases — the constant term's share ⟨W_U[t], c⟩ as its own "bias" entry. Contributions plus bias
/// sum to the real logit (up to rounding) because y = Σᵢ Jᵢxᵢ + c exactly.
/// </summary>
public sealed record TokenAttribution(int TokenId, string Token, double[] Contributions, double Bias, double Sum, double Logit)
{
    /// <summary>|Σᵢ contributionᵢ − logit|: the check printed with every result.</summary>
    public double SumError => Math.Abs(Sum - Logit);
}

public static class Attribution
{
    /// <summary>
    /// cᵢ = Jᵢxᵢ for every input token [n×d], in one batched JVP of the frozen map: tangent b is xᵦ at position b
    /// and zero elsewhere. No full Jacobian is formed.
    /// </summary>
    public static double[] Contributions<T>(FrozenMap<T> map, JacobianTarget target) where T : unmanaged, IFloatingPointIeee754<T>
    {
        int n = map.Tokens, d = map.Hidden;
        var x = map.Input(target);
        var tangents = Numerics.Pinned.Array<T>((long)n * n * d);
        for (int b = 0; b < n; b++) x.AsSpan(b * d, d).CopyTo(tangents.AsSpan((b * n + b) * d, d));
        var outputs = new T[n * d];
        map.Jvp(target, tangents, n, outputs);
        return TokenDecoder.ToDouble<T>(outputs);
    }

    /// <summary>Per-token logit contributions of one vocabulary token, with the real logit to check against.</summary>
    public static TokenAttribution ForToken(Loading.Checkpoint ckpt, double[] contributions, double[] offset, int tokens, int tokenId, double realLogit, TokenDecoder decoder)
    {
        int d = ckpt.Config.HiddenSize;
        if ((uint)tokenId >= (uint)ckpt.Config.VocabSize)
            throw new LinearLensException($"token id {tokenId} is outside the vocabulary 0…{ckpt.Config.VocabSize - 1}");
        var w = new double[d];
        ckpt.LmHead.DecodeRow(tokenId, w);
        var per = new double[tokens];
        for (int i = 0; i < tokens; i++)
        {
            double s = 0;
            for (int j = 0; j < d; j++) s += w[j] * contributions[i * d + j];
            per[i] = s;
        }
        double bias = 0;
        for (int j = 0; j < d; j++) bias += w[j] * offset[j];
        return new TokenAttribution(tokenId, decoder.Text(tokenId), per, bias, per.Sum() + bias, realLogit);
    }
}
