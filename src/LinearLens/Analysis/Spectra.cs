using System.Numerics;
using System.Numerics.Tensors;
using LinearLens.Linearization;

namespace LinearLens.Analysis;

/// <summary>One singular triplet read as tokens: σ, the sign that orients it, and its decoded left (and right) vector.</summary>
public sealed record DecodedComponent(int Index, double Sigma, double Sign, ScoredToken[] Left, ScoredToken[]? Right);

/// <summary>
/// The spectrum of one matrix (a per-token Jᵢ, or the tokens-combined [J₀|…|J_{n−1}]): its top singular values,
/// the decoded components, ‖J‖_F², stable rank ‖J‖_F²/σ₁², and how the triplets were obtained.
/// </summary>
public sealed record Spectrum(
    string Name, double[] SingularValues, DecodedComponent[] Components, double FrobeniusSquared, string Method, double[]? Residuals)
{
    /// <summary>True when ‖J‖_F² is a Hutchinson estimate (matrix-free runs) rather than exact.</summary>
    public bool FrobeniusEstimated { get; init; }

    public double StableRank => SingularValues.Length == 0 || SingularValues[0] == 0 ? 0 : FrobeniusSquared / (SingularValues[0] * SingularValues[0]);
}

/// <summary>Column/row-norm view of one Jᵢ (reference-implementation.md §1.8, with rows chosen by their own norms).</summary>
public sealed record ColumnRowNorms(int Token, double[] SortedColumnNorms, int[] TopColumns, ScoredToken[][] ColumnTokens, int[] TopRows, ScoredToken[][] RowTokens);

public static class Spectra
{
    /// <summary>Jᵢ as a dense d×d row-major matrix out of J [d, n, d].</summary>
    public static double[] TokenMatrix<T>(JacobianResult<T> r, int token) where T : unmanaged, IFloatingPointIeee754<T>
    {
        int n = r.Tokens, d = r.Hidden;
        var a = new double[d * d];
        for (int k = 0; k < d; k++)
            for (int j = 0; j < d; j++) a[k * d + j] = double.CreateChecked(r.J[((long)k * n + token) * d + j]);
        return a;
    }

    /// <summary>
    /// Top-k triplets of every Jᵢ of a formed J (<see cref="Svd.TopK"/>: dense, or Lanczos to 1e-12·σ₁ for a few of a
    /// large Jᵢ). Tokens run two at a time: one token's solver is mostly serial, so a second keeps the other core busy.
    /// </summary>
    public static SingularTriplets[] PerToken<T>(JacobianResult<T> r, int k, Action<double>? progress = null) where T : unmanaged, IFloatingPointIeee754<T>
    {
        int n = r.Tokens, d = r.Hidden, done = 0;
        var res = new SingularTriplets[n];
        Parallel.For(0, n, new ParallelOptions { MaxDegreeOfParallelism = Math.Max(1, Math.Min(2, Environment.ProcessorCount)) }, i =>
        {
            res[i] = Svd.TopK(TokenMatrix(r, i), d, d, k);
            lock (res) progress?.Invoke((double)++done / n);   // callers' progress reporters are not thread-safe
        });
        return res;
    }

    /// <summary>[J₀|…|J_{n−1}] (d × n·d row-major) — J's own memory layout, widened to double.</summary>
    public static double[] CombinedMatrix<T>(JacobianResult<T> r) where T : unmanaged, IFloatingPointIeee754<T> =>
        typeof(T) == typeof(double) ? (double[])(object)r.J : TokenDecoder.ToDouble<T>(r.J);

    /// <summary>
    /// Decodes the top components of a set of triplets. Each uₖ is oriented by sign(⟨y, uₖ⟩) — y the output the
    /// matrix reconstructs — and read through W_U (top tokens by logit); vₖ gets the same sign and is read by cosine
    /// with the input embeddings when <paramref name="decodeRight"/>.
    /// </summary>
    public static Spectrum Decode(string name, SingularTriplets t, double frobeniusSquared, ReadOnlySpan<double> output,
        TokenDecoder decoder, int decodeCount, bool decodeRight, int topTokens = 8)
    {
        int m = Math.Min(decodeCount, t.Count), rows = t.Rows, cols = t.Cols;
        var left = new double[m * rows];
        for (int i = 0; i < m; i++) t.Left(i).CopyTo(left.AsSpan(i * rows, rows));
        var signs = TokenDecoder.Orient(left, m, rows, output);
        var leftTokens = m > 0 ? decoder.ByLogit(left, m, topTokens) : [];
        ScoredToken[][]? rightTokens = null;
        if (decodeRight && m > 0)
        {
            var right = new double[m * cols];
            for (int i = 0; i < m; i++)
            {
                t.Right(i).CopyTo(right.AsSpan(i * cols, cols));
                if (signs[i] < 0) TensorPrimitives.Negate<double>(right.AsSpan(i * cols, cols), right.AsSpan(i * cols, cols));
            }
            rightTokens = decoder.ByCosine(right, m, topTokens);
        }
        var comps = Enumerable.Range(0, m).Select(i => new DecodedComponent(i, t.Values[i], signs[i], leftTokens[i], rightTokens?[i])).ToArray();
        return new Spectrum(name, t.Values, comps, frobeniusSquared, t.Method, t.Residuals);
    }

    public static double FrobeniusSquared(ReadOnlySpan<double> a) => TensorPrimitives.SumOfSquares(a);

    /// <summary>
    /// Column norms ‖Jᵢ[:, j]‖ sorted descending; the top columns (output-space vectors, oriented to y) read through
    /// W_U; the top rows by their own norms (input-space vectors, oriented by the sign of yₖ) read by cosine. The
    /// reference code picks rows by the column indices — a defect we do not copy.
    /// </summary>
    public static ColumnRowNorms ColumnsAndRows(double[] jt, int d, int token, ReadOnlySpan<double> output, TokenDecoder decoder, int count = 8, int topTokens = 8)
    {
        var colNorms = new double[d];
        var rowNorms = new double[d];
        for (int k = 0; k < d; k++)
            for (int j = 0; j < d; j++) { double v = jt[k * d + j]; colNorms[j] += v * v; rowNorms[k] += v * v; }
        for (int j = 0; j < d; j++) { colNorms[j] = Math.Sqrt(colNorms[j]); rowNorms[j] = Math.Sqrt(rowNorms[j]); }
        count = Math.Min(count, d);
        var topCols = Enumerable.Range(0, d).OrderByDescending(j => colNorms[j]).ThenBy(j => j).Take(count).ToArray();
        var topRows = Enumerable.Range(0, d).OrderByDescending(k => rowNorms[k]).ThenBy(k => k).Take(count).ToArray();
        var cols = new double[count * d];
        for (int c = 0; c < count; c++)
            for (int k = 0; k < d; k++) cols[c * d + k] = jt[k * d + topCols[c]];
        TokenDecoder.Orient(cols, count, d, output);
        var rows = new double[count * d];
        for (int r = 0; r < count; r++)
        {
            double s = output[topRows[r]] < 0 ? -1 : 1;
            for (int j = 0; j < d; j++) rows[r * d + j] = s * jt[topRows[r] * d + j];
        }
        var sorted = colNorms.OrderByDescending(v => v).ToArray();
        return new ColumnRowNorms(token, sorted, topCols, decoder.ByLogit(cols, count, topTokens), topRows, decoder.ByCosine(rows, count, topTokens));
    }
}
