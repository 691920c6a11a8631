using System.Numerics;

namespace LinearLens.Tests.Support;

/// <summary>How close two results are, the one way every parity test measures it.</summary>
public static class Close
{
    /// <summary>‖a − b‖/‖b‖ in double over all elements (same lengths; b must not be all zero).</summary>
    public static double RelErr<T>(ReadOnlySpan<T> a, ReadOnlySpan<double> b) where T : unmanaged, IFloatingPointIeee754<T>
    {
        Assert.Equal(b.Length, a.Length);
        double num = 0, den = 0;
        for (int i = 0; i < b.Length; i++)
        {
            double diff = double.CreateChecked(a[i]) - b[i];
            num += diff * diff;
            den += b[i] * b[i];
        }
        Assert.True(den > 0);
        return Math.Sqrt(num / den);
    }

    public static double RelErr<T>(T[] a, double[] b) where T : unmanaged, IFloatingPointIeee754<T> => RelErr<T>(a.AsSpan(), b.AsSpan());
}
