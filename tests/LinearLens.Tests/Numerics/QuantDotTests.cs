using System.Runtime.Intrinsics.X86;
using LinearLens.Numerics;

namespace LinearLens.Tests.Numerics;

/// <summary>
/// The fused single-row dot kernels (<see cref="QuantDecode.Dot4{T}"/>, AVX2, and <see cref="QuantDecode.Dot4Avx512{T}"/>)
/// called directly against the scalar reference decode: every weight bit-equal (a unit x picks out one weight, and a
/// product with one nonzero term is exact), sums within the summation-order bound k·u·Σ|x·w|, and a row's sum independent
/// of the rows beside it.
/// </summary>
public sealed unsafe class QuantDotTests
{
    static bool HasAvx2 => Avx2.IsSupported && Fma.IsSupported;
    static bool HasAvx512 => Avx512F.IsSupported;

    public static TheoryData<DType, bool, bool> Cases()
    {
        var d = new TheoryData<DType, bool, bool>();
        foreach (var t in new[] { DType.Q8_0, DType.Q4_K })
            foreach (bool wide in new[] { false, true })
                foreach (bool f32 in new[] { false, true }) d.Add(t, wide, f32);
        return d;
    }

    /// <summary>Four random rows of k weights of type t, and their reference decode as float32.</summary>
    static (byte[] rows, float[] w) Rows(DType t, int k, ulong seed)
    {
        var rows = new byte[4 * t.RowBytes(k)];
        QuantBlocks.Random(t, 4, k, seed, rows);
        var w = new float[4 * k];
        int be = t.BlockElements(), bb = t.BlockBytes();
        fixed (byte* b = rows)
        fixed (float* f = w)
            for (int i = 0; i < 4 * k / be; i++) QuantReference.DecodeBlock(t, b + (long)i * bb, f + (long)i * be);
        return (rows, w);
    }

    static void Dot<T>(bool wide, DType t, byte* r0, byte* r1, byte* r2, byte* r3, T* x, int k, T* s) where T : unmanaged
    {
        if (wide) QuantDecode.Dot4Avx512(t, r0, r1, r2, r3, x, k, s);
        else QuantDecode.Dot4(t, r0, r1, r2, r3, x, k, s);
    }

    /// <summary>Runs the kernel over the four rows (or row 0 four times) with x, widened to double.</summary>
    static double[] Run(bool wide, bool f32, DType t, byte[] rows, double[] x, int k, bool sameRow = false)
    {
        long rb = t.RowBytes(k);
        var result = new double[4];
        fixed (byte* b = rows)
        {
            byte* r0 = b, r1 = sameRow ? b : b + rb, r2 = sameRow ? b : b + 2 * rb, r3 = sameRow ? b : b + 3 * rb;
            if (f32)
            {
                var xf = x.Select(v => (float)v).ToArray();
                var s = new float[4];
                fixed (float* px = xf, ps = s) Dot(wide, t, r0, r1, r2, r3, px, k, ps);
                for (int i = 0; i < 4; i++) result[i] = s[i];
            }
            else
                fixed (double* px = x, ps = result) Dot(wide, t, r0, r1, r2, r3, px, k, ps);
        }
        return result;
    }

    static bool Skip(bool wide) => wide ? !HasAvx512 : !HasAvx2;

    [Theory]
    [MemberData(nameof(Cases))]
    public void Every_weight_is_the_reference_float(DType t, bool wide, bool f32)
    {
        if (Skip(wide)) return;
        int k = t == DType.Q8_0 ? 160 : 512; // Q8_0: five blocks, so a short group of block scales too
        var (rows, w) = Rows(t, k, 11);
        var x = new double[k];
        for (int i = 0; i < k; i++)
        {
            x[i] = 1;
            var got = Run(wide, f32, t, rows, x, k);
            for (int r = 0; r < 4; r++)
                if (got[r] != w[r * k + i])
                    Assert.Fail($"{t} {(wide ? "AVX-512" : "AVX2")} {(f32 ? "f32" : "f64")}: row {r} weight {i} is {got[r]}, reference {w[r * k + i]}");
            x[i] = 0;
        }
    }

    [Theory]
    [InlineData(false, false)]
    [InlineData(false, true)]
    [InlineData(true, false)]
    [InlineData(true, true)]
    public void Q4_K_weights_stay_the_reference_float_when_d_and_dmin_are_far_apart(bool wide, bool f32)
    {
        // d·scale·q − dmin·min rounds in float32 when the two halves' exponents are far apart (here 2^0 against 2^-24,
        // and the reverse); float64 kernels that build the table in double where that rounding cannot happen must fall
        // back to the float32 table in these blocks (superblocks 0 and 2; 1 and 3 keep the random d and dmin, so a row
        // mixes both paths)
        if (Skip(wide)) return;
        const int k = 1024;
        var (rows, _) = Rows(DType.Q4_K, k, 21);
        long rb = DType.Q4_K.RowBytes(k);
        for (int r = 0; r < 4; r++)
        {
            int at = (int)(r * rb + r % 2 * 2 * 144);
            (ushort d, ushort dmin) = (r % 2 == 0) ? ((ushort)0x3C00, (ushort)0x0001) : ((ushort)0x0001, (ushort)0x3C00);
            BitConverter.TryWriteBytes(rows.AsSpan(at), d); BitConverter.TryWriteBytes(rows.AsSpan(at + 2), dmin);
            for (int j = 4; j < 16; j++) rows[at + j] = 0xFF; // every scale and min 63
        }
        var w = new float[4 * k];
        fixed (byte* b = rows) fixed (float* f = w)
            for (int i = 0; i < 4 * k / 256; i++) QuantReference.DecodeBlock(DType.Q4_K, b + i * 144L, f + i * 256L);
        var x = new double[k];
        for (int i = 0; i < k; i++)
        {
            x[i] = 1;
            var got = Run(wide, f32, DType.Q4_K, rows, x, k);
            for (int r = 0; r < 4; r++)
                if (got[r] != w[r * k + i])
                    Assert.Fail($"{(wide ? "AVX-512" : "AVX2")} {(f32 ? "f32" : "f64")}: row {r} weight {i} is {got[r]:R}, reference {w[r * k + i]:R}");
            x[i] = 0;
        }
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Sums_match_the_reference_dot_and_do_not_depend_on_the_neighbours(DType t, bool wide, bool f32)
    {
        if (Skip(wide)) return;
        var rng = new Random(5);
        foreach (int k in t == DType.Q8_0 ? new[] { 32, 96, 128, 224, 1024 } : new[] { 256, 768, 1024 })
        {
            var (rows, w) = Rows(t, k, (ulong)k);
            var x = new double[k];
            for (int i = 0; i < k; i++) x[i] = f32 ? (float)(rng.NextDouble() * 2 - 1) : rng.NextDouble() * 2 - 1;
            var got = Run(wide, f32, t, rows, x, k);
            for (int r = 0; r < 4; r++)
            {
                double s = 0, abs = 0;
                for (int i = 0; i < k; i++) { s += x[i] * w[r * k + i]; abs += Math.Abs(x[i] * w[r * k + i]); }
                // any order of k float (double) roundings stays within k·u of Σ|x·w|; the reference's own error is far below
                double bound = k * (f32 ? Math.Pow(2, -24) : Math.Pow(2, -53)) * abs + 1e-300;
                Assert.True(Math.Abs(got[r] - s) <= bound,
                    $"{t} {(wide ? "AVX-512" : "AVX2")} {(f32 ? "f32" : "f64")} k={k} row {r}: {got[r]} vs {s} (error {Math.Abs(got[r] - s) / abs:G3} of Σ|x·w|)");
            }
            // row 0 alone (repeated, as a short group runs it) gives the same bits as beside three other rows
            Assert.Equal(got[0], Run(wide, f32, t, rows, x, k, sameRow: true)[0]);
        }
    }
}
