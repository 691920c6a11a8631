using LinearLens.Loading;
using LinearLens.Models;
using LinearLens.Numerics;
using Xunit.Abstractions;

namespace LinearLens.Tests.Loading;

/// <summary>
/// Seeded mutations of a small valid GGUF (tiny Llama with a byte-level BPE tokenizer): byte flips, extreme numbers
/// written over header fields, truncations, and semantic corruptions through the writer. Every case must either
/// load (and then tokenize and run) or fail with a <see cref="LinearLensException"/> — never anything else.
/// </summary>
public class GgufMutationTests(ITestOutputHelper output)
{
    static readonly string Tmp = Path.Combine(Path.GetTempPath(), "linearlens-gguf-mutation-tests");

    /// <summary>A tiny Llama GGUF with a 101-token gpt2 tokenizer (pre llama-bpe), as valid bytes, and its header size.</summary>
    static (byte[] bytes, long headerEnd) BaseFile()
    {
        Directory.CreateDirectory(Tmp);
        string folder = Path.Combine(Tmp, "base-hf"), plain = Path.Combine(Tmp, "base-plain.gguf"), path = Path.Combine(Tmp, "base.gguf");
        // Small (≈35 KB) so that a thousand mutants are written and opened in a few seconds.
        var spec = RandomCheckpointSpec.Preset("tiny-llama") with { Hidden = 32, Intermediate = 32, Heads = 2, KvHeads = 1, HeadDim = 16, DType = DType.F16 };
        RandomCheckpoint.Write(folder, spec, seed: 3, keepValues: false);
        GgufExport.FromHuggingFace(folder, plain, name: "mutation-base");
        using (var f = GgufFile.Open(plain))
        {
            var tokenizer = Tokenizer().ToList();
            var meta = f.Metadata.Where(kv => !tokenizer.Any(t => t.Key == kv.Key)).Concat(tokenizer).ToList();
            var entries = f.Tensors.Select(t => new GgufTensorEntry(t.Name, t.Type, t.Dims)).ToList();
            GgufWriter.Write(path, meta, entries, (e, s) => { using var d = f.OpenData(f.Find(e.Name)!); d.CopyTo(s); });
        }
        using var g = GgufFile.Open(path);
        return (File.ReadAllBytes(path), g.DataStart);
    }

    static IEnumerable<KeyValuePair<string, object>> Tokenizer()
    {
        var tokens = new List<string>();
        for (char c = '!'; c <= '~'; c++) tokens.Add(c.ToString());   // 94 single-byte tokens
        tokens.AddRange(["Ġ", "Ġt", "he", "Ġthe", "<|begin|>", "<|end|>", "<|pad|>"]);
        var types = tokens.Select((t, i) => i >= 98 ? 3 : 1).ToArray();
        return
        [
            new("tokenizer.ggml.model", "gpt2"), new("tokenizer.ggml.pre", "llama-bpe"),
            new("tokenizer.ggml.tokens", tokens.ToArray()), new("tokenizer.ggml.token_type", types),
            new("tokenizer.ggml.merges", new[] { "Ġ t", "h e", "Ġt he" }),
            new("tokenizer.ggml.add_bos_token", true), new("tokenizer.ggml.bos_token_id", 98u), new("tokenizer.ggml.eos_token_id", 99u),
        ];
    }

    /// <summary>Loads, tokenizes and runs a file; returns "ok" or the error line; anything but a LinearLensException fails the test.</summary>
    static string Exercise(string path)
    {
        try
        {
            using var ckpt = Checkpoint.Open(path);
            int[] ids = ckpt.Tokenizer is { } t ? t.Encode("the cat") : [1, 2];
            if (ids.Length == 0) ids = [1];
            new Transformer<double>(ckpt).Forward(ids);
            return "ok";
        }
        catch (LinearLensException e)
        {
            Assert.DoesNotContain('\n', e.Message.TrimEnd());
            return e.Message;
        }
    }

    [Fact]
    public void TheBaseFileLoadsTokenizesAndRuns()
    {
        var (bytes, _) = BaseFile();
        string path = Path.Combine(Tmp, "base-check.gguf");
        File.WriteAllBytes(path, bytes);
        using var ckpt = Checkpoint.Open(path);
        Assert.Equal([98, 83, 96, 94, 66, 64, 83], ckpt.RequireTokenizer().Encode("the cat"));   // <|begin|> t he Ġ c a t
        Assert.Equal("ok", Exercise(path));
    }

    [Fact]
    public void EverySeededHeaderMutationLoadsOrFailsWithOneLine()
    {
        int seed = Environment.GetEnvironmentVariable("LINEARLENS_MUTATION_SEED") is { } s ? int.Parse(s) : 20261201;
        output.WriteLine($"mutation seed {seed} (set LINEARLENS_MUTATION_SEED to replay)");
        var (bytes, headerEnd) = BaseFile();
        var rng = new Random(seed);
        // Mutants go to RAM where there is a tmpfs (writing a thousand files is most of this test's time otherwise).
        string path = Path.Combine(Directory.Exists("/dev/shm") ? "/dev/shm" : Tmp, $"linearlens-mutant-{Environment.ProcessId}.gguf");
        ulong[] extremes = [0, 1, 2, 3, 31, 32, 33, 255, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0x100000000, long.MaxValue, 0x8000000000000000, ulong.MaxValue];
        int loaded = 0, failed = 0;
        var sw = System.Diagnostics.Stopwatch.StartNew();
        double okTime = 0, badTime = 0, writeTime = 0;
        const int Cases = 1200;
        for (int n = 0; n < Cases; n++)
        {
            var m = (byte[])bytes.Clone();
            int kind = rng.Next(5);
            string what;
            switch (kind)
            {
                case 0:   // flip 1–4 random header bits
                {
                    int flips = rng.Next(1, 5);
                    for (int i = 0; i < flips; i++) m[rng.Next((int)headerEnd)] ^= (byte)(1 << rng.Next(8));
                    what = $"{flips} bit flips";
                    break;
                }
                case 1:   // an extreme u64 over a random header position
                case 2:   // an extreme u32 over a random header position
                {
                    int at = rng.Next((int)headerEnd - 8);
                    ulong v = extremes[rng.Next(extremes.Length)];
                    if (kind == 1) BitConverter.TryWriteBytes(m.AsSpan(at), v); else BitConverter.TryWriteBytes(m.AsSpan(at), (uint)v);
                    what = $"{(kind == 1 ? "u64" : "u32")} {v} at {at}";
                    break;
                }
                case 3:   // the counts, version or a value type
                {
                    int at = new[] { 4, 8, 16 }[rng.Next(3)];
                    BitConverter.TryWriteBytes(m.AsSpan(at), extremes[rng.Next(extremes.Length)] ^ (ulong)rng.Next(3));
                    what = $"field at {at}";
                    break;
                }
                default:  // truncation anywhere
                {
                    int len = rng.Next(m.Length);
                    m = m[..len];
                    what = $"truncated to {len}";
                    break;
                }
            }
            var tw = sw.Elapsed.TotalSeconds;
            File.WriteAllBytes(path, m);
            writeTime += sw.Elapsed.TotalSeconds - tw;
            string result;
            var t0 = sw.Elapsed.TotalSeconds;
            try { result = Exercise(path); }
            catch (Exception e) when (e is not Xunit.Sdk.XunitException)
            {
                throw new Exception($"seed {seed}, case {n} ({what}): {e.GetType().Name}: {e.Message}", e);
            }
            if (result == "ok") loaded++; else failed++;
            if (result == "ok") okTime += sw.Elapsed.TotalSeconds - t0; else badTime += sw.Elapsed.TotalSeconds - t0;
        }
        output.WriteLine($"{Cases} cases in {sw.Elapsed.TotalSeconds:F1} s: {loaded} loaded, {failed} failed with one error line (exercising: {okTime:F1} s loaded, {badTime:F1} s failed, write {writeTime:F1} s)");
        Assert.True(failed > Cases / 2, $"only {failed} of {Cases} mutations were rejected");
        File.Delete(path);
    }

    /// <summary>Semantically wrong files (valid bytes) written through the writer: each is one error line naming the problem.</summary>
    [Theory]
    [InlineData("general.alignment", "u32:3", "general.alignment")]
    [InlineData("general.alignment", "str:32", "general.alignment")]
    [InlineData("general.architecture", "str:mamba", "architecture 'mamba'")]
    [InlineData("llama.attention.head_count", "u32:0", "head_count")]
    [InlineData("llama.embedding_length", "str:64", "llama.embedding_length")]
    [InlineData("llama.block_count", "u32:3", "model.layers.2")]
    [InlineData("llama.attention.layer_norm_rms_epsilon", "f32:NaN", "layer_norm_rms_epsilon")]
    [InlineData("tokenizer.ggml.bos_token_id", "u32:5000", "bos_token_id")]
    [InlineData("tokenizer.ggml.pre", "str:falcon", "falcon")]
    [InlineData("tokenizer.ggml.model", "str:bert", "bert")]
    [InlineData("tokenizer.ggml.merges", "str:x", "tokenizer.ggml.merges")]
    [InlineData("llama.rope.scaling.type", "str:yarn", "yarn")]
    [InlineData("llama.rope.dimension_count", "u32:7", "dimension_count")]
    public void SemanticCorruptionsAreOneErrorLine(string key, string value, string expected)
    {
        var (bytes, _) = BaseFile();
        string src = Path.Combine(Tmp, "semantic-src.gguf"), dst = Path.Combine(Tmp, $"semantic-{key}-{value.Replace(':', '-')}.gguf");
        File.WriteAllBytes(src, bytes);
        using (var f = GgufFile.Open(src))
        {
            object v = value.Split(':', 2) switch
            {
                ["u32", var x] => uint.Parse(x), ["str", var x] => x, ["f32", var x] => float.Parse(x),
                _ => throw new ArgumentException(value),
            };
            var meta = f.Metadata.Where(kv => kv.Key != key).Append(new(key, v)).ToList();
            var entries = f.Tensors.Select(t => new GgufTensorEntry(t.Name, t.Type, t.Dims)).ToList();
            GgufWriter.Write(dst, meta, entries, (e, s) => { using var d = f.OpenData(f.Find(e.Name)!); d.CopyTo(s); });
        }
        var e = Assert.Throws<LinearLensException>(() => { using var c = Checkpoint.Open(dst); c.RequireTokenizer().Encode("the"); });
        Assert.Contains(expected, e.Message);
        File.Delete(dst);
    }

    [Fact]
    public void UnsupportedTensorTypeIsNamedWithTheTensor()
    {
        var (bytes, _) = BaseFile();
        string src = Path.Combine(Tmp, "type-src.gguf");
        File.WriteAllBytes(src, bytes);
        using var f = GgufFile.Open(src);
        // Find the type field of blk.0.attn_q.weight: the u32 right before its u64 offset, after its dims.
        var info = f.Find("blk.0.attn_q.weight")!;
        int nameAt = IndexOf(bytes, System.Text.Encoding.UTF8.GetBytes("blk.0.attn_q.weight"));
        int typeAt = nameAt + "blk.0.attn_q.weight".Length + 4 + 8 * info.Dims.Length;
        Assert.Equal(1u, BitConverter.ToUInt32(bytes, typeAt));   // F16
        var m = (byte[])bytes.Clone();
        BitConverter.TryWriteBytes(m.AsSpan(typeAt), 16u);         // IQ2_XXS
        string dst = Path.Combine(Tmp, "type-iq2.gguf");
        File.WriteAllBytes(dst, m);
        var e = Assert.Throws<LinearLensException>(() => Checkpoint.Open(dst));
        Assert.Contains("'blk.0.attn_q.weight'", e.Message);
        Assert.Contains("IQ2_XXS", e.Message);
    }

    static int IndexOf(byte[] hay, byte[] needle)
    {
        for (int i = 0; i + needle.Length <= hay.Length; i++)
            if (hay.AsSpan(i, needle.Length).SequenceEqual(needle)) return i;
        throw new InvalidOperationException("not found");
    }
}
