using System.Numerics;
using System.Numerics.Tensors;
using LinearLens.Loading;
using LinearLens.Numerics;

namespace LinearLens.Analysis;

/// <summary>A token and the score that ranked it (a logit, or a cosine similarity).</summary>
public sealed record ScoredToken(int Id, string Text, double Score);

/// <summary>
/// Reads vectors as tokens. Output-space vectors (left singular vectors, Jacobian columns) go through the
/// unembedding W_U and are ranked by logit; input-space vectors (right singular vectors, Jacobian rows) are
/// ranked by cosine similarity with every row of the input embedding matrix — a true global top-k over the
/// whole vocabulary (the reference code's batched merge mixes indices up; reference-implementation.md §1.7).
/// </summary>
public sealed class TokenDecoder
{
    readonly Checkpoint ckpt;
    double[]? embeddingNorms;

    public TokenDecoder(Checkpoint checkpoint) => ckpt = checkpoint;

    int Vocab => ckpt.Config.VocabSize;
    int Hidden => ckpt.Config.HiddenSize;

    public string Text(int id) => ckpt.Tokenizer?.TokenString(id) ?? $"<{id}>";

    /// <summary>For each of the `count` vectors (row-major count×d), the top-k tokens of W_U·v.</summary>
    public ScoredToken[][] ByLogit(double[] vectors, int count, int k = 8)
    {
        var logits = Scores(vectors, count, ckpt.LmHead);
        return Enumerable.Range(0, count).Select(r => Top(logits.AsSpan(r * Vocab, Vocab), k)).ToArray();
    }

    /// <summary>For each of the `count` vectors (row-major count×d), the top-k input embedding rows by cosine similarity.</summary>
    public ScoredToken[][] ByCosine(double[] vectors, int count, int k = 8)
    {
        embeddingNorms ??= RowNorms(ckpt.Embedding);
        var dots = Scores(vectors, count, ckpt.Embedding);
        var result = new ScoredToken[count][];
        for (int r = 0; r < count; r++)
        {
            double vn = Math.Sqrt(TensorPrimitives.SumOfSquares<double>(vectors.AsSpan(r * Hidden, Hidden)));
            var row = dots.AsSpan(r * Vocab, Vocab);
            for (int t = 0; t < Vocab; t++) row[t] = embeddingNorms[t] > 0 && vn > 0 ? row[t] / (embeddingNorms[t] * vn) : 0;
            result[r] = Top(row, k);
        }
        return result;
    }

    /// <summary>vectors (count×d) · Wᵀ for a [V×d] weight, in double.</summary>
    static double[] Scores(double[] vectors, int count, MatrixView w)
    {
        var a = Pinned.Array<double>((long)count * w.Cols);
        vectors.AsSpan(0, count * w.Cols).CopyTo(a);
        var c = Pinned.Array<double>((long)count * w.Rows);
        MatMul.Run(Pinned.View(a, count, w.Cols), false, w, true, c, 0, w.Rows);
        return c;
    }

    static double[] RowNorms(MatrixView e)
    {
        var norms = new double[e.Rows];
        Parallel.For(0, e.Rows, () => new double[e.Cols], (r, _, row) =>
        {
            e.DecodeRow(r, row);   // a quantized row is decoded once, not block by block per element
            norms[r] = Math.Sqrt(System.Numerics.Tensors.TensorPrimitives.SumOfSquares<double>(row));
            return row;
        }, _ => { });
        return norms;
    }

    /// <summary>Top k by score, descending; ties by lower id.</summary>
    ScoredToken[] Top(ReadOnlySpan<double> scores, int k)
    {
        k = Math.Min(k, scores.Length);
        var best = new List<(double s, int id)>(k + 1);
        for (int i = 0; i < scores.Length; i++)
        {
            double s = scores[i];
            if (best.Count == k && s <= best[^1].s) continue;
            int at = best.Count;
            while (at > 0 && best[at - 1].s < s) at--;
            best.Insert(at, (s, i));
            if (best.Count > k) best.RemoveAt(k);
        }
        return best.Select(b => new ScoredToken(b.id, Text(b.id), b.s)).ToArray();
    }

    /// <summary>Flips each vector of a block so that it agrees with a reference direction: returns the signs used.</summary>
    public static double[] Orient(double[] vectors, int count, int length, ReadOnlySpan<double> reference)
    {
        var signs = new double[count];
        for (int r = 0; r < count; r++)
        {
            var v = vectors.AsSpan(r * length, length);
            signs[r] = TensorPrimitives.Dot<double>(v, reference) < 0 ? -1 : 1;
            if (signs[r] < 0) TensorPrimitives.Negate<double>(v, v);
        }
        return signs;
    }

    public static double[] ToDouble<T>(ReadOnlySpan<T> v) where T : IFloatingPointIeee754<T>
    {
        var r = new double[v.Length];
        for (int i = 0; i < v.Length; i++) r[i] = double.CreateChecked(v[i]);
        return r;
    }
}
