using System.Globalization;
using LinearLens.Loading;

namespace LinearLens.Analysis;

/// <summary>What a run computes, for <see cref="ResourceEstimate"/>.</summary>
public sealed record RunShape
{
    /// <summary>Tokens of the forward pass (prompt, or concept + prompt for steering).</summary>
    public required int Tokens { get; init; }
    /// <summary>Positions the KV cache holds beyond <see cref="Tokens"/> (generated tokens).</summary>
    public long NewTokens { get; init; }
    /// <summary>Bytes per computed value: 8 (float64) or 4 (float32).</summary>
    public required int ElementSize { get; init; }
    /// <summary>The frozen trace is recorded (every Jacobian command).</summary>
    public bool Trace { get; init; }
    /// <summary>The ordinary Jacobian's extra trace (pre-activations, rotated q/k, …).</summary>
    public bool NonlinearTrace { get; init; }
    /// <summary>How many full detached Jacobians J [d, n, d] are held at once (0: matrix-free).</summary>
    public int FullJacobians { get; init; }
    /// <summary>Extra buffers the caller knows of (e.g. Lanczos bases), in bytes.</summary>
    public double ExtraBytes { get; init; }
}

/// <summary>
/// The memory a run will allocate, estimated from the config before anything is allocated, so that a config or
/// input that asks for more than this machine has stops with one line (and the estimate) instead of an
/// out-of-memory crash minutes in. Weights are memory-mapped and not counted. Per forward pass: the KV cache
/// (2·L·kv per position), the workspace of one layer (n·(3d + q + 2kv + 2I) plus the n² scores of a head) and
/// the last position's logits; with the frozen trace, per layer: the n·d residual, n·I MLP coefficients and the H·n² attention
/// probabilities (or, past FrozenTrace's budget, the q that rebuilds them with the cached k); each full J is d·n·d.
/// </summary>
public static class ResourceEstimate
{
    /// <summary>Estimated bytes and a readable breakdown of the largest parts.</summary>
    public static (double bytes, string breakdown) Estimate(ModelConfig c, RunShape run)
    {
        double n = run.Tokens, positions = n + run.NewTokens, e = run.ElementSize, L = c.NumLayers;
        double d = c.HiddenSize, q = c.QDim, kv = c.KvDim, I = c.IntermediateSize, H = c.NumHeads, V = c.VocabSize;
        var parts = new List<(string what, double bytes)>
        {
            ("KV cache", 2 * L * kv * positions * e),
            ("forward workspace", (n * (3 * d + q + 2 * kv + 2 * I) + n * positions + V) * e),
        };
        if (run.Trace)
        {
            // P itself (H·n² per layer) while it fits FrozenTrace's budget, else q, k and each row's max and sum to rebuild it
            double probabilities = H * n * n * L * e;
            var (recomputesP, recomputesCoefficients) = Linearization.FrozenTrace<double>.Recomputes(c, run.Tokens, run.ElementSize, run.NonlinearTrace);
            bool storesP = !recomputesP, storesCoefficients = !recomputesCoefficients;
            // past its own budget a P-recomputing trace also leaves out q and γ and keeps the stream after attention
            // instead, recomputed one layer at a time inside the products (the scratch: n·(d + q + I))
            double attention = storesP ? probabilities : L * ((storesCoefficients ? n * q : 0) + 2 * H * n) * e;   // k: the KV cache itself
            // per layer the residual entering it and the MLP's frozen coefficient (branch outputs: the last position only);
            // the stream after the last layer, the embeddings and the final-normed states
            double perLayer = storesCoefficients ? n * d + n * I : 2 * n * d;
            parts.Add(("frozen trace", (L * perLayer + 3 * n * d) * e + attention));
            if (!storesCoefficients) parts.Add(("recomputed q and γ", n * (d + q + I) * e));
        }
        if (run.NonlinearTrace) parts.Add(("ordinary-Jacobian trace", L * n * (2 * q + 3 * kv + 2 * I + 2 * d) * e));
        if (run.FullJacobians > 0) parts.Add(($"{run.FullJacobians} × J [{c.HiddenSize}, {run.Tokens}, {c.HiddenSize}]", run.FullJacobians * d * n * d * e));
        if (run.ExtraBytes > 0) parts.Add(("solver buffers", run.ExtraBytes));
        double total = parts.Sum(p => p.bytes);
        string breakdown = string.Join(", ", parts.Where(p => p.bytes >= 0.01 * total).OrderByDescending(p => p.bytes).Select(p => $"{p.what} {Size(p.bytes)}"));
        return (total, breakdown);
    }

    /// <summary>The memory this process may use (the GC's view: physical memory or the container limit).</summary>
    public static long Available => GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;

    /// <summary>Throws a one-line <see cref="LinearLensException"/> when the run would need more memory than is available.</summary>
    public static void Check(ModelConfig c, RunShape run, long? available = null)
    {
        var (bytes, breakdown) = Estimate(c, run);
        long have = available ?? Available;
        if (bytes > have)
            throw new LinearLensException($"this run would need about {Size(bytes)} of memory ({breakdown}) but {Size(have)} are available; use fewer tokens{(run.NewTokens > 0 ? " or --max-new-tokens" : "")}{(run.ElementSize == 8 ? ", --dtype float32" : "")}{(run.FullJacobians > 0 ? " or --method matrix-free" : "")}");
    }

    /// <summary>
    /// Throws a one-line <see cref="LinearLensException"/> when the disk that <paramref name="dir"/> (or its nearest
    /// existing folder) is on has less than <paramref name="bytes"/> free.
    /// </summary>
    public static void CheckFreeDisk(string dir, long bytes, string option)
    {
        string existing = Path.GetFullPath(dir);
        while (!Directory.Exists(existing)) existing = Path.GetDirectoryName(existing) ?? "/";
        long free = new DriveInfo(existing).AvailableFreeSpace;
        if (bytes > free)
            throw new LinearLensException($"{option} {dir}: the files need at least {Size(bytes)} but its disk has {Size(free)} free; free some space or write elsewhere");
    }

    public static string Size(double bytes) => bytes switch
    {
        >= 1e12 => (bytes / 1e12).ToString("F1", CultureInfo.InvariantCulture) + " TB",
        >= 1e9 => (bytes / 1e9).ToString("F1", CultureInfo.InvariantCulture) + " GB",
        _ => (bytes / 1e6).ToString("F0", CultureInfo.InvariantCulture) + " MB",
    };
}
