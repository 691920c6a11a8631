using LinearLens.Linearization;
using LinearLens.Loading;

namespace LinearLens.Analysis;

/// <summary>
/// The one place that chooses between forming the Jacobian (full) and never forming it (matrix-free: Lanczos over
/// batched JVP/VJP products), by estimated memory and cost; every command asks it, and each answer comes with a
/// one-line reason that the command prints and the JSON keeps (`method`, `method_reason`).
/// </summary>
public static class MethodPlanner
{
    /// <summary>The whole analysis (`analyze`), auto: full when forming every Jacobian of the analysis costs under ~1 TFLOP and J fits in 1 GB.</summary>
    public static (SvdMethod method, string reason) ForAnalysis(ModelConfig c, int n, int sweepLayers, SvdMethod requested)
    {
        if (requested != SvdMethod.Auto) return (requested, "requested");
        int d = c.HiddenSize;
        double lin = (double)c.KvDim * d + (double)d * c.QDim + 2.0 * c.IntermediateSize * d;
        double flops = 2.0 * d * n * lin * c.NumLayers * (2 + 3 * sweepLayers);   // output J, ordinary J, 6 per sweep layer (~half the depth on average)
        double bytes = 8.0 * d * n * d;
        string cost = $"forming every Jacobian ≈ {flops / 1e12:F2} TFLOP, J {bytes / 1e6:F0} MB";
        return flops < 1e12 && bytes < 1e9 ? (SvdMethod.Full, cost) : (SvdMethod.MatrixFree, cost);
    }

    /// <summary>
    /// One Jacobian (`jacobian`), auto: full when J fits the memory budget and its d transpose products cost less than the Lanczos estimate
    /// (2 products per Krylov column, 10k + 100 columns at most, plus k for the residuals; per token for --per-token,
    /// where a product runs only from the token's position on),
    /// else matrix-free. Returns the choice and a one-line reason.
    /// </summary>
    public static (SvdMethod method, string reason) ForJacobian(ModelConfig c, int n, int elementSize, JacobianTarget target, SvdMethod requested, int components,
        bool perToken, bool nonlinear, bool writesJ)
    {
        if (requested != SvdMethod.Auto) return (requested, "requested");
        if (nonlinear) return (SvdMethod.Full, "the ordinary Jacobian (--nonlinear) is only formed in full");
        if (writesJ) return (SvdMethod.Full, "--out writes the full J");
        int d = c.HiddenSize;
        long lin = 0;  // linear-path weights per layer run: W_v, W_o, W_up, W_down
        int layers = target.Mode == JacobianMode.Cumulative ? target.Layer : 1;
        lin = (long)layers * ((long)c.KvDim * d + (long)d * c.QDim + 2L * c.IntermediateSize * d);
        double rowBytes = (3.0 * d + c.QDim + c.KvDim + c.IntermediateSize) * elementSize;
        // whether J fits is judged with the narrow batch: a wider one is only taken when memory allows (DetachedJacobian.Batch)
        double memFull = (double)d * n * d * elementSize + DetachedJacobian.Batch(c, n, elementSize, budget: 0).bufferBytes;
        int k = Math.Min(components, d);
        int lanes = perToken ? n : 1;
        double productsFree = JacobianOperators.LanczosProducts(d, n, k, perToken);
        double productsFull = d;
        int freeBatch = Math.Min(JacobianOperators.MaxBatch(n), lanes * Math.Clamp(k, 1, 4));
        double memFree = n * (double)freeBatch * rowBytes + JacobianOperators.LanczosBytes(d, n, k, perToken);
        double gflop(double products) => 2.0 * products * n * lin / 1e9;
        string mem(double b) => b >= 1e9 ? $"{b / 1e9:F1} GB" : $"{b / 1e6:F0} MB";
        string costs = $"full: J {mem(memFull)}, {productsFull:F0} products ≈ {gflop(productsFull):F0} GFLOP; matrix-free: {mem(memFree)}, ≤ {productsFree:F0} products ≈ {gflop(productsFree):F0} GFLOP";
        if (memFull > DetachedJacobian.MemoryBudgetBytes)
            return (SvdMethod.MatrixFree, $"J would need {mem(memFull)} > {mem(DetachedJacobian.MemoryBudgetBytes)} budget ({costs})");
        return productsFree < productsFull
            ? (SvdMethod.MatrixFree, $"fewer products ({costs})")
            : (SvdMethod.Full, $"J fits in memory and costs no more ({costs})");
    }

    /// <summary>Whether the matrix-free analysis forms the output's J: it fits in 1 GB and costs fewer products than the per-token Lanczos runs.</summary>
    public static bool FormOutputJacobian(int d, int n, int k) =>
        8.0 * d * n * d <= 1e9 && d < JacobianOperators.LanczosProducts(d, n, k, perToken: true);

}
