using System.Buffers.Binary;

namespace LinearLens.Numerics;

/// <summary>
/// Making quantized blocks without a quantizer: random valid blocks (for random checkpoints and benchmarks) and
/// llama.cpp's round-to-nearest reference quantizers of Q8_0 and Q4_0 (for tests).
/// </summary>
public static class QuantBlocks
{
    /// <summary>
    /// Fills <paramref name="dest"/> (rows · t.RowBytes(cols) bytes) with random valid blocks: random quant bits and
    /// finite f16 scales sized so that the decoded weights are at most about <paramref name="maxAbs"/> (default
    /// 3/√cols, like N(0, 1/cols) weights) in magnitude. Deterministic in (seed, row): row r of a call with
    /// <paramref name="firstRow"/> = r0 equals row r0 + r of any other call with the same seed, so a large tensor can
    /// be written in row chunks.
    /// </summary>
    public static void Random(DType t, long rows, long cols, ulong seed, Span<byte> dest, long firstRow = 0, double maxAbs = 0)
    {
        if (!t.IsQuantized()) throw new ArgumentException($"{t.Name()} is not a block-quantized type", nameof(t));
        long rowBytes = t.RowBytes(cols);
        if (dest.Length != rows * rowBytes) throw new ArgumentException($"{dest.Length} bytes for {rows} rows of {rowBytes} bytes", nameof(dest));
        if (maxAbs <= 0) maxAbs = 3 / Math.Sqrt(cols);
        int bb = t.BlockBytes();
        // the largest |weight| a block can decode to, per unit of d (quant magnitude × sub-block scale magnitude)
        double reach = t switch
        {
            DType.Q4_0 => 8, DType.Q4_1 => 15, DType.Q5_0 => 16, DType.Q5_1 => 31, DType.Q8_0 => 127,
            DType.Q2_K => 45, DType.Q3_K => 128, DType.Q4_K => 945, DType.Q5_K => 1953, DType.Q6_K => 4096,
            DType.IQ4_NL => 127, _ => 32 * 127,
        };
        for (long r = 0; r < rows; r++)
        {
            ulong state = Mix(seed ^ Mix((ulong)(firstRow + r) + 0x9E3779B97F4A7C15UL));
            var row = dest.Slice((int)(r * rowBytes), (int)rowBytes);
            for (int i = 0; i + 8 <= row.Length; i += 8) BinaryPrimitives.WriteUInt64LittleEndian(row.Slice(i), Next(ref state));
            for (int i = row.Length & ~7; i < row.Length; i++) row[i] = (byte)Next(ref state);
            for (int b = 0; b < row.Length; b += bb)
            {
                var block = row.Slice(b, bb);
                // d in [½, 1]·maxAbs/reach; a min (where the type has one) centers the block's weights on zero on average
                double d = maxAbs / reach * (0.5 + 0.5 * Unit(ref state));
                switch (t)
                {
                    case DType.Q4_1: case DType.Q5_1:
                        Put(block, 0, d); Put(block, 2, -d * reach / 2); break;
                    case DType.Q2_K:
                        Put(block, 80, d); Put(block, 82, d * 3 / 2); break;
                    case DType.Q3_K:
                        Put(block, 108, d); break;
                    case DType.Q4_K: case DType.Q5_K:
                        Put(block, 0, d); Put(block, 2, d * (t == DType.Q4_K ? 15 : 31) / 2); break;
                    case DType.Q6_K:
                        Put(block, 208, d); break;
                    default:
                        Put(block, 0, d); break;
                }
            }
        }
    }

    static void Put(Span<byte> block, int at, double v)
        => BinaryPrimitives.WriteUInt16LittleEndian(block.Slice(at), BitConverter.HalfToUInt16Bits((Half)v));

    static ulong Mix(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    static ulong Next(ref ulong state) => Mix(state += 0x9E3779B97F4A7C15UL);

    static double Unit(ref ulong state) => (Next(ref state) >> 11) * (1.0 / (1UL << 53));

    /// <summary>
    /// llama.cpp's quantize_row_q8_0_ref: per block of 32, d = max|x|/127 (stored as f16), q = round(x/d) half away from
    /// zero, with x multiplied by the float32 reciprocal 1/d as llama.cpp does.
    /// </summary>
    public static void QuantizeQ8_0(ReadOnlySpan<float> x, Span<byte> dest)
    {
        if (x.Length % 32 != 0 || dest.Length != x.Length / 32 * 34) throw new ArgumentException("Q8_0 needs whole 32-element blocks");
        for (int b = 0; b < x.Length / 32; b++)
        {
            var v = x.Slice(b * 32, 32);
            var o = dest.Slice(b * 34, 34);
            float amax = 0;
            foreach (float f in v) amax = MathF.Max(amax, MathF.Abs(f));
            float d = amax / 127f, id = d != 0 ? 1f / d : 0f;
            BinaryPrimitives.WriteUInt16LittleEndian(o, BitConverter.HalfToUInt16Bits((Half)d));
            for (int j = 0; j < 32; j++) o[2 + j] = (byte)(sbyte)MathF.Round(v[j] * id, MidpointRounding.AwayFromZero);
        }
    }

    /// <summary>
    /// llama.cpp's quantize_row_q4_0_ref: per block of 32, d = −(the signed value of largest magnitude)/8, q =
    /// min(15, trunc(x/d + 8.5)), low nibbles the first 16 weights, high nibbles the last 16.
    /// </summary>
    public static void QuantizeQ4_0(ReadOnlySpan<float> x, Span<byte> dest)
    {
        if (x.Length % 32 != 0 || dest.Length != x.Length / 32 * 18) throw new ArgumentException("Q4_0 needs whole 32-element blocks");
        for (int b = 0; b < x.Length / 32; b++)
        {
            var v = x.Slice(b * 32, 32);
            var o = dest.Slice(b * 18, 18);
            float amax = 0, max = 0;
            foreach (float f in v) if (amax < MathF.Abs(f)) { amax = MathF.Abs(f); max = f; }
            float d = max / -8f, id = d != 0 ? 1f / d : 0f;
            BinaryPrimitives.WriteUInt16LittleEndian(o, BitConverter.HalfToUInt16Bits((Half)d));
            for (int j = 0; j < 16; j++)
            {
                int q0 = Math.Min(15, (int)(v[j] * id + 8.5f)), q1 = Math.Min(15, (int)(v[j + 16] * id + 8.5f));
                o[2 + j] = (byte)(q0 | (q1 << 4));
            }
        }
    }
}
