using System.Buffers.Binary;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using LinearLens.Numerics;

namespace LinearLens.Tests.Numerics;

/// <summary>
/// Block decoders of every GGML quantized type: hand-built blocks with values worked out by hand from llama.cpp's
/// layouts, and the fast (AVX2) decoders against the scalar reference on random blocks, bit for bit.
/// </summary>
public sealed unsafe class QuantDecodeTests
{
    public static readonly DType[] QuantTypes =
        [DType.Q4_0, DType.Q4_1, DType.Q5_0, DType.Q5_1, DType.Q8_0, DType.Q2_K, DType.Q3_K, DType.Q4_K, DType.Q5_K, DType.Q6_K, DType.IQ4_NL, DType.IQ4_XS];

    public static TheoryData<DType> Types() { var d = new TheoryData<DType>(); foreach (var t in QuantTypes) d.Add(t); return d; }

    const ushort Half1 = 0x3C00, HalfHalf = 0x3800, HalfQuarter = 0x3400, HalfMinus1 = 0xBC00;

    static void H(byte[] b, int at, ushort bits) => BinaryPrimitives.WriteUInt16LittleEndian(b.AsSpan(at), bits);

    /// <summary>Decodes the block with the reference and the fast decoders (float and double) and checks every element.</summary>
    static void Expect(DType t, byte[] block, Func<int, float> expected)
    {
        Assert.Equal(t.BlockBytes(), block.Length);
        int n = t.BlockElements();
        var reference = new float[n]; var fast = new float[n]; var wide = new double[n];
        fixed (byte* b = block)
        fixed (float* r = reference, f = fast)
        fixed (double* w = wide)
        {
            QuantReference.DecodeBlock(t, b, r);
            QuantDecode.Blocks(t, b, 1, f);
            QuantDecode.Blocks(t, b, 1, w);
        }
        for (int i = 0; i < n; i++)
        {
            Assert.True(expected(i) == reference[i], $"{t} element {i}: reference decodes {reference[i]}, expected {expected(i)}");
            Assert.True(expected(i) == fast[i], $"{t} element {i}: fast float decodes {fast[i]}, expected {expected(i)}");
            Assert.True(expected(i) == wide[i], $"{t} element {i}: fast double decodes {wide[i]}, expected {expected(i)}");
        }
    }

    [Fact]
    public void Q4_0_known_block()
    {
        var b = new byte[18];
        H(b, 0, HalfHalf);                       // d = 0.5
        for (int j = 0; j < 16; j++) b[2 + j] = 0x88; // q = 8 → 0
        b[2] = 0x1F;                             // y0 = (15−8)·0.5 = 3.5, y16 = (1−8)·0.5 = −3.5
        b[3] = 0x80;                             // y1 = (0−8)·0.5 = −4,  y17 = 0
        Expect(DType.Q4_0, b, i => i switch { 0 => 3.5f, 16 => -3.5f, 1 => -4f, _ => 0f });
    }

    [Fact]
    public void Q4_1_known_block()
    {
        var b = new byte[20];
        H(b, 0, HalfHalf); H(b, 2, HalfMinus1);  // d = 0.5, m = −1
        b[4] = 0x3A;                             // y0 = 10·0.5 − 1 = 4, y16 = 3·0.5 − 1 = 0.5; the rest q = 0 → −1
        Expect(DType.Q4_1, b, i => i switch { 0 => 4f, 16 => 0.5f, _ => -1f });
    }

    [Fact]
    public void Q4_1_rounds_the_min_addition_in_float32()
    {
        var b = new byte[20];
        H(b, 0, 0x7800); H(b, 2, 0x1400);        // d = 32768, m = 2⁻¹⁰
        b[4] = 0x01;                             // y0 = 32768 + 2⁻¹⁰ rounds to 32768 in float32 (ulp 2⁻⁸); y16 and the rest: 0 + 2⁻¹⁰
        Expect(DType.Q4_1, b, i => i == 0 ? 32768f : 1f / 1024);
    }

    [Fact]
    public void Q5_0_known_block()
    {
        var b = new byte[22];
        H(b, 0, Half1);                           // d = 1
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(2), 0x00010001); // fifth bits of elements 0 and 16
        b[6] = 0x21;                              // y0 = (1|16) − 16 = 1, y16 = (2|16) − 16 = 2; the rest −16
        Expect(DType.Q5_0, b, i => i switch { 0 => 1f, 16 => 2f, _ => -16f });
    }

    [Fact]
    public void Q5_1_known_block()
    {
        var b = new byte[24];
        H(b, 0, HalfHalf); H(b, 2, HalfQuarter);  // d = 0.5, m = 0.25
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(4), 0x80000000); // fifth bit of element 31
        b[8 + 15] = 0xF0;                         // y31 = (15|16)·0.5 + 0.25 = 15.75, y15 = 0.25
        Expect(DType.Q5_1, b, i => i == 31 ? 15.75f : 0.25f);
    }

    [Fact]
    public void Q8_0_known_block()
    {
        var b = new byte[34];
        H(b, 0, HalfQuarter);                     // d = 0.25
        b[2] = 0x80; b[3] = 127; b[4] = 1;        // −128·0.25 = −32, 127·0.25 = 31.75, 0.25
        Expect(DType.Q8_0, b, i => i switch { 0 => -32f, 1 => 31.75f, 2 => 0.25f, _ => 0f });
    }

    [Fact]
    public void Q2_K_known_block()
    {
        var b = new byte[84];
        H(b, 80, Half1); H(b, 82, HalfHalf);      // d = 1, dmin = 0.5
        // scale bytes: low nibble · d, high nibble · dmin; scale s covers elements 16s..16s+15
        b[0] = 0x21;  // s0: dl 1, ml 1
        b[1] = 0x45;  // s1: dl 5, ml 2
        b[2] = 0x03;  // s2: dl 3, ml 0
        b[4] = 0x10;  // s4: dl 0, ml 0.5
        b[6] = 0x12;  // s6: dl 2, ml 0.5
        b[8] = 0x11;  // s8: dl 1, ml 0.5
        b[16 + 0] = 0xE4;   // q[0] holds elements 0 (bits 0–1: 0), 32 (1), 64 (2), 96 (3)
        b[16 + 16] = 0x03;  // q[16] bits 0–1: element 16 → 3
        b[16 + 32] = 0x01;  // q[32] bits 0–1: element 128 → 1
        Expect(DType.Q2_K, b, i => i switch
        {
            0 => 0 * 1 - 1f, 32 => 3 * 1f, 64 => 2 * 0 - 0.5f, 96 => 3 * 2 - 0.5f, 16 => 3 * 5 - 2f, 128 => 1 - 0.5f,
            _ => (i / 16) switch { 0 => -1f, 1 => -2f, 4 => -0.5f, 6 => -0.5f, 8 => -0.5f, _ => 0f },
        });
    }

    [Fact]
    public void Q3_K_known_block()
    {
        var b = new byte[110];
        H(b, 108, HalfHalf);                      // d = 0.5
        b[96 + 0] = 0x01; b[96 + 8] = 0x02;       // scale 0 = 1 | (2 << 4) = 33 → 33 − 32 = 1 → dl = 0.5
        b[96 + 5] = 0x70; b[96 + 9] = 0xC0;       // scale 13 = (0x70 >> 4) | (3 << 4) = 55 → 23 → dl = 11.5
        b[0] = 0x01;                              // hmask bit 0 of byte 0: element 0's third bit set (no −4)
        b[32 + 0] = 0x03;                         // element 0: low bits 3 → 0.5·3 = 1.5
        b[16] = 0x40;                             // hmask bit 6 of byte 16: element 208's third bit
        b[32 + 48] = 0x20;                        // q[48] bits 4–5: element 208 → 2 → 11.5·2 = 23
        // every other scale is 0 − 32 → dl = −16; every other quant is 0 − 4 → (−4)·(−16) = 64
        Expect(DType.Q3_K, b, i => i switch
        {
            0 => 1.5f, 208 => 23f,
            _ when i < 16 => -4 * 0.5f,
            _ when i >= 208 && i < 224 => -4 * 11.5f,
            _ => 64f,
        });
    }

    [Fact]
    public void Q4_K_known_block()
    {
        var b = new byte[144];
        H(b, 0, Half1); H(b, 2, HalfHalf);        // d = 1, dmin = 0.5
        b[4 + 0] = 0x42; b[4 + 4] = 3;            // sub-block 0: scale 2, min 3 → 1.5 (0x40: top bits of sub-block 4's scale)
        b[4 + 1] = 1;                             // sub-block 1: scale 1, min 0
        b[4 + 8] = 0x13;                          // sub-block 4: scale 3 | (1 << 4) = 19, min 1 | (0 << 4) = 1 → 0.5
        b[16 + 0] = 0x5A;                         // element 0: 2·10 − 1.5 = 18.5; element 32: 1·5 − 0 = 5
        b[16 + 64] = 0x02;                        // element 128: 19·2 − 0.5 = 37.5
        Expect(DType.Q4_K, b, i => i switch
        {
            0 => 18.5f, 32 => 5f, 128 => 37.5f,
            _ when i < 32 => -1.5f,
            _ when i >= 128 && i < 160 => -0.5f,
            _ => 0f,
        });
    }

    [Fact]
    public void Q4_K_rounds_the_min_subtraction_in_float32()
    {
        var b = new byte[144];
        H(b, 0, 0x6800); H(b, 2, 0x0400);         // d = 2048, dmin = 2⁻¹⁴
        b[4 + 0] = 63; b[4 + 4] = 1;              // sub-block 0: scale 63, min 1
        b[16] = 0x0F;                             // element 0: 2048·63·15 = 1935360, minus 2⁻¹⁴ rounds back to 1935360 (ulp 2⁻³)
        Expect(DType.Q4_K, b, i => i switch { 0 => 1935360f, _ when i < 32 => -1f / 16384, _ => 0f });
    }

    [Fact]
    public void Q5_K_known_block()
    {
        var b = new byte[176];
        H(b, 0, Half1); H(b, 2, Half1);           // d = 1, dmin = 1
        b[4 + 0] = 1;                             // sub-block 0: scale 1, min 0
        b[4 + 1] = 2; b[4 + 5] = 1;               // sub-block 1: scale 2, min 1
        b[4 + 10] = 0x01;                         // sub-block 6: scale 1 | (0 << 4), min 0
        b[16 + 0] = 0x03;                         // qh[0]: fifth bit of element 0 (bit 0) and of element 32 (bit 1)
        b[16 + 1] = 0x40;                         // qh[1] bit 6: element 193 (chunk 3, low nibbles)
        b[48 + 0] = 0x1F;                         // element 0: 1·(15+16) = 31; element 32: 2·(1+16) − 1 = 33
        b[48 + 96 + 1] = 0x03;                    // element 193: 1·(3+16) = 19
        Expect(DType.Q5_K, b, i => i switch
        {
            0 => 31f, 32 => 33f, 193 => 19f,
            _ when i >= 32 && i < 64 => -1f,
            _ => 0f,
        });
    }

    [Fact]
    public void Q6_K_known_block()
    {
        var b = new byte[210];
        H(b, 208, HalfHalf);                      // d = 0.5
        b[192 + 0] = 2; b[192 + 2] = 0xFF; b[192 + 4] = 3; b[192 + 6] = 0xFC; b[192 + 8] = 127; // scales 2, −1, 3, −4, 127
        b[0] = 0x21;                              // ql[0]: element 0 low 1, element 64 low 2
        b[32] = 0x5F;                             // ql[32]: element 32 low 15, element 96 low 5
        b[128 + 0] = 0xE4;                        // qh[0]: high bits 0 (el. 0), 1 (el. 32), 2 (el. 64), 3 (el. 96)
        b[64] = 0x0F; b[128 + 32] = 0x03;         // element 128: 15 | (3 << 4) = 63 → 31
        Expect(DType.Q6_K, b, i => i switch
        {
            0 => 0.5f * 2 * (1 - 32), 32 => 0.5f * -1 * (31 - 32), 64 => 0.5f * 3 * (34 - 32), 96 => 0.5f * -4 * (53 - 32),
            128 => 0.5f * 127 * 31,
            _ when i < 16 => 0.5f * 2 * -32, _ when i >= 32 && i < 48 => 0.5f * -1 * -32, _ when i >= 64 && i < 80 => 0.5f * 3 * -32,
            _ when i >= 96 && i < 112 => 0.5f * -4 * -32, _ when i >= 128 && i < 144 => 0.5f * 127 * -32,
            _ => 0f,
        });
    }

    [Fact]
    public void IQ4_NL_known_block()
    {
        var b = new byte[18];
        H(b, 0, HalfHalf);                        // d = 0.5; levels −127 … 113
        b[2] = 0xF0;                              // element 0: level 0 = −127 → −63.5; element 16: level 15 = 113 → 56.5
        b[3] = 0x98;                              // element 1: level 8 = 1 → 0.5; element 17: level 9 = 13 → 6.5
        Expect(DType.IQ4_NL, b, i => i switch { 0 => -63.5f, 16 => 56.5f, 1 => 0.5f, 17 => 6.5f, _ => -63.5f });
    }

    [Fact]
    public void IQ4_XS_known_block()
    {
        var b = new byte[136];
        H(b, 0, HalfQuarter);                     // d = 0.25
        H(b, 2, 0b1001);                          // high scale bits: sub-block 0 → 1, sub-block 1 → 2
        b[4] = 0x51;                              // low scale nibbles: sub-block 0 → 1, sub-block 1 → 5
        // sub-block 0: ls = 1 | 16 = 17 → dl = 0.25·(17−32) = −3.75; sub-block 1: 5 | 32 = 37 → 1.25; others 0 → −8
        b[8 + 0] = 0x08;                          // element 0: level 8 = 1 → −3.75; element 16: level 0 → 476.25
        b[8 + 16] = 0x0F;                         // element 32: level 15 = 113 → 141.25
        Expect(DType.IQ4_XS, b, i => i switch
        {
            0 => -3.75f, 32 => 141.25f,
            _ when i < 32 => -3.75f * -127,
            _ when i < 64 => 1.25f * -127,
            _ => -8f * -127,
        });
    }

    [Fact]
    public void Scale_conversion_is_exact_for_every_f16()
    {
        for (int h = 0; h < 65536; h++)
        {
            ushort bits = (ushort)h;
            float expected = (float)BitConverter.UInt16BitsToHalf(bits), got = QuantReference.Half((byte*)&bits);
            if (float.IsNaN(expected)) Assert.True(float.IsNaN(got));
            else Assert.True(BitConverter.SingleToInt32Bits(expected) == BitConverter.SingleToInt32Bits(got), $"f16 0x{h:X4}: {got} vs {expected}");
        }
    }

    [Fact]
    public void Vector_half_loaders_and_the_half_table_are_exact_for_every_f16()
    {
        // 4 and 8 halves at a time (the f16 weights and the block decoders' scales go through them), and the kernels'
        // lookup table, against the framework's conversion, bit for bit
        ushort* all = stackalloc ushort[65536];
        for (int h = 0; h < 65536; h++) all[h] = (ushort)h;
        for (int h = 0; h < 65536; h += 16)
        {
            var got = new float[16];
            for (int i = 0; i < 16; i += 4) GemmLoad.F16x4(all + h + i).CopyTo(got, i);
            Check(h, got, "F16x4");
            for (int i = 0; i < 16; i++) got[i] = HalfTable.Values[h + i];
            Check(h, got, "HalfTable");
            if (Avx2.IsSupported)
            {
                GemmLoad.F16x8(all + h).CopyTo(got, 0); GemmLoad.F16x8(all + h + 8).CopyTo(got, 8);
                Check(h, got, "F16x8");
            }
        }
        static void Check(int h0, float[] got, string loader)
        {
            for (int i = 0; i < 16; i++)
            {
                float expected = (float)BitConverter.UInt16BitsToHalf((ushort)(h0 + i));
                if (float.IsNaN(expected)) Assert.True(float.IsNaN(got[i]), $"{loader} f16 0x{h0 + i:X4}: {got[i]}, not NaN");
                else Assert.True(BitConverter.SingleToInt32Bits(expected) == BitConverter.SingleToInt32Bits(got[i]), $"{loader} f16 0x{h0 + i:X4}: {got[i]} vs {expected}");
            }
        }
    }

    /// <summary>Offsets of the f16 fields (scales, mins) of a block.</summary>
    internal static int[] HalfFields(DType t) => t switch
    {
        DType.Q4_1 or DType.Q5_1 or DType.Q4_K or DType.Q5_K => [0, 2],
        DType.Q2_K => [80, 82], DType.Q3_K => [108], DType.Q6_K => [208],
        _ => [0],
    };

    /// <summary>Random bytes with every f16 field made finite (any sign, subnormals included).</summary>
    internal static byte[] RandomBlocks(Random rng, DType t, int blocks)
    {
        var bytes = new byte[blocks * t.BlockBytes()];
        rng.NextBytes(bytes);
        for (int k = 0; k < blocks; k++)
            foreach (int at in HalfFields(t))
            {
                int i = k * t.BlockBytes() + at;
                ushort h = BinaryPrimitives.ReadUInt16LittleEndian(bytes.AsSpan(i));
                if ((h & 0x7C00) == 0x7C00) h &= 0xBFFF; // exponent all ones → clear its top bit
                BinaryPrimitives.WriteUInt16LittleEndian(bytes.AsSpan(i), h);
            }
        return bytes;
    }

    [Theory, MemberData(nameof(Types))]
    public void Fast_decoders_equal_the_reference_bit_for_bit(DType t)
    {
        var rng = new Random(17 + (int)t);
        int blocks = 64, be = t.BlockElements();
        var bytes = RandomBlocks(rng, t, blocks);
        var reference = new float[blocks * be];
        var fast = new float[blocks * be];
        var wide = new double[blocks * be];
        fixed (byte* b = bytes)
        fixed (float* r = reference, f = fast)
        fixed (double* w = wide)
        {
            for (int k = 0; k < blocks; k++) QuantReference.DecodeBlock(t, b + k * t.BlockBytes(), r + k * be);
            QuantDecode.Blocks(t, b, blocks, f);
            QuantDecode.Blocks(t, b, blocks, w);
            for (int i = 0; i < reference.Length; i++)
            {
                Assert.True(BitConverter.SingleToInt32Bits(reference[i]) == BitConverter.SingleToInt32Bits(fast[i]), $"{t} element {i}: {fast[i]} vs reference {reference[i]}");
                Assert.True(BitConverter.DoubleToInt64Bits(reference[i]) == BitConverter.DoubleToInt64Bits(wide[i]), $"{t} element {i}: {wide[i]} vs reference {reference[i]}");
            }
            // segments starting and ending anywhere, as the packing asks for them
            for (int trial = 0; trial < 40; trial++)
            {
                int start = rng.Next(reference.Length), count = rng.Next(reference.Length - start + 1);
                var seg = new double[count + 1];
                seg[count] = 999;
                fixed (double* s = seg) QuantDecode.Segment(b, t, start, count, s);
                for (int i = 0; i < count; i++) Assert.Equal((double)reference[start + i], seg[i]);
                Assert.Equal(999, seg[count]);
            }
        }
    }

    [Theory, MemberData(nameof(Types))]
    public void Random_blocks_are_finite_deterministic_and_chunkable(DType t)
    {
        int rows = 6, cols = 512;
        long rowBytes = t.RowBytes(cols);
        var all = new byte[rows * rowBytes];
        QuantBlocks.Random(t, rows, cols, 42, all);
        var tail = new byte[2 * rowBytes];
        QuantBlocks.Random(t, 2, cols, 42, tail, firstRow: 4);
        Assert.Equal(all.AsSpan((int)(4 * rowBytes)).ToArray(), tail);
        var other = new byte[rows * rowBytes];
        QuantBlocks.Random(t, rows, cols, 43, other);
        Assert.NotEqual(all, other);

        fixed (byte* p = all)
        {
            var m = new MatrixView(p, t, rows, cols);
            var row = new double[cols];
            double maxAbs = 0, sum = 0;
            for (int r = 0; r < rows; r++)
            {
                m.DecodeRow(r, row);
                foreach (double v in row) { Assert.True(double.IsFinite(v)); maxAbs = Math.Max(maxAbs, Math.Abs(v)); sum += v; }
            }
            double bound = 3 / Math.Sqrt(cols);
            Assert.InRange(maxAbs, bound / 20, bound * 1.01);
            Assert.InRange(Math.Abs(sum / (rows * cols)), 0, bound / 4); // mins center the weights
        }
    }

    [Fact]
    public void Element_reads_decode_their_block()
    {
        var rng = new Random(5);
        foreach (var t in QuantTypes)
        {
            int rows = 3, cols = 2 * t.BlockElements(), stride = 3 * t.BlockElements();
            var bytes = RandomBlocks(rng, t, rows * stride / t.BlockElements());
            var dense = new float[rows * stride];
            fixed (byte* p = bytes)
            fixed (float* d = dense)
            {
                for (int k = 0; k < rows * stride / t.BlockElements(); k++)
                    QuantReference.DecodeBlock(t, p + k * t.BlockBytes(), d + k * t.BlockElements());
                var m = new MatrixView(p, t, rows, cols, stride);
                var row = new float[cols];
                for (int r = 0; r < rows; r++)
                {
                    m.DecodeRow(r, row);
                    for (int c = 0; c < cols; c++)
                    {
                        Assert.Equal((double)dense[r * stride + c], m[r, c]);
                        Assert.Equal(dense[r * stride + c], row[c]);
                        Assert.Equal((double)dense[r * stride + c], DTypes.Read(p, t, (long)r * stride + c));
                    }
                }
                // slices at block boundaries address the same elements; others are refused
                var s = m.SliceRows(1, 2).SliceCols(t.BlockElements(), t.BlockElements());
                Assert.Equal(m[2, t.BlockElements() + 3], s[1, 3]);
                Assert.Throws<ArgumentException>(() => m.SliceCols(1, t.BlockElements()));
                byte* q = p;
                Assert.Throws<ArgumentException>(() => Make(q, t, t.BlockElements() + 1));
            }
        }
    }

    static void Make(byte* p, DType t, int cols) => _ = new MatrixView(p, t, 1, cols);

    [Fact]
    public void Q8_0_and_Q4_0_quantizers_round_trip_within_half_a_step()
    {
        var rng = new Random(9);
        var x = new float[32 * 40];
        for (int i = 0; i < x.Length; i++) x[i] = (float)(rng.NextDouble() * 2 - 1) * (i / 32 + 1);
        foreach (var t in new[] { DType.Q8_0, DType.Q4_0 })
        {
            var q = new byte[t.RowBytes(x.Length)];
            if (t == DType.Q8_0) QuantBlocks.QuantizeQ8_0(x, q); else QuantBlocks.QuantizeQ4_0(x, q);
            var y = new float[x.Length];
            fixed (byte* p = q) fixed (float* py = y) QuantDecode.Blocks(t, p, x.Length / 32, py);
            for (int b = 0; b < x.Length / 32; b++)
            {
                float d = (float)BitConverter.UInt16BitsToHalf(BinaryPrimitives.ReadUInt16LittleEndian(q.AsSpan(b * t.BlockBytes())));
                for (int j = 0; j < 32; j++)
                {
                    int i = b * 32 + j;
                    // half a step, plus the f16 rounding of d (2⁻¹¹ relative) times the largest level, since q was computed
                    // with the unrounded d; Q4_0 clamps its top level (q = 16 → 15): there its error is up to one step
                    double tol = Math.Abs(d) * (t == DType.Q4_0 ? 1.0 + 8.0 / 2048 : 0.5 + 127.0 / 2048) * 1.001 + 1e-7;
                    Assert.True(Math.Abs(y[i] - x[i]) <= tol, $"{t} element {i}: {x[i]} → {y[i]} (d {d})");
                }
            }
        }
    }
}
