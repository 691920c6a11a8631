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
    [InlineData("tiny-phi3")]
    [InlineData("tiny-phi4-mini")]
    [InlineData("tiny-phi3-plain")]
    [InlineData("tiny-olmo2")]
    [InlineData("tiny-mistral")]
    [InlineData("tiny-ministral")]
    [InlineData("tiny-qwen2")]
    [InlineData("tiny-llama-bias")]
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
        if (text.TryGetProperty("head_dim", out var hd)) Assert.Equal(spec.HeadDim, hd.GetInt32());
        else Assert.Equal(spec.Hidden, spec.Heads * spec.HeadDim);   // phi3, olmo2, qwen2: HF derives D = d/H
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
    [InlineData("tiny-phi3")]
    [InlineData("tiny-phi4-mini")]
    [InlineData("tiny-phi3-plain")]
    [InlineData("tiny-olmo2")]
    [InlineData("tiny-mistral")]
    [InlineData("tiny-ministral")]
    [InlineData("tiny-qwen2")]
    [InlineData("tiny-llama-bias")]
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

    // ------------------------------------------------------------------ new families (docs/hf-family-notes.md)

    static Func<string, double[]> Override(RandomWeights w, string name, Func<double[], double[]> change) =>
        key => key == name ? change((double[])w.Values(key).Clone()) : w.Values(key);

    static void AssertSameOutput(SpecOutput a, SpecOutput b)
    {
        Assert.Equal(a.Logits, b.Logits);
        Assert.Equal(a.Final, b.Final);
        for (int l = 0; l < a.LayerOutputs.Length; l++) Assert.Equal(a.LayerOutputs[l], b.LayerOutputs[l]);
    }

    /// <summary>The spec variants whose config.json is read back; keyed so that a failing case names itself.</summary>
    static RandomCheckpointSpec Variant(string key) => key switch
    {
        "mistral-layer-types-ignored" => RandomCheckpointSpec.Preset("tiny-mistral") with { LayerTypes = ["full_attention", "sliding_attention"] },
        "mistral-no-window" => RandomCheckpointSpec.Preset("tiny-mistral") with { SlidingWindow = null },
        "ministral-default-types" => RandomCheckpointSpec.Preset("tiny-ministral") with { LayerTypes = null },
        "ministral-no-window" => RandomCheckpointSpec.Preset("tiny-ministral") with { LayerTypes = null, SlidingWindow = null },
        "qwen2-window-off" => RandomCheckpointSpec.Preset("tiny-qwen2") with { UseSlidingWindow = false },
        "qwen2-explicit-types" => RandomCheckpointSpec.Preset("tiny-qwen2") with { LayerTypes = ["sliding_attention", "full_attention"] },
        "phi3-v5" => RandomCheckpointSpec.Preset("tiny-phi3") with { UseRopeParametersV5 = true },
        "phi4-mini-v5" => RandomCheckpointSpec.Preset("tiny-phi4-mini") with { UseRopeParametersV5 = true },
        "olmo2-v5" => RandomCheckpointSpec.Preset("tiny-olmo2") with { UseRopeParametersV5 = true },
        "olmo2-bias" => RandomCheckpointSpec.Preset("tiny-olmo2") with { AttentionBias = true },
        _ => RandomCheckpointSpec.Preset(key),
    };

    static int? Int(JsonElement o, string key) =>
        o.TryGetProperty(key, out var v) && v.ValueKind != JsonValueKind.Null ? v.GetInt32() : null;

    static bool Has(JsonElement o, string key) => o.TryGetProperty(key, out _);

    /// <summary>
    /// Reads config.json as plain JSON and derives what HF's config classes would (written here independently of the
    /// spec helpers, from configuration_*.py): head_dim, the per-layer window, biases, the rotary dim and the longrope
    /// entry; each must equal what the spec intends.
    /// </summary>
    [Theory]
    [InlineData("tiny-phi3")]
    [InlineData("tiny-phi4-mini")]
    [InlineData("tiny-phi3-plain")]
    [InlineData("tiny-olmo2")]
    [InlineData("tiny-mistral")]
    [InlineData("tiny-ministral")]
    [InlineData("tiny-qwen2")]
    [InlineData("tiny-llama-bias")]
    [InlineData("mistral-layer-types-ignored")]
    [InlineData("mistral-no-window")]
    [InlineData("ministral-default-types")]
    [InlineData("ministral-no-window")]
    [InlineData("qwen2-window-off")]
    [InlineData("qwen2-explicit-types")]
    [InlineData("phi3-v5")]
    [InlineData("phi4-mini-v5")]
    [InlineData("olmo2-v5")]
    [InlineData("olmo2-bias")]
    [InlineData("phi-4")]
    [InlineData("phi-4-mini")]
    [InlineData("olmo-2-7b")]
    [InlineData("ministral-8b")]
    [InlineData("qwen2.5-7b")]
    [InlineData("qwen3-8b")]
    [InlineData("qwen3-14b")]
    public void Config_json_parses_back_to_the_intended_values(string key)
    {
        var spec = Variant(key);
        spec.Validate();
        using var doc = JsonDocument.Parse(RandomCheckpoint.ConfigJson(spec));
        var c = doc.RootElement;
        string mt = c.GetProperty("model_type").GetString()!;
        Assert.Equal(spec.ModelType, mt);
        string arch = c.GetProperty("architectures")[0].GetString()!;
        Assert.Equal(mt switch
        {
            "phi3" => "Phi3ForCausalLM", "olmo2" => "Olmo2ForCausalLM", "mistral" => "MistralForCausalLM",
            "ministral" => "MinistralForCausalLM", "qwen2" => "Qwen2ForCausalLM", "qwen3" => "Qwen3ForCausalLM", _ => "LlamaForCausalLM",
        }, arch);
        int d = c.GetProperty("hidden_size").GetInt32(), H = c.GetProperty("num_attention_heads").GetInt32();
        int L = c.GetProperty("num_hidden_layers").GetInt32();
        Assert.Equal(spec.Hidden, d);
        Assert.Equal(spec.Layers, L);
        Assert.Equal(spec.KvHeads, c.GetProperty("num_key_value_heads").GetInt32());
        Assert.Equal(spec.HeadDim, Int(c, "head_dim") ?? d / H);
        Assert.Equal(spec.Intermediate, c.GetProperty("intermediate_size").GetInt32());
        Assert.Equal(spec.RmsNormEps, c.GetProperty("rms_norm_eps").GetDouble());
        Assert.Equal(spec.Tie, c.GetProperty("tie_word_embeddings").GetBoolean());
        Assert.Equal("silu", c.GetProperty("hidden_act").GetString());
        int maxPos = c.GetProperty("max_position_embeddings").GetInt32();
        Assert.Equal(spec.MaxPos, maxPos);
        // Keys a class does not have are not written (HF would keep them as stray attributes).
        if (mt is "phi3" or "olmo2" or "qwen2") Assert.False(Has(c, "head_dim"));
        if (mt is "phi3" or "mistral" or "ministral" or "qwen2") Assert.False(Has(c, "attention_bias"));

        // RoPE: legacy rope_theta + rope_scaling, or v5 rope_parameters.
        JsonElement? rope = null;
        double theta;
        if (Has(c, "rope_parameters"))
        {
            Assert.True(spec.UseRopeParametersV5);
            Assert.False(Has(c, "rope_theta") || Has(c, "rope_scaling"));
            var rp = c.GetProperty("rope_parameters");
            theta = rp.GetProperty("rope_theta").GetDouble();
            if (rp.GetProperty("rope_type").GetString() != "default") rope = rp;
        }
        else
        {
            theta = c.GetProperty("rope_theta").GetDouble();
            var rs = c.GetProperty("rope_scaling");
            if (rs.ValueKind != JsonValueKind.Null) rope = rs;
        }
        Assert.Equal(spec.RopeTheta, theta);

        // Windows per layer, by each config class's rule.
        int? sw = Has(c, "sliding_window") ? Int(c, "sliding_window") : mt is "mistral" or "ministral" or "qwen2" ? 4096 : null;
        string[]? types = Has(c, "layer_types") ? c.GetProperty("layer_types").EnumerateArray().Select(x => x.GetString()!).ToArray() : null;
        for (int l = 0; l < L; l++)
        {
            int? w = mt switch
            {
                "mistral" or "phi3" => sw,                                        // one mask for all layers; layer_types unread
                "ministral" => (types?[l] ?? (sw is not null ? "sliding_attention" : "full_attention")) == "sliding_attention" ? sw : null,
                "qwen2" or "qwen3" => QwenWindow(c, types, sw, l),
                _ => null,
            };
            Assert.True(w == spec.WindowOf(l), $"{key}: layer {l} window {w} from config.json, spec says {spec.WindowOf(l)}");
        }

        // Biases.
        if (mt == "olmo2") Assert.Equal(spec.AttentionBias, c.GetProperty("attention_bias").GetBoolean());
        if (mt == "llama")
        {
            Assert.Equal(spec.AttentionBias, c.GetProperty("attention_bias").GetBoolean());
            Assert.Equal(spec.MlpBias, c.GetProperty("mlp_bias").GetBoolean());
        }

        // Phi-3: N0 top-level, partial rotary, longrope lists of length int(d/H · prf)/2 as Phi3Config validates.
        if (mt == "phi3")
        {
            int n0 = c.GetProperty("original_max_position_embeddings").GetInt32();
            Assert.Equal(spec.LongRopeOriginalMax, n0);
            double prf = c.TryGetProperty("partial_rotary_factor", out var pf) ? pf.GetDouble() : 1.0;
            Assert.Equal(spec.PartialRotaryFactor, prf);
            int R = (int)(d / H * prf);
            Assert.Equal(spec.RotaryDim, R);
            if (rope is JsonElement r)
            {
                string type = r.TryGetProperty("rope_type", out var rt) ? rt.GetString()! : r.GetProperty("type").GetString()!;
                Assert.Equal("longrope", type);
                if (!spec.UseRopeParametersV5)   // Phi3Config (≤ 4.4x) accepts exactly these three keys
                    Assert.Equal(new[] { "long_factor", "short_factor", "type" }, r.EnumerateObject().Select(x => x.Name).Order());
                else Assert.Equal(n0, r.GetProperty("original_max_position_embeddings").GetInt32());
                Assert.False(r.TryGetProperty("factor", out _));                // HF derives it: max_pos / N0
                double[] sf = r.GetProperty("short_factor").EnumerateArray().Select(x => x.GetDouble()).ToArray();
                double[] lf = r.GetProperty("long_factor").EnumerateArray().Select(x => x.GetDouble()).ToArray();
                Assert.Equal(R / 2, sf.Length);
                Assert.Equal(R / 2, lf.Length);
                Assert.Equal(spec.RopeScaling!.ShortFactor, sf);
                Assert.Equal(spec.RopeScaling.LongFactor, lf);
                Assert.NotEqual(sf, lf);
                double f = (double)maxPos / n0;
                Assert.Equal(Math.Sqrt(1 + Math.Log(f) / Math.Log(n0)), spec.RopeAttentionFactor, 1e-15);
            }
            else Assert.Null(spec.RopeScaling);
        }
        else if (rope is JsonElement r) Assert.Equal(spec.RopeScaling!.Type, r.GetProperty("rope_type").GetString());
        else Assert.Null(spec.RopeScaling);
    }

    /// <summary>Qwen2Config: sliding_window := None unless use_sliding_window; layer_types default by max_window_layers.</summary>
    static int? QwenWindow(JsonElement c, string[]? types, int? sw, int l)
    {
        bool use = c.TryGetProperty("use_sliding_window", out var u) && u.GetBoolean();
        int? window = use ? sw : null;
        int mwl = Int(c, "max_window_layers") ?? 28;
        string type = types?[l] ?? (window is not null && l >= mwl ? "sliding_attention" : "full_attention");
        return type == "sliding_attention" ? window : null;
    }

    /// <summary>Tensor names and shapes as the HF modules declare them, checked on the written file.</summary>
    [Fact]
    public void New_family_tensors_have_hf_names_and_shapes()
    {
        using var tmp = new ScratchFolder("names");
        Dictionary<string, long[]> Entries(string preset)
        {
            string dir = tmp.Sub(preset);
            RandomCheckpoint.Write(dir, RandomCheckpointSpec.Preset(preset), 3);
            return ReadHeader(Path.Combine(dir, "model.safetensors")).Entries.ToDictionary(e => e.Name, e => e.Shape);
        }
        const string p = "model.layers.1.";
        var phi = Entries("tiny-phi3");   // H=4, K=2, D=16, d=64, I=96
        Assert.Equal(new long[] { (4 + 2 * 2) * 16, 64 }, phi[p + "self_attn.qkv_proj.weight"]);
        Assert.Equal(new long[] { 2 * 96, 64 }, phi[p + "mlp.gate_up_proj.weight"]);
        Assert.DoesNotContain(phi.Keys, k => k.Contains("q_proj") || k.Contains("mlp.gate_proj") || k.Contains("mlp.up_proj") || k.EndsWith(".bias"));
        Assert.Equal(6 * 2 + 3, phi.Count);   // per layer: 2 norms, qkv, o, gate_up, down; embed, norm, lm_head (untied)

        var olmo = Entries("tiny-olmo2");
        Assert.DoesNotContain(olmo.Keys, k => k.Contains("input_layernorm"));
        Assert.Equal(new long[] { 4 * 16 }, olmo[p + "self_attn.q_norm.weight"]);
        Assert.Equal(new long[] { 2 * 16 }, olmo[p + "self_attn.k_norm.weight"]);
        Assert.Contains(p + "post_attention_layernorm.weight", olmo.Keys);
        Assert.Contains(p + "post_feedforward_layernorm.weight", olmo.Keys);

        var qwen = Entries("tiny-qwen2");
        Assert.Equal(new long[] { 64 }, qwen[p + "self_attn.q_proj.bias"]);
        Assert.Equal(new long[] { 32 }, qwen[p + "self_attn.k_proj.bias"]);
        Assert.Equal(new long[] { 32 }, qwen[p + "self_attn.v_proj.bias"]);
        Assert.DoesNotContain(qwen.Keys, k => k.EndsWith("o_proj.bias") || (k.Contains(".mlp.") && k.EndsWith(".bias")));

        var llama = Entries("tiny-llama-bias");
        foreach (var b in new[] { "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj" })
            Assert.Contains(p + b + ".bias", llama.Keys);
        Assert.Equal(new long[] { 64 }, llama[p + "self_attn.o_proj.bias"]);
        Assert.Equal(new long[] { 96 }, llama[p + "mlp.up_proj.bias"]);
        Assert.Equal(new long[] { 64 }, llama[p + "mlp.down_proj.bias"]);

        foreach (var m in new[] { "tiny-mistral", "tiny-ministral" })
            Assert.DoesNotContain(Entries(m).Keys, k => k.EndsWith(".bias") || k.Contains("norm.weight") && k.Contains("self_attn"));
    }

    [Fact]
    public void Biases_are_nontrivial_and_leave_the_other_tensors_unchanged()
    {
        using var tmp = new ScratchFolder("bias");
        var biased = RandomCheckpoint.Write(tmp.Sub("b"), RandomCheckpointSpec.Preset("tiny-llama-bias"), 5);
        var plain = RandomCheckpoint.Write(tmp.Sub("p"), RandomCheckpointSpec.Preset("tiny-llama"), 5);
        foreach (var (name, _) in plain.Spec.CanonicalTensors()) Assert.Equal(plain.Values(name), biased.Values(name));
        var bias = biased.Values("model.layers.0.self_attn.v_proj.bias");
        double rms = Math.Sqrt(bias.Select(x => x * x).Average());
        Assert.InRange(rms, 0.3, 0.7);
        Assert.True(bias.Distinct().Count() == bias.Length);
    }

    [Theory]
    [InlineData(DType.F32)]
    [InlineData(DType.BF16)]
    public void Phi3_plain_and_its_llama_split_give_identical_outputs(DType dtype)
    {
        using var tmp = new ScratchFolder("split");
        var spec = RandomCheckpointSpec.Preset("tiny-phi3-plain") with { DType = dtype };
        var phi = RandomCheckpoint.Write(tmp.Sub("phi"), spec, 12);
        var llama = RandomCheckpoint.WriteLlamaSplitOfPhi3(tmp.Sub("llama"), spec, 12);
        Assert.Equal("llama", llama.Spec.ModelType);

        // The Llama folder on disk: its own config, and q/k/v, gate/up rows of the fused tensors.
        using (var cfg = JsonDocument.Parse(File.ReadAllText(Path.Combine(llama.Folder, "config.json"))))
        {
            Assert.Equal("llama", cfg.RootElement.GetProperty("model_type").GetString());
            Assert.Equal(JsonValueKind.Null, cfg.RootElement.GetProperty("rope_scaling").ValueKind);
        }
        string file = Path.Combine(llama.Folder, "model.safetensors");
        AssertWellFormed(file);
        var entries = ReadHeader(file).Entries;
        Assert.Equal(llama.Spec.CanonicalTensors().Count, entries.Count);
        foreach (var e in entries) Assert.Equal(llama.Values(e.Name), ReadValues(file, e));
        const int q = 64, kv = 32, d = 64, I = 96;
        var qkv = phi.Values("model.layers.1.self_attn.qkv_proj.weight");
        Assert.Equal(qkv[..(q * d)], llama.Values("model.layers.1.self_attn.q_proj.weight"));
        Assert.Equal(qkv[(q * d)..((q + kv) * d)], llama.Values("model.layers.1.self_attn.k_proj.weight"));
        Assert.Equal(qkv[((q + kv) * d)..], llama.Values("model.layers.1.self_attn.v_proj.weight"));
        var gu = phi.Values("model.layers.0.mlp.gate_up_proj.weight");
        Assert.Equal(gu[..(I * d)], llama.Values("model.layers.0.mlp.gate_proj.weight"));
        Assert.Equal(gu[(I * d)..], llama.Values("model.layers.0.mlp.up_proj.weight"));

        int[] ids = Tokens(9, 4);
        AssertSameOutput(SpecDecoder.Run(phi, ids), SpecDecoder.Run(llama, ids));

        // Control: reading the halves the other way round ([up; gate]) is a different model.
        var swapped = SpecDecoder.Run(llama.Spec, key =>
            key.EndsWith("mlp.gate_proj.weight") ? llama.Values(key.Replace("gate_proj", "up_proj"))
            : key.EndsWith("mlp.up_proj.weight") ? llama.Values(key.Replace("up_proj", "gate_proj"))
            : llama.Values(key), ids);
        Assert.NotEqual(swapped.Logits, SpecDecoder.Run(phi, ids).Logits);

        Assert.Throws<ArgumentException>(() => RandomCheckpoint.WriteLlamaSplitOfPhi3(tmp.Sub("x"), RandomCheckpointSpec.Preset("tiny-phi3"), 1));
    }

    /// <summary>A window of at least n keys is no window at all; one key shorter is not (control).</summary>
    [Theory]
    [InlineData("tiny-mistral")]
    [InlineData("tiny-phi3")]
    [InlineData("tiny-ministral")]
    [InlineData("tiny-qwen2")]
    public void Window_at_least_n_equals_no_window(string preset)
    {
        using var tmp = new ScratchFolder("wn");
        var spec = RandomCheckpointSpec.Preset(preset);
        var w = RandomCheckpoint.Write(tmp.Path, spec, 6);
        const int n = 7;
        int[] ids = Tokens(n, 8);
        var none = spec with { SlidingWindow = null, UseSlidingWindow = false };
        Assert.All(Enumerable.Range(0, spec.Layers), l => Assert.Null(none.WindowOf(l)));
        Assert.Contains(Enumerable.Range(0, spec.Layers), l => (spec with { SlidingWindow = n }).WindowOf(l) == n);
        var reference = SpecDecoder.Run(none, w.Values, ids);
        AssertSameOutput(reference, SpecDecoder.Run(spec with { SlidingWindow = n }, w.Values, ids));
        AssertSameOutput(reference, SpecDecoder.Run(spec with { SlidingWindow = n + 5 }, w.Values, ids));
        Assert.NotEqual(reference.Logits, SpecDecoder.Run(spec with { SlidingWindow = n - 1 }, w.Values, ids).Logits);
    }

    [Fact]
    public void Windows_follow_each_family_rule()
    {
        Assert.Equal(new int?[] { 3, 3 }, Enumerable.Range(0, 2).Select(Variant("mistral-layer-types-ignored").WindowOf));
        Assert.Equal(new int?[] { 3, null, 3 }, Enumerable.Range(0, 3).Select(RandomCheckpointSpec.Preset("tiny-ministral").WindowOf));
        Assert.Equal(new int?[] { 3, 3, 3 }, Enumerable.Range(0, 3).Select(Variant("ministral-default-types").WindowOf));
        Assert.Equal(new int?[] { null, 3 }, Enumerable.Range(0, 2).Select(RandomCheckpointSpec.Preset("tiny-qwen2").WindowOf));
        Assert.Equal(new int?[] { null, null }, Enumerable.Range(0, 2).Select(Variant("qwen2-window-off").WindowOf));
        Assert.Equal(new int?[] { 4, 4 }, Enumerable.Range(0, 2).Select(RandomCheckpointSpec.Preset("tiny-phi3").WindowOf));
        Assert.Equal(new int?[] { null, null }, Enumerable.Range(0, 2).Select(RandomCheckpointSpec.Preset("tiny-olmo2").WindowOf));

        // In the decoder: tiny-ministral's layer 1 sees every key, layers 0 and 2 only the last 3.
        using var tmp = new ScratchFolder("wmix");
        var w = RandomCheckpoint.Write(tmp.Path, RandomCheckpointSpec.Preset("tiny-ministral"), 2);
        var o = SpecDecoder.Run(w, Tokens(8, 5));
        for (int s = 0; s < 8; s++)
            foreach (var (layer, visible) in new[] { (0, Math.Min(3, s + 1)), (1, s + 1), (2, Math.Min(3, s + 1)) })
                foreach (var head in o.Attention[layer]) Assert.Equal(visible, head[s].Count(x => x > 0));
    }

    /// <summary>
    /// Longrope: a sequence of n ≤ N0 tokens reads only short_factor, a longer one only long_factor — for every position,
    /// so the rows of a prompt change when it grows past N0 (HF recomputes the cache there). Position 0 is unchanged
    /// (angle 0; one key).
    /// </summary>
    [Theory]
    [InlineData("tiny-phi3")]
    [InlineData("tiny-phi4-mini")]
    public void Longrope_reads_short_factor_up_to_N0_and_long_factor_beyond(string preset)
    {
        using var tmp = new ScratchFolder("longrope");
        var spec = RandomCheckpointSpec.Preset(preset);
        var w = RandomCheckpoint.Write(tmp.Path, spec, 9);
        int n0 = spec.LongRopeOriginalMax;
        Assert.Equal(6, n0);
        var s = spec.RopeScaling!;
        RandomCheckpointSpec Changed(bool longList) => spec with
        {
            RopeScaling = s with
            {
                ShortFactor = longList ? s.ShortFactor : s.ShortFactor!.Select((x, i) => i == 3 ? x * 1.7 : x).ToArray(),
                LongFactor = longList ? s.LongFactor!.Select((x, i) => i == 3 ? x * 1.7 : x).ToArray() : s.LongFactor,
            },
        };
        int[] ids = Tokens(n0 + 2, 6);
        foreach (int n in new[] { n0 - 1, n0, n0 + 1, n0 + 2 })
        {
            var prompt = ids[..n];
            var baseline = SpecDecoder.Run(spec, w.Values, prompt);
            bool useLong = n > n0;
            var sameList = SpecDecoder.Run(Changed(longList: !useLong), w.Values, prompt);
            var usedList = SpecDecoder.Run(Changed(longList: useLong), w.Values, prompt);
            AssertSameOutput(baseline, sameList);
            Assert.NotEqual(baseline.Logits, usedList.Logits);
        }
        var atN0 = SpecDecoder.Run(spec, w.Values, ids[..n0]);
        var belowN0 = SpecDecoder.Run(spec, w.Values, ids[..(n0 - 1)]);
        var pastN0 = SpecDecoder.Run(spec, w.Values, ids[..(n0 + 1)]);
        for (int t = 0; t < n0 - 1; t++) Assert.True(RowEqual(atN0.Final, belowN0.Final, t, atN0.Hidden), $"t={t}: same list, causal");
        Assert.True(RowEqual(atN0.Final, pastN0.Final, 0, atN0.Hidden));
        for (int t = 1; t < n0; t++) Assert.False(RowEqual(atN0.Final, pastN0.Final, t, atN0.Hidden), $"t={t}: long list once n > N0");
    }

    [Fact]
    public void Longrope_attention_factor_and_frequencies_match_reference_values()
    {
        Assert.Equal(1.1902380714238083, SpecDecoder.LongRopeAttentionFactor(131072, 4096), 1e-15);   // architectures.md §5
        Assert.Equal(1.1902380714238083, RandomCheckpointSpec.Preset("phi-4-mini").RopeAttentionFactor, 1e-15);
        Assert.Equal(1.0, SpecDecoder.LongRopeAttentionFactor(4096, 4096));
        Assert.Equal(1.0, RandomCheckpointSpec.Preset("tiny-phi3-plain").RopeAttentionFactor);
        var tiny = RandomCheckpointSpec.Preset("tiny-phi3");
        Assert.Equal(Math.Sqrt(1 + Math.Log(64.0 / 6) / Math.Log(6)), tiny.RopeAttentionFactor, 1e-15);
        Assert.Same(tiny.RopeScaling!.ShortFactor, tiny.LongRopeFactorsFor(6));
        Assert.Same(tiny.RopeScaling.LongFactor, tiny.LongRopeFactorsFor(7));

        // ω_i = 1 / (e_i θ^(2i/R)); with all e = 1 it is the default RoPE over R (not D) dims.
        var ones = Enumerable.Repeat(1.0, 48).ToArray();
        Assert.Equal(SpecDecoder.InverseFrequencies(10000, 96, null), SpecDecoder.LongRopeInverseFrequencies(10000, 96, ones));
        Rel(8.254041672e-1, SpecDecoder.LongRopeInverseFrequencies(10000, 96, ones)[1]);           // §5, θ = 1e4, R = 96
        var e = Enumerable.Range(0, 48).Select(i => 1.0 + i).ToArray();
        Assert.Equal(1.0 / (5 * Math.Pow(10000, 8.0 / 96)), SpecDecoder.LongRopeInverseFrequencies(10000, 96, e)[4], 1e-18);
    }

    [Fact]
    public void Partial_rotary_rotates_the_first_R_dims_and_passes_the_rest()
    {
        const int D = 16, R = 12;
        var rng = new Random(3);
        double[] u = Enumerable.Range(0, D).Select(_ => rng.NextDouble() - 0.5).ToArray();
        double[] omega = SpecDecoder.InverseFrequencies(10000, R, null);
        Assert.Equal(6, omega.Length);
        const double a = 1.3;
        double[] r = SpecDecoder.Rotate(u, 5, omega, R, a);
        for (int k = R; k < D; k++) Assert.Equal(u[k], r[k]);                      // pass-through, not scaled by a
        for (int k = 0; k < R / 2; k++)
        {
            double phi = 5 * omega[k];
            Assert.Equal(a * (u[k] * Math.Cos(phi) - u[k + R / 2] * Math.Sin(phi)), r[k], 1e-15);
            Assert.Equal(a * (u[k + R / 2] * Math.Cos(phi) + u[k] * Math.Sin(phi)), r[k + R / 2], 1e-15);
        }
        Assert.Equal(u.Take(R).Select(x => a * x), SpecDecoder.Rotate(u, 0, omega, R, a).Take(R));  // t = 0: only the factor
        Assert.Equal(SpecDecoder.Rotate(u, 5, SpecDecoder.InverseFrequencies(10000, D, null), D), SpecDecoder.Rotate(u, 5, SpecDecoder.InverseFrequencies(10000, D, null), D, 1.0));

        // In the decoder the rotary dim matters: the same weights with R = D are a different model.
        using var tmp = new ScratchFolder("partial");
        var spec = RandomCheckpointSpec.Preset("tiny-phi4-mini") with { RopeScaling = null };
        Assert.Equal(12, spec.RotaryDim);
        var w = RandomCheckpoint.Write(tmp.Path, spec, 4);
        int[] ids = Tokens(6, 2);
        Assert.NotEqual(SpecDecoder.Run(spec, w.Values, ids).Logits, SpecDecoder.Run(spec with { PartialRotaryFactor = 1.0 }, w.Values, ids).Logits);
    }

    [Fact]
    public void Zero_biases_give_the_unbiased_family()
    {
        using var tmp = new ScratchFolder("zb");
        int[] ids = Tokens(7, 3);
        static Func<string, double[]> ZeroBiases(RandomWeights w) =>
            key => key.EndsWith(".bias") ? new double[w.Values(key).Length] : w.Values(key);

        // qwen2 with zero q/k/v biases is Llama with the same weights (window off for the comparison).
        var qwenSpec = RandomCheckpointSpec.Preset("tiny-qwen2") with { UseSlidingWindow = false };
        var qwen = RandomCheckpoint.Write(tmp.Sub("q"), qwenSpec, 8);
        var asLlama = qwenSpec with { ModelType = "llama", UseSlidingWindow = false, MaxWindowLayers = null, SlidingWindow = null };
        AssertSameOutput(SpecDecoder.Run(asLlama, qwen.Values, ids), SpecDecoder.Run(qwenSpec, ZeroBiases(qwen), ids));
        var biased = SpecDecoder.Run(qwenSpec, qwen.Values, ids);
        Assert.NotEqual(biased.Logits, SpecDecoder.Run(asLlama, qwen.Values, ids).Logits);
        // Each of q, k, v biases matters on its own.
        foreach (var b in new[] { "q_proj", "k_proj", "v_proj" })
            Assert.NotEqual(biased.Logits, SpecDecoder.Run(qwenSpec, Override(qwen, $"model.layers.0.self_attn.{b}.bias", x => new double[x.Length]), ids).Logits);

        // Llama with zero attention/MLP biases is tiny-llama of the same seed.
        var llamaBias = RandomCheckpoint.Write(tmp.Sub("lb"), RandomCheckpointSpec.Preset("tiny-llama-bias"), 8);
        var llama = RandomCheckpoint.Write(tmp.Sub("l"), RandomCheckpointSpec.Preset("tiny-llama"), 8);
        AssertSameOutput(SpecDecoder.Run(llama, ids), SpecDecoder.Run(llamaBias.Spec, ZeroBiases(llamaBias), ids));
        var lb = SpecDecoder.Run(llamaBias, ids);
        foreach (var b in new[] { "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj" })
            Assert.NotEqual(lb.Logits, SpecDecoder.Run(llamaBias.Spec, Override(llamaBias, $"model.layers.1.{b}.bias", x => new double[x.Length]), ids).Logits);
    }

    /// <summary>
    /// OLMo 2 by hand, one token (attention weight 1): h' = h + N_postA(W_o W_v h), h'' = h' + N_postF(W_down(silu(W_g h')·W_u h')),
    /// y = N_f(h''). d = 2, H = K = 1, D = 2, I = 1, V = 2.
    /// </summary>
    [Fact]
    public void Olmo2_single_token_matches_a_hand_computation()
    {
        const double eps = 1e-6;
        var spec = new RandomCheckpointSpec("olmo2", Hidden: 2, Intermediate: 1, Layers: 1, Heads: 1, KvHeads: 1, HeadDim: 2, Vocab: 2, RmsNormEps: eps);
        var W = new Dictionary<string, double[]>
        {
            ["model.embed_tokens.weight"] = [3, 4, 1, 0],
            ["model.layers.0.self_attn.q_proj.weight"] = [0.3, -0.2, 0.1, 0.5],
            ["model.layers.0.self_attn.k_proj.weight"] = [-0.4, 0.2, 0.7, 0.1],
            ["model.layers.0.self_attn.v_proj.weight"] = [1, 0, 0, 1],
            ["model.layers.0.self_attn.o_proj.weight"] = [2, 0, 0, 1],
            ["model.layers.0.self_attn.q_norm.weight"] = [1, 1],
            ["model.layers.0.self_attn.k_norm.weight"] = [1, 1],
            ["model.layers.0.post_attention_layernorm.weight"] = [1, 0.5],
            ["model.layers.0.mlp.gate_proj.weight"] = [1, 0],
            ["model.layers.0.mlp.up_proj.weight"] = [0, 1],
            ["model.layers.0.mlp.down_proj.weight"] = [1, -1],
            ["model.layers.0.post_feedforward_layernorm.weight"] = [2, 1],
            ["model.norm.weight"] = [1, 1],
            ["lm_head.weight"] = [1, 0, 0, 1],
        };
        Assert.Equal(spec.CanonicalTensors().Select(t => t.Name).Order(), W.Keys.Order());
        var o = SpecDecoder.Run(spec, k => W[k], [0]);

        double[] h = [3, 4];
        double ra = 1 / Math.Sqrt((36 + 16) / 2.0 + eps);                 // attention branch W_o W_v h = (6, 4)
        double[] h1 = [h[0] + 6 * ra * 1, h[1] + 4 * ra * 0.5];
        double g = h1[0], u = h1[1], act = g / (1 + Math.Exp(-g)) * u;   // MLP on the raw residual
        double rm = 1 / Math.Sqrt((act * act + act * act) / 2 + eps);    // W_down·act = (act, −act)
        double[] h2 = [h1[0] + act * rm * 2, h1[1] - act * rm * 1];
        double rf = 1 / Math.Sqrt((h2[0] * h2[0] + h2[1] * h2[1]) / 2 + eps);
        Rel(h2[0], o.LayerOutputs[0][0], 1e-14);
        Rel(h2[1], o.LayerOutputs[0][1], 1e-14);
        Rel(h2[0] * rf, o.Logits[0], 1e-14);
        Rel(h2[1] * rf, o.Logits[1], 1e-14);
    }

    /// <summary>
    /// OLMo 2 normalises q over all H·D entries at once: scaling head 1's rows of q_proj changes head 0's attention.
    /// Qwen3's per-head norm keeps head 0 bit-identical (control).
    /// </summary>
    [Theory]
    [InlineData("tiny-olmo2", true)]
    [InlineData("tiny-qwen3", false)]
    public void Q_norm_width_couples_heads_only_for_olmo2(string preset, bool coupled)
    {
        using var tmp = new ScratchFolder("qn");
        var w = RandomCheckpoint.Write(tmp.Path, RandomCheckpointSpec.Preset(preset), 5);
        int D = w.Spec.HeadDim, d = w.Spec.Hidden;
        int[] ids = Tokens(6, 9);
        var a = SpecDecoder.Run(w, ids);
        var b = SpecDecoder.Run(w.Spec, Override(w, "model.layers.0.self_attn.q_proj.weight",
            m => m.Select((x, i) => i / d / D == 1 ? 10 * x : x).ToArray()), ids);
        bool same = Enumerable.Range(0, 6).All(s => a.Attention[0][0][s].SequenceEqual(b.Attention[0][0][s]));
        Assert.Equal(!coupled, same);
        Assert.False(Enumerable.Range(1, 5).All(s => a.Attention[0][1][s].SequenceEqual(b.Attention[0][1][s])));
    }

    /// <summary>Real shapes against the released models' parameter counts (not written: tens of GB).</summary>
    [Theory]
    [InlineData("phi-4", 14_600_000_000L, 14_700_000_000L)]          // 14.66 B
    [InlineData("phi-4-mini", 3_800_000_000L, 3_900_000_000L)]       // 3.84 B
    [InlineData("olmo-2-7b", 7_250_000_000L, 7_350_000_000L)]        // 7.30 B
    [InlineData("ministral-8b", 7_980_000_000L, 8_060_000_000L)]     // 8.02 B
    [InlineData("qwen2.5-7b", 7_580_000_000L, 7_660_000_000L)]       // 7.62 B
    [InlineData("qwen3-8b", 8_150_000_000L, 8_230_000_000L)]         // 8.19 B
    [InlineData("qwen3-14b", 14_700_000_000L, 14_850_000_000L)]      // 14.77 B
    public void Real_shape_presets_have_the_released_parameter_counts(string preset, long min, long max)
    {
        var s = RandomCheckpointSpec.Preset(preset);
        s.Validate();
        Assert.Equal(DType.BF16, s.DType);
        long parameters = s.CanonicalTensors().Sum(t => t.Shape.Aggregate(1L, (a, b) => a * b));
        Assert.InRange(parameters, min, max);
        Assert.Contains(preset, RandomCheckpointSpec.PresetNames);
        if (preset == "phi-4-mini") Assert.Equal(3_836_021_760L, parameters);   // the released safetensors, exactly
    }

    [Fact]
    public void Every_preset_validates_and_is_listed()
    {
        foreach (var name in RandomCheckpointSpec.PresetNames) RandomCheckpointSpec.Preset(name).Validate();
        Assert.Equal(RandomCheckpointSpec.PresetNames.Count, RandomCheckpointSpec.PresetNames.Distinct().Count());
        Assert.Throws<ArgumentException>(() => (RandomCheckpointSpec.Preset("tiny-qwen2") with { HeadDim = 8 }).Validate());
        Assert.Throws<ArgumentException>(() => (RandomCheckpointSpec.Preset("tiny-phi3") with { PartialRotaryFactor = 0.75 }).Validate());
        Assert.Throws<ArgumentException>(() => (RandomCheckpointSpec.Preset("tiny-mistral") with { AttentionBias = true }).Validate());
        // Sliding layers without an effective window: HF raises in create_sliding_window_causal_mask.
        Assert.Throws<ArgumentException>(() => (RandomCheckpointSpec.Preset("tiny-qwen2") with { UseSlidingWindow = false, LayerTypes = ["sliding_attention", "full_attention"] }).Validate());
        Assert.Throws<ArgumentException>(() => (RandomCheckpointSpec.Preset("tiny-ministral") with { SlidingWindow = null }).Validate());
        (RandomCheckpointSpec.Preset("tiny-qwen2") with { UseSlidingWindow = false }).Validate();
    }
}
