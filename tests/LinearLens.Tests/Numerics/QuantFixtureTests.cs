using System.Text;
using LinearLens.Numerics;
using LinearLens.Tests.Support;

namespace LinearLens.Tests.Numerics;

/// <summary>
/// The decoders on real llama.cpp output: the GGUF fixtures of ../shared (made by llama-quantize from F32 files).
/// Every quantized tensor is decoded and compared with the same tensor of the F32 file; Q8_0 and Q4_0 tensors must
/// be exactly what llama.cpp's reference quantizers make of the F32 values, byte for byte.
/// </summary>
public sealed unsafe class QuantFixtureTests
{
    const string Folder = "models/gguf-fixtures";

    /// <summary>A test-only GGUF reader: tensor names, ggml types, shapes and data offsets (enough to find the bytes).</summary>
    sealed class MiniGguf
    {
        public readonly byte[] Bytes;
        public readonly Dictionary<string, (int type, long[] dims, long offset)> Tensors = new();

        public MiniGguf(string path)
        {
            Bytes = File.ReadAllBytes(path);
            int pos = 0;
            uint U32() { uint v = BitConverter.ToUInt32(Bytes, pos); pos += 4; return v; }
            ulong U64() { ulong v = BitConverter.ToUInt64(Bytes, pos); pos += 8; return v; }
            string Str() { int n = (int)U64(); string s = Encoding.UTF8.GetString(Bytes, pos, n); pos += n; return s; }
            void Skip(uint type)
            {
                switch (type)
                {
                    case 0: case 1: case 7: pos += 1; break;
                    case 2: case 3: pos += 2; break;
                    case 4: case 5: case 6: pos += 4; break;
                    case 10: case 11: case 12: pos += 8; break;
                    case 8: Str(); break;
                    case 9: { uint et = U32(); ulong n = U64(); for (ulong i = 0; i < n; i++) Skip(et); break; }
                    default: throw new InvalidDataException($"GGUF value type {type}");
                }
            }
            Assert.Equal("GGUF", Encoding.ASCII.GetString(Bytes, 0, 4));
            pos = 4;
            Assert.Equal(3u, U32());
            ulong tensors = U64(), kvs = U64();
            long alignment = 32;
            for (ulong i = 0; i < kvs; i++)
            {
                string key = Str(); uint type = U32();
                if (key == "general.alignment") { alignment = U32(); continue; }
                Skip(type);
            }
            for (ulong i = 0; i < tensors; i++)
            {
                string name = Str();
                var dims = new long[U32()];
                for (int d = 0; d < dims.Length; d++) dims[d] = (long)U64();
                int type = (int)U32();
                Tensors[name] = (type, dims, (long)U64());
            }
            long data = (pos + alignment - 1) / alignment * alignment;
            foreach (var k in Tensors.Keys.ToList()) Tensors[k] = Tensors[k] with { offset = Tensors[k].offset + data };
        }
    }

    static DType? TypeOf(int ggml) => ggml switch
    {
        2 => DType.Q4_0, 3 => DType.Q4_1, 6 => DType.Q5_0, 7 => DType.Q5_1, 8 => DType.Q8_0, 10 => DType.Q2_K, 11 => DType.Q3_K,
        12 => DType.Q4_K, 13 => DType.Q5_K, 14 => DType.Q6_K, 20 => DType.IQ4_NL, 23 => DType.IQ4_XS, _ => null,
    };

    /// <summary>Largest RMS error relative to the tensor's RMS that a correct decoder leaves (a wrong layout gives ~1).</summary>
    static double Tolerance(DType t) => t switch
    {
        DType.Q8_0 => 0.01, DType.Q6_K => 0.03, DType.Q5_K or DType.Q5_0 or DType.Q5_1 => 0.06,
        DType.Q4_K or DType.Q4_0 or DType.Q4_1 or DType.IQ4_XS or DType.IQ4_NL => 0.12, _ => 0.3,
    };

    [SharedTheory("models", "gguf-fixtures", "README.md")]
    [InlineData("llama-q", "Q8_0")] [InlineData("qwen3-q", "Q8_0")]
    [InlineData("llama-q", "Q4_0")] [InlineData("qwen3-q", "Q4_0")]
    [InlineData("llama-q", "Q4_K_M")] [InlineData("qwen3-q", "Q4_K_M")]
    [InlineData("llama-q", "Q5_K_M")] [InlineData("qwen3-q", "Q5_K_M")]
    [InlineData("llama-q", "Q6_K")] [InlineData("qwen3-q", "Q6_K")]
    [InlineData("llama-q", "Q3_K_M")] [InlineData("qwen3-q", "Q3_K_M")]
    [InlineData("llama-q", "IQ4_XS")] [InlineData("qwen3-q", "IQ4_XS")]
    public void Quantized_fixture_tensors_decode_to_their_F32_source(string model, string quant)
    {
        var q = new MiniGguf(SharedData.Path_("models", "gguf-fixtures", $"{model}-{quant}.gguf"));
        var f = new MiniGguf(SharedData.Path_("models", "gguf-fixtures", $"{model}-F32.gguf"));
        int quantized = 0, requantized = 0;
        var seen = new HashSet<DType>();
        foreach (var (name, (ggml, dims, offset)) in q.Tensors)
        {
            if (TypeOf(ggml) is not { } t) continue;
            quantized++; seen.Add(t);
            var src = f.Tensors[name];
            Assert.Equal(0, src.type);
            Assert.Equal(src.dims, dims);
            int cols = (int)dims[0], rows = (int)(dims.Length > 1 ? dims[1] : 1);
            var exact = new float[cols];
            fixed (byte* qb = q.Bytes, fb = f.Bytes)
            {
                var view = new MatrixView(qb + offset, t, rows, cols);
                Assert.Equal(q.Bytes.Length, Math.Max(q.Bytes.Length, offset + rows * view.RowBytes));
                double err = 0, norm = 0;
                var row = new double[cols];
                var reference = new float[t.BlockElements()];
                for (int r = 0; r < rows; r++)
                {
                    view.DecodeRow(r, row);
                    fixed (float* rf = reference)
                        for (int b = 0; b < cols / t.BlockElements(); b++)
                        {
                            QuantReference.DecodeBlock(t, view.Row(r) + b * t.BlockBytes(), rf);
                            for (int j = 0; j < reference.Length; j++)
                                if (reference[j] != row[b * reference.Length + j]) Assert.Fail($"{name} ({t}) row {r}: fast and reference decoders differ");
                        }
                    float* x = (float*)(fb + src.offset) + (long)r * cols;
                    for (int c = 0; c < cols; c++) { double e = row[c] - x[c]; err += e * e; norm += (double)x[c] * x[c]; }
                }
                double rel = Math.Sqrt(err / norm);
                Assert.True(rel <= Tolerance(t), $"{model}-{quant} {name} ({t}): relative RMS error {rel:G3} against the F32 source (≤ {Tolerance(t)} expected)");

                if (t is DType.Q8_0 or DType.Q4_0)
                {
                    var mine = new byte[view.RowBytes * rows];
                    var all = new ReadOnlySpan<float>(fb + src.offset, rows * cols);
                    if (t == DType.Q8_0) QuantBlocks.QuantizeQ8_0(all, mine); else QuantBlocks.QuantizeQ4_0(all, mine);
                    Assert.True(mine.AsSpan().SequenceEqual(new ReadOnlySpan<byte>(qb + offset, mine.Length)),
                        $"{model}-{quant} {name}: llama-quantize's {t} bytes differ from the reference quantizer's");
                    requantized++;
                }
            }
        }
        Assert.True(quantized >= 10, $"{model}-{quant}: only {quantized} quantized tensors found");
        if (quant is "Q8_0" or "Q4_0") Assert.True(requantized >= 10);
        if (quant == "Q4_K_M") Assert.Equal(new HashSet<DType> { DType.Q4_K, DType.Q6_K }, seen);
    }
}
