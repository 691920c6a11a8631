using System.Text.Json;
using LinearLens.Loading;
using LinearLens.Models;
using LinearLens.Numerics;
using LinearLens.Tests.Support;

namespace LinearLens.Tests.Models;

/// <summary>
/// Sanity checks of the test scaffolding itself (SafetensorsWriter, RandomCheckpoint, SpecDecoder) that do not
/// involve the engine: files parse back, stored values are what the dictionary says, the reference decoder is causal,
/// windows limit attention, RoPE frequencies match architectures.md §5.
/// </summary>
public class SpecDecoderSelfTests
{
    sealed record Entry(string Name, string DType, long[] Shape, long Begin, long End);

    /// <summary>Independent parse of a safetensors header (does not use the engine's reader).</summary>
    static (long HeaderLen, JsonElement Metadata, List<Entry> Entries, long FileLen) ReadHeader(string path)
    {
        var bytes = File.ReadAllBytes(path);
        long hlen = BitConverter.ToInt64(bytes, 0);
        using var doc = JsonDocument.Parse(bytes.AsMemory(8, (int)hlen));
        JsonElement meta = default;
        var list = new List<Entry>();
        foreach (var p in doc.RootElement.EnumerateObject())
        {
            if (p.Name == "__metadata__") { meta = p.Value.Clone(); continue; }
            var off = p.Value.GetProperty("data_offsets").EnumerateArray().Select(x => x.GetInt64()).ToArray();
            list.Add(new Entry(p.Name, p.Value.GetProperty("dtype").GetString()!,
                p.Value.GetProperty("shape").EnumerateArray().Select(x => x.GetInt64()).ToArray(), off[0], off[1]));
        }
        return (hlen, meta, list, bytes.LongLength);
    }

    static double[] ReadValues(string path, Entry e)
    {
        var bytes = File.ReadAllBytes(path);
        long hlen = BitConverter.ToInt64(bytes, 0);
        long start = 8 + hlen + e.Begin;
        int size = e.DType switch { "F64" => 8, "F32" => 4, _ => 2 };
        var v = new double[(e.End - e.Begin) / size];
        for (int i = 0; i < v.Length; i++)
        {
            long o = start + (long)i * size;
            v[i] = e.DType switch
            {
                "F64" => BitConverter.ToDouble(bytes, (int)o),
                "F32" => BitConverter.ToSingle(bytes, (int)o),
                "BF16" => BitConverter.Int32BitsToSingle(BitConverter.ToUInt16(bytes, (int)o) << 16),
                _ => (double)BitConverter.UInt16BitsToHalf(BitConverter.ToUInt16(bytes, (int)o)),
            };
        }
        return v;
    }

    static void AssertWellFormed(string path)
    {
        var (hlen, meta, entries, fileLen) = ReadHeader(path);
        Assert.Equal(0, hlen % 8);
        Assert.Equal("pt", meta.GetProperty("format").GetString());
        // Contiguous data in header order, covering the data region exactly.
        long expect = 0;
        foreach (var e in entries.OrderBy(e => e.Begin))
        {
            Assert.Equal(expect, e.Begin);
            int size = e.DType switch { "F64" => 8, "F32" => 4, _ => 2 };
            Assert.Equal(e.Shape.Aggregate(1L, (a, b) => a * b) * size, e.End - e.Begin);
            expect = e.End;
        }
        Assert.Equal(8 + hlen + expect, fileLen);
        // Safetensors order: dtype widest first, then name.
        int Rank(string t) => t switch { "F64" => 0, "F32" => 1, "BF16" => 2, _ => 3 };
        var ordered = entries.OrderBy(e => e.Begin).ToList();
        var sorted = entries.OrderBy(e => Rank(e.DType)).ThenBy(e => e.Name, StringComparer.Ordinal).ToList();
        Assert.Equal(sorted.Select(e => e.Name), ordered.Select(e => e.Name));
    }

    [Fact]
    public void Writer_lays_out_mixed_dtypes_and_pads_header()
    {
        using var tmp = new ScratchFolder("writer");
        string path = Path.Combine(tmp.Path, "x.safetensors");
        double[] a = [1.5, -2.25, 3], b = [0.1, 0.2], c = [7, 8, 9, 10], e = [1e-3];
        SafetensorsWriter.Write(path,
        [
            ("zeta", DType.F32, [3], SafetensorsWriter.Encode(a, DType.F32)),
            ("alpha", DType.BF16, [2], SafetensorsWriter.Encode(b, DType.BF16)),
            ("mid", DType.F64, [2, 2], SafetensorsWriter.Encode(c, DType.F64)),
            ("beta", DType.F16, [1], SafetensorsWriter.Encode(e, DType.F16)),
        ]);
        AssertWellFormed(path);
        var (_, _, entries, _) = ReadHeader(path);
        Assert.Equal(new[] { "mid", "zeta", "alpha", "beta" }, entries.OrderBy(x => x.Begin).Select(x => x.Name));
        var byName = entries.ToDictionary(x => x.Name);
        Assert.Equal(new long[] { 2, 2 }, byName["mid"].Shape);
        Assert.Equal(c, ReadValues(path, byName["mid"]));
        Assert.Equal(a, ReadValues(path, byName["zeta"]));
        Assert.Equal(new double[] { DTypes.Bf16ToFloat(DTypes.FloatToBf16(0.1f)), DTypes.Bf16ToFloat(DTypes.FloatToBf16(0.2f)) }, ReadValues(path, byName["alpha"]));
        Assert.Equal((double)(Half)1e-3, ReadValues(path, byName["beta"])[0]);

        // The engine's own reader agrees.
        using var f = SafetensorsFile.Open(path);
        Assert.Equal(4, f.Tensors.Count);
        Assert.Equal(3.0, f.Tensors["zeta"][2]);

        Assert.Throws<ArgumentException>(() => SafetensorsWriter.Write(path, [("bad", DType.F32, [3], new byte[8])]));
    }

    [Theory]
    [InlineData("tiny-llama")]
    [InlineData("tiny-qwen3")]
    [InlineData("tiny-gemma3")]
    [InlineData("tiny-gemma3-multimodal")]
    public void Checkpoint_parses_back_with_stored_values(string preset)
    {
        using var tmp = new ScratchFolder("ckpt");
        var spec = RandomCheckpointSpec.Preset(preset);
        var w = RandomCheckpoint.Write(tmp.Path, spec, seed: 11);
        string file = Path.Combine(tmp.Path, "model.safetensors");
        AssertWellFormed(file);
        var (_, _, entries, _) = ReadHeader(file);
        var canon = spec.CanonicalTensors();
        Assert.Equal(canon.Count, entries.Count);
        Assert.Equal(canon.Count, w.Tensors.Count);
        foreach (var (name, shape) in canon)
        {
            var e = entries.Single(x => x.Name == spec.StoredName(name));
            Assert.Equal("F32", e.DType);
            Assert.Equal(shape, e.Shape);
            Assert.Equal(shape, w.Get(name).Shape);
            Assert.Equal(w.Values(name), ReadValues(file, e));
        }
        Assert.Equal(!spec.Tie, entries.Any(x => x.Name.EndsWith("lm_head.weight")));
        if (spec.IsMultimodal) Assert.All(entries, x => Assert.StartsWith("language_model.", x.Name));
        else Assert.All(entries, x => Assert.True(x.Name.StartsWith("model.") || x.Name == "lm_head.weight", x.Name));

        // Config: family keys present where the engine expects them.
        using var cfg = JsonDocument.Parse(File.ReadAllText(Path.Combine(tmp.Path, "config.json")));
        var text = spec.IsMultimodal ? cfg.RootElement.GetProperty("text_config") : cfg.RootElement;
        Assert.Equal(spec.IsMultimodal ? "gemma3" : spec.ModelType, cfg.RootElement.GetProperty("model_type").GetString());
        Assert.Equal(spec.Hidden, text.GetProperty("hidden_size").GetInt32());
        Assert.Equal(spec.HeadDim, text.GetProperty("head_dim").GetInt32());
        Assert.Equal(spec.RopeTheta, text.GetProperty("rope_theta").GetDouble());
        if (spec.IsGemma) Assert.Equal(spec.QueryPreAttnScalar, text.GetProperty("query_pre_attn_scalar").GetDouble());
    }

    [Fact]
    public void Init_statistics_make_gains_matter()
    {
        using var tmp = new ScratchFolder("init");
        var l = RandomCheckpoint.Write(tmp.Sub("l"), RandomCheckpointSpec.Preset("tiny-llama"), 1);
        var g = RandomCheckpoint.Write(tmp.Sub("g"), RandomCheckpointSpec.Preset("tiny-gemma3"), 1);
        var ln = l.Values("model.layers.0.input_layernorm.weight");
        var gn = g.Values("model.layers.0.input_layernorm.weight");
        Assert.InRange(ln.Average(), 0.9, 1.1);
        Assert.InRange(gn.Average(), -0.1, 0.1);
        Assert.True(ln.Max() - ln.Min() > 0.2 && gn.Max() - gn.Min() > 0.2, "gains should vary");
        var q = l.Values("model.layers.0.self_attn.q_proj.weight");
        double std = Math.Sqrt(q.Select(x => x * x).Average());
        Assert.InRange(std * Math.Sqrt(64), 0.85, 1.15);
        var e = l.Values("model.embed_tokens.weight");
        Assert.InRange(Math.Sqrt(e.Select(x => x * x).Average()), 0.85, 1.15);
    }

    [Fact]
    public void Same_seed_same_bytes_different_seed_different_and_wrapper_shares_values()
    {
        using var tmp = new ScratchFolder("seed");
        var spec = RandomCheckpointSpec.Preset("tiny-gemma3");
        RandomCheckpoint.Write(tmp.Sub("a"), spec, 5);
        RandomCheckpoint.Write(tmp.Sub("b"), spec, 5);
        RandomCheckpoint.Write(tmp.Sub("c"), spec, 6);
        byte[] A = File.ReadAllBytes(Path.Combine(tmp.Path, "a", "model.safetensors"));
        Assert.Equal(A, File.ReadAllBytes(Path.Combine(tmp.Path, "b", "model.safetensors")));
        Assert.NotEqual(A, File.ReadAllBytes(Path.Combine(tmp.Path, "c", "model.safetensors")));

        var text = RandomCheckpoint.Write(tmp.Sub("t"), spec, 9);
        var mm = RandomCheckpoint.Write(tmp.Sub("m"), spec with { ModelType = "gemma3" }, 9);
        foreach (var (name, _) in spec.CanonicalTensors())
            Assert.Equal(text.Values(name), mm.Values(name));
    }

    [Theory]
    [InlineData(DType.BF16)]
    [InlineData(DType.F16)]
    [InlineData(DType.F64)]
    public void Stored_values_are_rounded_to_the_stored_dtype(DType dtype)
    {
        using var tmp = new ScratchFolder("round");
        var spec = RandomCheckpointSpec.Preset("tiny-qwen3");
        var f64 = RandomCheckpoint.Write(tmp.Sub("ref"), spec with { DType = DType.F64 }, 3);
        var w = RandomCheckpoint.Write(tmp.Sub("x"), spec with { DType = dtype }, 3);
        string file = Path.Combine(tmp.Path, "x", "model.safetensors");
        var (_, _, entries, _) = ReadHeader(file);
        Assert.All(entries, e => Assert.Equal(dtype.Name(), e.DType));
        int changed = 0, total = 0;
        foreach (var (name, _) in spec.CanonicalTensors())
        {
            double[] exact = f64.Values(name), stored = w.Values(name);
            Assert.Equal(stored, ReadValues(file, entries.Single(e => e.Name == name)));
            for (int i = 0; i < stored.Length; i++)
            {
                total++;
                double v = stored[i];
                switch (dtype)
                {
                    case DType.BF16:
                        Assert.Equal(0, BitConverter.SingleToInt32Bits((float)v) & 0xFFFF);
                        Assert.True(Math.Abs(v - exact[i]) <= Math.Abs(exact[i]) * Math.Pow(2, -8) * 1.0001);
                        break;
                    case DType.F16:
                        Assert.Equal(v, (double)(Half)v);
                        Assert.True(Math.Abs(v - exact[i]) <= Math.Max(Math.Abs(exact[i]) * Math.Pow(2, -11), Math.Pow(2, -25)) * 1.0001);
                        break;
                    default:
                        Assert.Equal(exact[i], v);
                        break;
                }
                if (v != exact[i]) changed++;
            }
        }
        if (dtype != DType.F64) Assert.True(changed > total / 2, $"only {changed}/{total} values were rounded");
    }

    [Fact]
    public void Sharded_checkpoint_index_is_consistent()
    {
        using var tmp = new ScratchFolder("shard");
        var spec = RandomCheckpointSpec.Preset("tiny-llama") with { Shards = 3, DType = DType.BF16 };
        var w = RandomCheckpoint.Write(tmp.Path, spec, 2);
        Assert.False(File.Exists(Path.Combine(tmp.Path, "model.safetensors")));
        using var idx = JsonDocument.Parse(File.ReadAllText(Path.Combine(tmp.Path, "model.safetensors.index.json")));
        long total = idx.RootElement.GetProperty("metadata").GetProperty("total_size").GetInt64();
        var map = idx.RootElement.GetProperty("weight_map").EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetString()!);
        Assert.Equal(spec.CanonicalTensors().Select(t => t.Name).OrderBy(x => x, StringComparer.Ordinal), map.Keys.OrderBy(x => x, StringComparer.Ordinal));
        var files = Enumerable.Range(1, 3).Select(i => $"model-{i:D5}-of-00003.safetensors").ToArray();
        Assert.Equal(files.OrderBy(x => x), map.Values.Distinct().OrderBy(x => x));
        long sum = 0;
        foreach (var f in files)
        {
            string path = Path.Combine(tmp.Path, f);
            AssertWellFormed(path);
            var (_, _, entries, _) = ReadHeader(path);
            Assert.NotEmpty(entries);
            foreach (var e in entries)
            {
                Assert.Equal(f, map[e.Name]);
                Assert.Equal(w.Values(e.Name), ReadValues(path, e));
                sum += e.End - e.Begin;
            }
        }
        Assert.Equal(sum, total);
        Assert.Equal(spec.CanonicalTensors().Sum(t => t.Shape.Aggregate(1L, (a, b) => a * b)) * 2, total);
    }

    [Fact]
    public void Large_preset_streams_without_keeping_values()
    {
        // Not written (1.2 GB); the shape alone is checked against architectures.md §2.4.
        var s = RandomCheckpointSpec.Preset("qwen3-0.6b");
        long parameters = s.CanonicalTensors().Sum(t => t.Shape.Aggregate(1L, (a, b) => a * b));
        Assert.InRange(parameters, 590_000_000L, 600_000_000L);   // 596,049,920 with the tied head
        Assert.Equal(2048, s.Heads * s.HeadDim);
        Assert.DoesNotContain(s.CanonicalTensors(), t => t.Name == "lm_head.weight");

        using var tmp = new ScratchFolder("stream");
        var small = s with { Layers = 1, Vocab = 1000 };
        var w = RandomCheckpoint.Write(tmp.Path, small, 1, keepValues: false);
        Assert.All(w.Tensors.Values, t => Assert.Null(t.Values));
        AssertWellFormed(Path.Combine(tmp.Path, "model.safetensors"));
    }

    // ------------------------------------------------------------------ reference decoder

    static int[] Tokens(int n, int seed) { var r = new Random(seed); return Enumerable.Range(0, n).Select(_ => r.Next(101)).ToArray(); }

    static bool RowEqual(double[] a, double[] b, int row, int width) =>
        a.AsSpan(row * width, width).SequenceEqual(b.AsSpan(row * width, width));

    [Theory]
    [InlineData("tiny-llama")]
    [InlineData("tiny-qwen3")]
    [InlineData("tiny-gemma3")]
    public void Spec_decoder_is_causal(string preset)
    {
        using var tmp = new ScratchFolder("causal");
        var w = RandomCheckpoint.Write(tmp.Path, RandomCheckpointSpec.Preset(preset), 4);
        int[] ids = Tokens(8, 1);
        int[] alt = (int[])ids.Clone();
        alt[5] = (alt[5] + 17) % 101;
        var a = SpecDecoder.Run(w, ids);
        var b = SpecDecoder.Run(w, alt);
        for (int t = 0; t < 8; t++)
        {
            bool same = t < 5;
            Assert.Equal(same, RowEqual(a.Final, b.Final, t, a.Hidden));
            Assert.Equal(same, RowEqual(a.Logits, b.Logits, t, a.Vocab));
            foreach (var (la, lb) in a.LayerOutputs.Zip(b.LayerOutputs)) Assert.Equal(same, RowEqual(la, lb, t, a.Hidden));
        }
        // Attention rows are distributions over visible keys.
        foreach (var layer in a.Attention)
            foreach (var head in layer)
                for (int s = 0; s < 8; s++)
                {
                    Assert.Equal(1.0, head[s].Sum(), 1e-12);
                    for (int t = s + 1; t < 8; t++) Assert.Equal(0.0, head[s][t]);
                }
    }

    /// <summary>
    /// With every layer sliding (W = 3), the output at s depends on token j exactly when 0 ≤ s−j ≤ L·(W−1):
    /// for one layer only keys at distance ≤ 2 are seen (distance W = 3 is excluded); for three layers the receptive
    /// field grows to 6. The same model with full attention depends on every earlier token (control).
    /// </summary>
    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    public void Sliding_window_limits_the_receptive_field(int layers)
    {
        using var tmp = new ScratchFolder("window");
        var baseSpec = RandomCheckpointSpec.Preset("tiny-gemma3") with { Layers = layers, LayerTypes = Enumerable.Repeat("sliding_attention", layers).ToArray() };
        var w = RandomCheckpoint.Write(tmp.Sub("s"), baseSpec, 8);
        var full = RandomCheckpoint.Write(tmp.Sub("f"), baseSpec with { LayerTypes = Enumerable.Repeat("full_attention", layers).ToArray() }, 8);
        const int n = 10;
        int reach = layers * (3 - 1);
        int[] ids = Tokens(n, 2);
        var a = SpecDecoder.Run(w, ids);
        var af = SpecDecoder.Run(full, ids);
        for (int j = 0; j < n; j++)
        {
            int[] alt = (int[])ids.Clone();
            alt[j] = (alt[j] + 31) % 101;
            var b = SpecDecoder.Run(w, alt);
            var bf = SpecDecoder.Run(full, alt);
            for (int s = 0; s < n; s++)
            {
                bool depends = s - j >= 0 && s - j <= reach;
                Assert.True(depends != RowEqual(a.Final, b.Final, s, a.Hidden), $"L={layers} s={s} j={j}: expected depends={depends}");
                Assert.True((s >= j) != RowEqual(af.Final, bf.Final, s, a.Hidden), $"full control s={s} j={j}");
            }
        }
        // Exactly min(W, s+1) keys get weight in the sliding layer.
        foreach (var head in a.Attention[0])
            for (int s = 0; s < n; s++)
                Assert.Equal(Math.Min(3, s + 1), head[s].Count(p => p > 0));
    }

    [Fact]
    public void Tiny_gemma3_mixes_window_and_full_layers()
    {
        using var tmp = new ScratchFolder("mix");
        var spec = RandomCheckpointSpec.Preset("tiny-gemma3");
        Assert.Equal(new int?[] { null, 3, null }, Enumerable.Range(0, 3).Select(spec.WindowOf));
        var w = RandomCheckpoint.Write(tmp.Path, spec, 1);
        var o = SpecDecoder.Run(w, Tokens(8, 3));
        foreach (var head in o.Attention[1]) Assert.Equal(0.0, head[7][4]);   // distance 3 = W: masked
        foreach (var head in o.Attention[1]) Assert.True(head[7][5] > 0);
        foreach (var head in o.Attention[0]) Assert.True(head[7][0] > 0);
        // Gemma embedding scale √d = 8 on the raw (unscaled, tied) embedding.
        var e = w.Values("model.embed_tokens.weight");
        int id0 = Tokens(8, 3)[0];
        for (int k = 0; k < 64; k++) Assert.Equal(e[id0 * 64 + k] * 8.0, o.Embeddings[k]);
    }

    static void Rel(double expected, double actual, double tol = 1e-6) =>
        Assert.True(Math.Abs(actual - expected) <= tol * Math.Abs(expected), $"expected {expected:R}, got {actual:R}");

    [Fact]
    public void Inverse_frequencies_match_reference_values()
    {
        var w = SpecDecoder.InverseFrequencies(500000, 128, null);
        Assert.Equal(64, w.Length);
        Assert.Equal(1.0, w[0]);
        Rel(8.146172166e-1, w[1]); Rel(6.636012793e-1, w[2]); Rel(2.455140702e-6, w[63]);
        Rel(8.058422208e-1, SpecDecoder.InverseFrequencies(1e6, 128, null)[1]);
        Rel(1.240937763e-6, SpecDecoder.InverseFrequencies(1e6, 128, null)[63]);
        Rel(6.493816376e-1, SpecDecoder.InverseFrequencies(1e6, 64, null)[1]);
        Rel(1.433012676e-5, SpecDecoder.InverseFrequencies(100000, 64, null)[31]);
        Rel(8.254041672e-1, SpecDecoder.InverseFrequencies(10000, 96, null)[1]);
        Rel(1.211527488e-4, SpecDecoder.InverseFrequencies(10000, 96, null)[47]);
        var local = SpecDecoder.InverseFrequencies(10000, 256, null);
        Rel(9.305720329e-1, local[1]); Rel(8.659643531e-1, local[2]); Rel(1.074607790e-4, local[127]);
        var global = SpecDecoder.InverseFrequencies(1e6, 256, new RopeScalingSpec("linear", 8));
        Assert.Equal(0.125, global[0]); Rel(1.122108921e-1, global[1]); Rel(1.392467368e-7, global[127]);

        var l31 = SpecDecoder.InverseFrequencies(500000, 128, new RopeScalingSpec("llama3", 8, 1, 4, 8192));
        Assert.Equal(w[28], l31[28]);                                          // high frequency: unchanged
        Rel(2.166570630e-3, l31[29]); Rel(1.371893683e-3, l31[30]); Rel(1.785078202e-4, l31[34]);
        Rel(9.556212171e-5, l31[35]); Rel(3.068925878e-7, l31[63]);
        var l32 = SpecDecoder.InverseFrequencies(500000, 128, new RopeScalingSpec("llama3", 32, 1, 4, 8192));
        Rel(2.118406817e-3, l32[29]); Rel(1.290548011e-3, l32[30]); Rel(9.708288417e-5, l32[34]);
        Rel(2.389053043e-5, l32[35]); Rel(7.672314695e-8, l32[63]);
        var l1b = SpecDecoder.InverseFrequencies(500000, 64, new RopeScalingSpec("llama3", 32, 1, 4, 8192));
        Rel(1.290548011e-3, l1b[15]); Rel(9.418306490e-8, l1b[31]);
        var s = new RopeScalingSpec("llama3", 8, 1, 4, 8192);
        Assert.Equal(Enumerable.Range(29, 6), Enumerable.Range(0, 64).Where(i => SpecDecoder.IsLlama3Medium(500000, 128, s, i)));
    }

    [Fact]
    public void Tiny_llama_preset_exercises_the_llama3_blend()
    {
        var spec = RandomCheckpointSpec.Preset("tiny-llama");
        var scaled = SpecDecoder.InverseFrequencies(spec.RopeTheta, spec.HeadDim, spec.RopeScaling);
        var plain = SpecDecoder.InverseFrequencies(spec.RopeTheta, spec.HeadDim, null);
        int high = 0, low = 0, medium = 0;
        for (int i = 0; i < scaled.Length; i++)
        {
            if (scaled[i] == plain[i]) high++;
            else if (scaled[i] == plain[i] / spec.RopeScaling!.Factor) low++;
            else { medium++; Assert.True(SpecDecoder.IsLlama3Medium(spec.RopeTheta, spec.HeadDim, spec.RopeScaling, i)); }
        }
        Assert.True(high >= 2 && medium >= 2 && low >= 2, $"high {high}, medium {medium}, low {low}");
    }
}
