using System.Numerics;
using LinearLens.Linearization;
using LinearLens.Numerics;

namespace LinearLens.Analysis;

/// <summary>
/// The detached Jacobian as a linear operator without materializing J: products are batched JVPs / VJPs of the
/// frozen map (each call's cost is dominated by GEMMs over n·B rows, so k vectors go through one call).
/// </summary>
public static class JacobianOperators
{
    /// <summary>Largest batch one FrozenMap call gets for n tokens.</summary>
    public static int MaxBatch(int tokens) => Math.Max(1, DetachedJacobian.RowsPerPass / Math.Max(tokens, 1));

    /// <summary>
    /// Bytes of the Lanczos runs at their most columns, min(d, 10k + 100) (bases grow as a run needs them, so a run that
    /// converges earlier uses less): combined, the Gram run's d-long basis and its projected matrix, its products where
    /// kept (<see cref="Svd.KeptProductBytes"/>), the n·d-long block products and the k right vectors
    /// (<see cref="Svd.GramLanczos"/>); per token, n runs over d×d matrices (three d-long bases each). Double precision.
    /// </summary>
    public static double LanczosBytes(int d, int n, int k, bool perToken)
    {
        double cols = Math.Min(d, 10.0 * Math.Min(k, d) + 100);
        if (perToken) return 8 * n * 3.0 * d * cols;
        double kept = 8.0 * n * d * cols <= Svd.KeptProductBytes ? 8.0 * ((double)n * d + d) * cols : 0;
        return 8 * (d * cols + cols * cols + 3.0 * n * d * Math.Min(k, d)) + kept;
    }

    /// <summary>
    /// Upper estimate of what a Lanczos run costs, in full products (one vector through every position): 2 products per
    /// Krylov column, at most 10k + 100 columns (capped at d), plus k for the residuals; per token, n runs whose products
    /// start at the token's position — (n + 1)/(2n) of a full product on average. Forming J instead costs d products.
    /// </summary>
    public static double LanczosProducts(int d, int n, int k, bool perToken)
    {
        int kk = Math.Clamp(k, 1, d), krylov = Math.Min(d, 10 * kk + 100);
        double one = 2.0 * krylov + kk;
        return perToken ? n * one * (n + 1.0) / (2.0 * n) : one;
    }

    /// <summary>
    /// Jᵢ (d×d) of a target: Multiply = batched FrozenMap.Jvp with the tangent only at position i; MultiplyTransposed =
    /// batched Vjp, position i's block.
    /// </summary>
    public static ILinearOperator PerToken<T>(FrozenMap<T> map, JacobianTarget target, int token) where T : unmanaged, IFloatingPointIeee754<T>
    {
        if ((uint)token >= (uint)map.Tokens) throw new LinearLensException($"token {token} is outside 0…{map.Tokens - 1}");
        return new FrozenOperator<T>(map, target, token);
    }

    /// <summary>[J₀|…|J_{n−1}] (d × n·d): column index i·d + j is input coordinate j of token i.</summary>
    public static ILinearOperator Combined<T>(FrozenMap<T> map, JacobianTarget target) where T : unmanaged, IFloatingPointIeee754<T> =>
        new FrozenOperator<T>(map, target, -1);

    /// <summary>
    /// Lanczos block size for products with <paramref name="rowsPerVector"/> GEMM rows per vector. Single-vector Lanczos
    /// reaches a given polynomial degree with the fewest products (Qwen3-0.6B shape, 64 tokens, top-8 to 1e-8: 50 Krylov
    /// columns, against 68 with blocks of 2 and 96 with blocks of 4), but below ~32 rows the GEMMs lose more than larger
    /// blocks cost (7 tokens, top-4: blocks of 4 beat 1 by 1.3×). So: the smallest block giving ≥ 32 rows, at most min(k, 4).
    /// </summary>
    public static int LanczosBlock(int rowsPerVector, int k) =>
        Math.Clamp((32 + Math.Max(rowsPerVector, 1) - 1) / Math.Max(rowsPerVector, 1), 1, Math.Clamp(k, 1, 4));

    /// <summary>
    /// Top-k triplets of the combined [J₀|…|J_{n−1}] by Lanczos on J·Jᵀ (d × d, so no n·d-long basis is kept; see
    /// <see cref="Svd.GramLanczos"/>; block size 0: <see cref="LanczosBlock"/>).
    /// </summary>
    public static SingularTriplets CombinedTopK<T>(FrozenMap<T> map, JacobianTarget target, int k, double tolerance = 1e-10, int blockSize = 0,
        Action<double>? progress = null) where T : unmanaged, IFloatingPointIeee754<T> =>
        Svd.GramLanczos(Combined(map, target), k, tolerance, blockSize: blockSize > 0 ? blockSize : LanczosBlock(map.Tokens, k), progress: progress);

    /// <summary>
    /// Top-k singular triplets of Jᵢ for every listed token at once: one block Lanczos run per token, advanced in lockstep
    /// so that all tokens' blocks share each batched JVP (tangents of different tokens sit at different positions of one
    /// batch — the map is linear) and each batched VJP (every batch column yields all positions; token i keeps its own).
    /// Residuals are the true ‖Jᵢvᵢ − σᵢuᵢ‖, from the JVPs the runs made.
    /// </summary>
    public static SingularTriplets[] PerTokenTopK<T>(FrozenMap<T> map, JacobianTarget target, IReadOnlyList<int> tokens, int k,
        double tolerance = 1e-10, int maxIterations = 0, int seed = 0, int blockSize = 0, Action<double>? progress = null)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int n = map.Tokens, d = map.Hidden;
        foreach (int t in tokens)
            if ((uint)t >= (uint)n) throw new LinearLensException($"token {t} is outside 0…{n - 1}");
        // each lane runs on Jᵢᵀ (see Svd.Lanczos), so its "multiply" is a VJP and its transposed product a JVP
        if (blockSize <= 0) blockSize = LanczosBlock(tokens.Sum(t => n - t), k);   // rows of one lockstep product per lane vector
        var lanes = tokens.Select((t, i) => new BlockLanczos(d, d, k, tolerance, maxIterations, seed + i, blockSize)).ToArray();
        var products = new Products<T>(map, target);
        while (true)
        {
            var at = Enumerable.Range(0, lanes.Length).Where(l => !lanes[l].Done && lanes[l].NeedsMultiply).ToArray();
            var a = Enumerable.Range(0, lanes.Length).Where(l => !lanes[l].Done && !lanes[l].NeedsMultiply).ToArray();
            if (a.Length == 0 && at.Length == 0) break;
            if (a.Length > 0)
            {
                var blocks = a.Select(l => (tokens[l], lanes[l].PendingCount, lanes[l].Pending.ToArray(), lanes[l].OutputBuffer)).ToArray();
                products.ForwardPerToken(blocks);
                Parallel.ForEach(a, l => lanes[l].Supply(lanes[l].OutputBuffer));
            }
            if (at.Length > 0)
            {
                var blocks = at.Select(l => (tokens[l], lanes[l].PendingCount, lanes[l].Pending.ToArray(), lanes[l].OutputBuffer)).ToArray();
                products.TransposePerToken(blocks);
                Parallel.ForEach(at, l => lanes[l].Supply(lanes[l].OutputBuffer));
            }
            if (progress is not null && lanes.Length > 0)
                progress(Math.Min(0.99, lanes.Average(l => l.Done ? 1.0 : (double)l.Subspace / Math.Max(1, Math.Min(d, 10 * k + 100)))));
        }
        var raw = lanes.Select(l => l.Result()).ToArray();
        var results = raw.Select(Svd.Swap).ToArray();
        // true residuals ‖Jᵢvᵢ − σᵢuᵢ‖ from the JVPs already made (see BlockLanczos.TransposeResiduals) ...
        var stored = lanes.Select((l, i) => l.TransposeResiduals(raw[i])).ToArray();
        if (stored.All(r => r is not null))
        {
            progress?.Invoke(1.0);
            return results.Select((r, i) => r with { Residuals = stored[i] }).ToArray();
        }
        // ... or, when a run ended without one, J_i V_i for every token in one more batched JVP
        var outs = results.Select(r => new double[d * Math.Max(r.Count, 1)]).ToArray();
        products.ForwardPerToken(results.Select((r, i) => (tokens[i], r.Count, r.V, outs[i])).ToArray());
        for (int i = 0; i < results.Length; i++)
        {
            var r = results[i];
            var res = new double[r.Count];
            for (int c = 0; c < r.Count; c++)
            {
                double ss = 0;
                var u = r.Left(c);
                for (int j = 0; j < d; j++) { double e = outs[i][c * d + j] - r.Values[c] * u[j]; ss += e * e; }
                res[c] = Math.Sqrt(ss);
            }
            results[i] = r with { Residuals = res, Products = r.Products + r.Count };
        }
        progress?.Invoke(1.0);
        return results;
    }

    /// <summary>Batched products of one frozen map, in double, with buffers reused across calls.</summary>
    sealed class Products<T>(FrozenMap<T> map, JacobianTarget target) where T : unmanaged, IFloatingPointIeee754<T>
    {
        readonly int n = map.Tokens, d = map.Hidden;
        T[] tangents = [], outputs = [], cot = [], grads = [];

        void Ensure(int batch)
        {
            long big = (long)n * batch * d;
            if (tangents.Length < big) { tangents = Pinned.Array<T>(big); grads = Pinned.Array<T>(big); }
            if (outputs.Length < (long)batch * d) { outputs = new T[batch * d]; cot = new T[batch * d]; }
        }

        /// <summary>
        /// For each block (token, count, x col-major d×count, y): y = J_token·x; token −1: x is n·d × count and y = J·x.
        /// All blocks share batched JVP calls.
        /// </summary>
        public void ForwardPerToken((int token, int count, double[] x, double[] y)[] blocks)
        {
            int maxB = MaxBatch(n);
            var cols = blocks.SelectMany((blk, bi) => Enumerable.Range(0, blk.count).Select(c => (bi, c))).ToArray();
            for (int c0 = 0; c0 < cols.Length; c0 += maxB)
            {
                int B = Math.Min(maxB, cols.Length - c0);
                Ensure(B);
                Array.Clear(tangents, 0, n * B * d);
                Parallel.For(0, B, bcol =>
                {
                    var (bi, c) = cols[c0 + bcol];
                    var (token, _, x, _) = blocks[bi];
                    if (token >= 0)
                    {
                        var src = x.AsSpan(c * d, d);
                        var dst = tangents.AsSpan((token * B + bcol) * d, d);
                        for (int j = 0; j < d; j++) dst[j] = T.CreateTruncating(src[j]);
                    }
                    else
                        for (int i = 0; i < n; i++)
                        {
                            var src = x.AsSpan((c * n + i) * d, d);
                            var dst = tangents.AsSpan((i * B + bcol) * d, d);
                            for (int j = 0; j < d; j++) dst[j] = T.CreateTruncating(src[j]);
                        }
                });
                map.Jvp(target, tangents, B, outputs);
                for (int bcol = 0; bcol < B; bcol++)
                {
                    var (bi, c) = cols[c0 + bcol];
                    var y = blocks[bi].y.AsSpan(c * d, d);
                    var src = outputs.AsSpan(bcol * d, d);
                    for (int j = 0; j < d; j++) y[j] = double.CreateTruncating(src[j]);
                }
            }
        }

        /// <summary>For each block (token, count, u col-major d×count, x): x = J_tokenᵀ·u; token −1: x (n·d × count) = Jᵀ·u.</summary>
        public void TransposePerToken((int token, int count, double[] u, double[] x)[] blocks)
        {
            int maxB = MaxBatch(n);
            var cols = blocks.SelectMany((blk, bi) => Enumerable.Range(0, blk.count).Select(c => (bi, c))).ToArray();
            for (int c0 = 0; c0 < cols.Length; c0 += maxB)
            {
                int B = Math.Min(maxB, cols.Length - c0);
                Ensure(B);
                // a per-token column is wanted only at its token's position, so it never runs below it (causality)
                var firstPosition = new int[B];
                for (int bcol = 0; bcol < B; bcol++)
                {
                    var (bi, c) = cols[c0 + bcol];
                    var src = blocks[bi].u.AsSpan(c * d, d);
                    var dst = cot.AsSpan(bcol * d, d);
                    for (int j = 0; j < d; j++) dst[j] = T.CreateTruncating(src[j]);
                    firstPosition[bcol] = Math.Max(blocks[bi].token, 0);
                }
                map.Vjp(target, cot.AsSpan(0, B * d), B, grads, firstPosition);
                Parallel.For(0, B, bcol =>
                {
                    var (bi, c) = cols[c0 + bcol];
                    var (token, _, _, x) = blocks[bi];
                    if (token >= 0)
                    {
                        var src = grads.AsSpan((token * B + bcol) * d, d);
                        var dst = x.AsSpan(c * d, d);
                        for (int j = 0; j < d; j++) dst[j] = double.CreateTruncating(src[j]);
                    }
                    else
                        for (int i = 0; i < n; i++)
                        {
                            var src = grads.AsSpan((i * B + bcol) * d, d);
                            var dst = x.AsSpan((c * n + i) * d, d);
                            for (int j = 0; j < d; j++) dst[j] = double.CreateTruncating(src[j]);
                        }
                });
            }
        }
    }

    /// <summary>Jᵢ (token ≥ 0) or the combined [J₀|…|J_{n−1}] (token −1) as an operator.</summary>
    sealed class FrozenOperator<T>(FrozenMap<T> map, JacobianTarget target, int token) : ILinearOperator
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        readonly Products<T> products = new(map, target);
        // the blocks as arrays, reused: a combined operator's are n·d·k long (17 MB per vector at 2,048 tokens of d = 1024)
        double[] cols = [], rows = [];
        public int Rows => map.Hidden;
        public int Cols => token >= 0 ? map.Hidden : map.Tokens * map.Hidden;

        void Ensure(int k)
        {
            if (cols.Length < (long)Cols * k) cols = new double[(long)Cols * k];
            if (rows.Length < (long)Rows * k) rows = new double[(long)Rows * k];
        }

        public void Multiply(ReadOnlySpan<double> x, int k, Span<double> y)
        {
            Ensure(k);
            x[..(Cols * k)].CopyTo(cols);
            products.ForwardPerToken([(token, k, cols, rows)]);
            rows.AsSpan(0, Rows * k).CopyTo(y);
        }

        public void MultiplyTransposed(ReadOnlySpan<double> y, int k, Span<double> x)
        {
            Ensure(k);
            y[..(Rows * k)].CopyTo(rows);
            products.TransposePerToken([(token, k, rows, cols)]);
            cols.AsSpan(0, Cols * k).CopyTo(x);
        }
    }
}
