using System.Text;
using System.Text.Json.Nodes;
using LinearLens.Loading;
using LinearLens.Models;
using Xunit.Abstractions;

namespace LinearLens.Tests.Loading;

/// <summary>
/// Seeded mutation test: thousands of mutated safetensors headers, index files, config.json and
/// tokenizer_config.json files (byte flips, numbers swapped for extremes, values swapped for other JSON types,
/// invalid UTF-8, truncation) go through the loader and a short forward pass in-process. Each one must either
/// load or fail with <see cref="LinearLensException"/> — never any other exception. The seed is printed; set
/// LINEARLENS_FUZZ_SEED to replay one, LINEARLENS_FUZZ_CASES to run more.
/// </summary>
public sealed class MutationTests(ITestOutputHelper output) : IDisposable
{
    readonly string root = Directory.CreateTempSubdirectory("ll-fuzz").FullName;

    public void Dispose() => Directory.Delete(root, true);

    static int Seed => int.TryParse(Environment.GetEnvironmentVariable("LINEARLENS_FUZZ_SEED"), out int s) ? s : 20261201;
    static int CasesPerTarget => int.TryParse(Environment.GetEnvironmentVariable("LINEARLENS_FUZZ_CASES"), out int n) ? n : 500;

    /// <summary>A minimal WordLevel tokenizer.json with two special tokens, so that tokenizer_config.json is read.</summary>
    public const string TokenizerJson = """
        {"version":"1.0","truncation":null,"padding":null,
         "added_tokens":[{"id":1,"content":"<s>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true},
                         {"id":2,"content":"</s>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true}],
         "normalizer":null,"pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,
         "model":{"type":"WordLevel","vocab":{"<unk>":0,"<s>":1,"</s>":2,"hello":3,"world":4},"unk_token":"<unk>"}}
        """;

    public const string TokenizerConfigJson = """
        {"tokenizer_class":"LlamaTokenizer","add_bos_token":true,"add_eos_token":false,
         "bos_token":{"content":"<s>","lstrip":false,"normalized":false,"rstrip":false,"single_word":false},"eos_token":"</s>",
         "model_max_length":2048}
        """;

    enum Target { SafetensorsHeader, Index, Config, TokenizerConfig }

    [Fact]
    public void MutatedFilesLoadOrFailWithOneClearError()
    {
        int seed = Seed, perTarget = CasesPerTarget;
        output.WriteLine($"mutation seed {seed} ({perTarget} cases per file kind); replay with LINEARLENS_FUZZ_SEED={seed}");
        var rng = new Random(seed);
        var failures = new List<string>();
        var tally = new Dictionary<string, int>();
        int cases = 0;
        foreach (var target in Enum.GetValues<Target>())
        {
            // Each target mutates one file of a good checkpoint; the configs rotate over the three families.
            string[] presets = target is Target.Config
                ? ["tiny-llama", "tiny-qwen3", "tiny-gemma3", "tiny-gemma3-multimodal", "tiny-phi4-mini", "tiny-olmo2", "tiny-ministral", "tiny-qwen2"]
                : ["tiny-llama"];
            var folders = presets.Select(p => Prepare(target, p)).ToArray();
            for (int c = 0; c < perTarget; c++)
            {
                var folder = folders[target is Target.Config ? c % folders.Length : 0];
                string file = FileOf(target, folder.dir);
                var (bytes, what) = Mutate(target, folder.original, rng);
                File.WriteAllBytes(file, bytes);
                string outcome;
                try { outcome = Load(folder.dir); }
                catch (Exception e) when (e is LinearLensException || e is AggregateException a && a.Flatten().InnerExceptions.All(x => x is LinearLensException))
                {
                    outcome = "error line";
                    if (Environment.GetEnvironmentVariable("LINEARLENS_FUZZ_VERBOSE") is not null) output.WriteLine($"{target} #{c} ({what}): {e.Message}");
                }
                catch (Exception e)
                {
                    outcome = $"crash ({e.GetType().Name})";
                    failures.Add($"{target} #{c} ({what}): {e.GetType().Name}: {e.Message.Split('\n')[0]}");
                }
                tally[$"{target} {outcome}"] = tally.GetValueOrDefault($"{target} {outcome}") + 1;
                cases++;
            }
            File.WriteAllBytes(FileOf(target, folders[0].dir), folders[0].original);
            Assert.Equal("loads", Load(folders[0].dir));   // the unmutated file still loads: the harness is sound
        }
        foreach (var (k, v) in tally.OrderBy(kv => kv.Key)) output.WriteLine($"{k}: {v}");
        Assert.True(cases >= 1000, $"only {cases} cases");
        Assert.True(failures.Count == 0,
            $"seed {seed}: {failures.Count} of {cases} mutated files ended in an exception other than LinearLensException:\n" + string.Join("\n", failures.Take(25)));
        // Mutations must reach the checks: most of them end in an error line, and some still load.
        foreach (var target in Enum.GetValues<Target>())
            Assert.True(tally.GetValueOrDefault($"{target} error line") > perTarget / 4, $"{target}: too few mutations were rejected ({string.Join(", ", tally)})");
    }

    /// <summary>Opens the checkpoint, and when it loads runs a 3-token forward pass with its tokenizer too.</summary>
    static string Load(string dir)
    {
        using var ckpt = Checkpoint.Open(dir);
        var model = new Transformer<double>(ckpt);
        int[] ids = ckpt.Tokenizer is { } tok ? tok.Encode("hello world") : [1, 2, 3];
        ids = ids.Where(i => i < ckpt.Config.VocabSize).DefaultIfEmpty(0).ToArray();
        model.Validate(ids);
        model.Forward(ids);
        return "loads";
    }

    (string dir, byte[] original) Prepare(Target target, string preset)
    {
        string dir = Path.Combine(root, $"{target}-{preset}");
        var spec = RandomCheckpointSpec.Preset(preset);
        if (target == Target.Index) spec = spec with { Shards = 2 };
        RandomCheckpoint.Write(dir, spec, seed: 3, keepValues: false);
        if (target == Target.TokenizerConfig)
        {
            File.WriteAllText(Path.Combine(dir, "tokenizer.json"), TokenizerJson);
            File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), TokenizerConfigJson);
        }
        return (dir, File.ReadAllBytes(FileOf(target, dir)));
    }

    static string FileOf(Target t, string dir) => Path.Combine(dir, t switch
    {
        Target.SafetensorsHeader => "model.safetensors",
        Target.Index => SafetensorsWriter.IndexFileName,
        Target.Config => "config.json",
        _ => "tokenizer_config.json",
    });

    static (byte[] bytes, string what) Mutate(Target target, byte[] original, Random rng)
    {
        if (target != Target.SafetensorsHeader) return MutateJson(original, rng);
        // safetensors: mutate the header text, then write it back with its new length in front of the same data
        int headerLen = (int)BitConverter.ToUInt64(original, 0);
        var header = original.AsSpan(8, headerLen).ToArray();
        var data = original.AsSpan(8 + headerLen).ToArray();
        int kind = rng.Next(10);
        if (kind == 0)
        {
            // the length prefix itself: a flipped bit, or an extreme
            var copy = (byte[])original.Clone();
            ulong[] extremes = [0, 1, 7, (ulong)headerLen - 1, (ulong)headerLen + 1, (ulong)original.Length, ulong.MaxValue, long.MaxValue, 1UL << 32];
            ulong len = rng.Next(2) == 0 ? BitConverter.ToUInt64(copy, 0) ^ (1UL << rng.Next(64)) : extremes[rng.Next(extremes.Length)];
            BitConverter.GetBytes(len).CopyTo(copy, 0);
            return (copy, $"header length {len}");
        }
        if (kind == 1)
        {
            int cut = rng.Next(original.Length);
            return (original[..cut], $"file truncated to {cut} bytes");
        }
        if (kind == 2)
        {
            int extra = 1 + rng.Next(64);
            return ([.. original, .. new byte[extra]], $"{extra} bytes appended");
        }
        var (mutated, what) = MutateJson(header, rng);
        var padded = mutated.Concat(Enumerable.Repeat((byte)' ', (8 - mutated.Length % 8) % 8)).ToArray();
        return ([.. BitConverter.GetBytes((ulong)padded.Length), .. padded, .. data], "header: " + what);
    }

    static readonly string[] Replacements =
    [
        "null", "true", "false", "0", "-1", "1", "-0.0", "0.5", "1.5", "-2.5e-3", "1e9", "1000000000", "2147483647", "2147483648",
        "-2147483649", "4294967296", "9223372036854775807", "9223372036854775808", "-9223372036854775808", "18446744073709551616",
        "1e308", "-1e308", "1e400", "-1e400", "1e-400", "\"\"", "\"x\"", "\"F32\"", "\"BF16\"", "\"I64\"", "\"\\u0000\"", "\"\\ud800\"",
        "\"../x\"", "\"/etc/passwd\"", "\"model.safetensors\"", "[]", "[1]", "[-1]", "[0, 0]", "[1.5]", "[\"a\"]", "[null]", "[[1]]",
        "[9223372036854775807, 9223372036854775807]", "[4294967296, 4294967296, 4294967296]", "{}", "{\"content\": 5}", "{\"a\": 1}",
    ];

    /// <summary>One mutation of a JSON text: a value replaced by another type or an extreme, a key removed or renamed, or raw bytes damaged.</summary>
    static (byte[] bytes, string what) MutateJson(byte[] original, Random rng)
    {
        int kind = rng.Next(10);
        if (kind <= 5)
        {
            var node = JsonNode.Parse(original)!;
            var slots = new List<(JsonNode parent, string? key, int index, string path)>();
            Collect(node, "$", slots);
            if (slots.Count > 0)
            {
                var (parent, key, index, path) = slots[rng.Next(slots.Count)];
                string replacement = Replacements[rng.Next(Replacements.Length)];
                string what;
                if (kind == 5 && key is not null)
                {
                    parent.AsObject().Remove(key);
                    what = $"removed {path}";
                }
                else
                {
                    // A placeholder string is swapped for the raw replacement text, so that numbers such as 1e400 survive.
                    const string marker = "\"@@REPLACEMENT@@\"";
                    if (key is not null) parent[key] = "@@REPLACEMENT@@"; else parent[index] = "@@REPLACEMENT@@";
                    what = $"{path} = {replacement}";
                    string text = node.ToJsonString().Replace(marker, replacement);
                    return (Encoding.UTF8.GetBytes(text), what);
                }
                return (Encoding.UTF8.GetBytes(node.ToJsonString()), what);
            }
        }
        var b = (byte[])original.Clone();
        switch (kind)
        {
            case 6:
            {
                int flips = 1 + rng.Next(4);
                for (int i = 0; i < flips; i++) b[rng.Next(b.Length)] ^= (byte)(1 << rng.Next(8));
                return (b, $"{flips} bit flips");
            }
            case 7:
            {
                int at = rng.Next(b.Length);
                byte[] bad = rng.Next(3) switch { 0 => [0xFF], 1 => [0xC3], _ => [0xED, 0xA0, 0x80] };
                return ([.. b[..at], .. bad, .. b[at..]], $"invalid UTF-8 at {at}");
            }
            case 8:
            {
                int cut = rng.Next(b.Length);
                return (b[..cut], $"truncated to {cut} bytes");
            }
            default:
            {
                // a digit somewhere replaced by a run of nines: numbers grow past every integer type
                var digits = Enumerable.Range(0, b.Length).Where(i => b[i] is >= (byte)'0' and <= (byte)'9').ToArray();
                if (digits.Length == 0) return (b, "unchanged");
                int at = digits[rng.Next(digits.Length)];
                return ([.. b[..at], .. Encoding.ASCII.GetBytes(new string('9', 1 + rng.Next(25))), .. b[(at + 1)..]], $"nines at {at}");
            }
        }
    }

    static void Collect(JsonNode? node, string path, List<(JsonNode, string?, int, string)> slots)
    {
        if (node is JsonObject o)
            foreach (var (k, v) in o.ToList()) { slots.Add((o, k, -1, $"{path}.{k}")); Collect(v, $"{path}.{k}", slots); }
        else if (node is JsonArray a)
            for (int i = 0; i < a.Count; i++) { slots.Add((a, null, i, $"{path}[{i}]")); Collect(a[i], $"{path}[{i}]", slots); }
    }
}
