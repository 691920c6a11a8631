using System.Diagnostics;
using System.Numerics;
using System.Runtime.CompilerServices;
using LinearLens.Loading;
using LinearLens.Numerics;

namespace LinearLens.Linearization;

/// <summary>
/// The full detached Jacobian of one target and what it explains: J [d_out, n, d_in] with Jᵢ = ∂(output)/∂xᵢ of the
/// frozen map, per-token contributions cᵢ = Jᵢxᵢ [n×d], the frozen map's constant term c (zero without biases), the
/// reconstruction ŷ = Σᵢ cᵢ + c, and how well ŷ reproduces the real output y.
/// </summary>
public sealed record JacobianResult<T>(
    JacobianTarget Target,
    int Tokens,
    int Hidden,
    T[] J,
    T[] Input,
    T[] Output,
    T[] Contributions,
    T[] Offset,
    T[] Reconstruction,
    double RelativeError,
    double MaxAbsError,
    double Seconds) where T : unmanaged, IFloatingPointIeee754<T>
{
    /// <summary>Jᵢ as a d×d row-major view is not contiguous in J's [d, n, d] layout: element (k, j) = J[(k·n + i)·d + j].</summary>
    public T At(int k, int i, int j) => J[((long)k * Tokens + i) * Hidden + j];
}

public static class DetachedJacobian
{
    /// <summary>
    /// Rows (positions × columns) one batched product carries, here and in the matrix-free operators: big enough for GEMM
    /// efficiency, small enough for memory.
    /// </summary>
    public const int RowsPerPass = 8192;

    /// <summary>Memory for forming J — J itself plus one product's buffers — above which `auto` goes matrix-free.</summary>
    public const long MemoryBudgetBytes = 2_000_000_000;

    /// <summary>
    /// Cotangents per transpose product when forming J for n tokens, and the bytes of that product's buffers. All d at
    /// once when J and their buffers fit <paramref name="budget"/> (default: <see cref="MemoryBudgetBytes"/> or a quarter
    /// of the memory this process may use, whichever is more) and the MLP then runs as one matrix per position (a third
    /// fewer MLP flops, see <see cref="FrozenMlp"/>); otherwise <see cref="RowsPerPass"/>/n.
    /// </summary>
    public static (int batch, long bufferBytes) Batch(ModelConfig c, int n, int elementSize, long? budget = null)
    {
        int d = c.HiddenSize;
        long jBytes = (long)d * n * d * elementSize;
        long wideBytes = (long)n * d * (3L * d + c.QDim + c.KvDim) * elementSize;
        long allowed = budget ?? Math.Max(MemoryBudgetBytes, GC.GetGCMemoryInfo().TotalAvailableMemoryBytes / 4);
        if (jBytes + wideBytes <= allowed && FrozenMlp.MatrixPays(d, c.IntermediateSize, d)) return (d, wideBytes);
        int batch = Math.Clamp(RowsPerPass / n, 1, d);
        return (batch, (long)n * batch * (3L * d + c.QDim + c.KvDim + c.IntermediateSize) * elementSize);
    }

    /// <summary>
    /// J by reverse mode over the frozen map: d cotangents (the unit vectors of the output), carried in batches of
    /// B through one batched transpose product each (architectures.md §3.5). Cost ≈ 2·d·n·P_lin flops.
    /// </summary>
    public static JacobianResult<T> Compute<T>(FrozenMap<T> map, JacobianTarget target, Action<double>? progress = null)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        var sw = Stopwatch.StartNew();
        var J = Assemble<T>(map.Tokens, map.Hidden, Batch(map.Model.Config, map.Tokens, Unsafe.SizeOf<T>()).batch,
            (u, b, g) => map.Vjp(target, u, b, g), progress);
        return Explain(target, map.Tokens, map.Hidden, J, map.Input(target), map.Output(target), map.Offset(target), sw);
    }

    /// <summary>
    /// J [d, n, d] from a batched transpose product: the d unit cotangents of the output in batches of B, each
    /// giving rows k0 … k0+B−1 of every Jᵢ (Γ row (i, b) is row k0+b of Jᵢ).
    /// </summary>
    internal static T[] Assemble<T>(int n, int d, int batch, Action<ReadOnlySpan<T>, int, T[]> vjp, Action<double>? progress)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        var J = Pinned.Array<T>((long)d * n * d);
        var unit = new T[batch * d];
        var gamma = Pinned.Array<T>((long)n * batch * d);
        for (int k0 = 0; k0 < d; k0 += batch)
        {
            int B = Math.Min(batch, d - k0);
            Array.Clear(unit);
            for (int b = 0; b < B; b++) unit[b * d + k0 + b] = T.One;
            vjp(unit.AsSpan(0, B * d), B, gamma);
            Parallel.For(0, B, b =>
            {
                for (int i = 0; i < n; i++)
                    gamma.AsSpan((i * B + b) * d, d).CopyTo(J.AsSpan((int)(((long)(k0 + b) * n + i) * d), d));
            });
            progress?.Invoke(Math.Min(1.0, (double)(k0 + B) / d));
        }
        return J;
    }

    /// <summary>Contributions cᵢ = Jᵢxᵢ, ŷ = Σᵢ cᵢ + offset and its error against the real output y.</summary>
    internal static JacobianResult<T> Explain<T>(JacobianTarget target, int n, int d, T[] J, T[] x, T[] y, T[] offset, Stopwatch sw)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        var contrib = new T[n * d];
        Parallel.For(0, d, k =>
        {
            for (int i = 0; i < n; i++)
                contrib[i * d + k] = System.Numerics.Tensors.TensorPrimitives.Dot<T>(J.AsSpan((int)(((long)k * n + i) * d), d), x.AsSpan(i * d, d));
        });
        var yHat = (T[])offset.Clone();
        for (int i = 0; i < n; i++)
            for (int k = 0; k < d; k++) yHat[k] += contrib[i * d + k];
        var (rel, maxAbs) = Errors<T>(yHat, y);
        return new JacobianResult<T>(target, n, d, J, x.AsSpan(0, n * d).ToArray(), y, contrib, offset, yHat, rel, maxAbs, sw.Elapsed.TotalSeconds);
    }

    /// <summary>‖a − b‖/‖b‖ and max |a − b|, in double.</summary>
    public static (double relative, double maxAbs) Errors<T>(ReadOnlySpan<T> a, ReadOnlySpan<T> b) where T : IFloatingPointIeee754<T>
    {
        double num = 0, den = 0, max = 0;
        for (int i = 0; i < a.Length; i++)
        {
            double e = double.CreateChecked(a[i]) - double.CreateChecked(b[i]);
            num += e * e; den += double.CreateChecked(b[i]) * double.CreateChecked(b[i]);
            max = Math.Max(max, Math.Abs(e));
        }
        return (Math.Sqrt(num / den), max);
    }
}
