using System.Diagnostics;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using LinearLens.Analysis;
using LinearLens.Loading;
using LinearLens.Models;
using LinearLens.Reporting;
using LinearLens.Tests.Loading;
using LinearLens.Tests.Support;
using static LinearLens.Tests.Support.CliRunner;

namespace LinearLens.Tests.Cli;

/// <summary>Every kind of bad input ends in one clear line on stderr and exit code 2 — no stack trace.</summary>
public sealed class BadInputTests : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("ll-bad").FullName;

    public BadInputTests() => RandomCheckpoint.Write(dir, RandomCheckpointSpec.Preset("tiny-llama"), seed: 7, keepValues: false);

    public void Dispose() => Directory.Delete(dir, true);

    CliRunner.Result Generate(params string[] extra) =>
        CliRunner.Run(["generate", "--model", dir, "--max-new-tokens", "2", .. extra]);

    [Fact]
    public void AGoodCheckpointRuns()
    {
        var r = Generate("--token-ids", "1,2,3");
        Assert.Equal(0, r.ExitCode);
    }

    [Fact]
    public void MissingFolder() =>
        AssertOneLineError(CliRunner.Run("generate", "--model", Path.Combine(dir, "nope"), "--token-ids", "1"), "model folder not found");

    [Fact]
    public void MissingConfig()
    {
        File.Delete(Path.Combine(dir, "config.json"));
        AssertOneLineError(Generate("--token-ids", "1"), "config.json not found");
    }

    [Fact]
    public void MissingWeights()
    {
        File.Delete(Path.Combine(dir, "model.safetensors"));
        AssertOneLineError(Generate("--token-ids", "1"), "no model.safetensors");
    }

    [Fact]
    public void UnknownModelType()
    {
        EditConfig(c => c["model_type"] = "mamba");
        AssertOneLineError(Generate("--token-ids", "1"), "model_type 'mamba' is not supported");
    }

    [Fact]
    public void TruncatedSafetensors()
    {
        string f = Path.Combine(dir, "model.safetensors");
        var bytes = File.ReadAllBytes(f);
        File.WriteAllBytes(f, bytes[..(bytes.Length / 2)]);
        AssertOneLineError(Generate("--token-ids", "1"), "outside");
    }

    [Fact]
    public void HeaderLengthPastTheEnd()
    {
        string f = Path.Combine(dir, "model.safetensors");
        var bytes = File.ReadAllBytes(f);
        BitConverter.GetBytes((ulong)bytes.Length * 2).CopyTo(bytes, 0);
        File.WriteAllBytes(f, bytes);
        AssertOneLineError(Generate("--token-ids", "1"), "header length");
    }

    [Fact]
    public void HeaderOffsetsOutsideTheFile()
    {
        // Rewrite one tensor's end offset far past the data section (new header, same data).
        string f = Path.Combine(dir, "model.safetensors");
        var bytes = File.ReadAllBytes(f);
        int headerLen = (int)BitConverter.ToUInt64(bytes, 0);
        var node = JsonNode.Parse(Encoding.UTF8.GetString(bytes, 8, headerLen))!.AsObject();
        var first = node.First(p => p.Key != "__metadata__");
        first.Value!["data_offsets"]!.AsArray()[1] = 999_999_999_999L;
        string patched = node.ToJsonString();
        var newHeader = Encoding.UTF8.GetBytes(patched.PadRight((patched.Length + 7) / 8 * 8));
        using (var fs = File.Create(f))
        {
            fs.Write(BitConverter.GetBytes((ulong)newHeader.Length));
            fs.Write(newHeader);
            fs.Write(bytes.AsSpan(8 + headerLen));
        }
        AssertOneLineError(Generate("--token-ids", "1"), "outside");
    }

    [Fact]
    public void TensorShapeNotMatchingConfig()
    {
        EditConfig(c => c["intermediate_size"] = 97);
        AssertOneLineError(Generate("--token-ids", "1"), "has shape");
    }

    [Fact]
    public void EmptyText() => AssertOneLineError(Generate("--text", ""), "--text is empty");

    [Fact]
    public void TextWithoutTokenizer() => AssertOneLineError(Generate("--text", "hello"), "no tokenizer.json");

    [Fact]
    public void NoInputAtAll() => AssertOneLineError(Generate(), "no input");

    [Fact]
    public void MoreTokensThanMaxPositions()
    {
        EditConfig(c => c["max_position_embeddings"] = 4);
        AssertOneLineError(Generate("--token-ids", "1,2,3,4,5"), "max_position_embeddings");
    }

    [Fact]
    public void NonIntegerTokenId() => AssertOneLineError(Generate("--token-ids", "1,2.5,3"), "'2.5' (item 2) is not a non-negative integer");

    [Fact]
    public void TokenIdOutsideVocabulary() => AssertOneLineError(Generate("--token-ids", "1,101"), "outside the vocabulary");

    [Fact]
    public void UnknownDType() => AssertOneLineError(Generate("--token-ids", "1", "--dtype", "float16"), "--dtype 'float16'");

    [Fact]
    public void UnknownOption() => AssertOneLineError(Generate("--token-ids", "1", "--frobnicate"), "frobnicate");

    [Fact]
    public void ConfigNotJson()
    {
        File.WriteAllText(Path.Combine(dir, "config.json"), "{ not json");
        AssertOneLineError(Generate("--token-ids", "1"), "not valid JSON");
    }

    // ---------------------------------------------------------------------------------------------------
    // Header and JSON value types (issue #15): every value of the wrong JSON type is one line naming file and key.

    [Theory]
    [InlineData("shape", "[\"64\", 101]", "shape[0] is the string")]
    [InlineData("shape", "[64.5, 101]", "shape[0] is the number 64.5")]
    [InlineData("shape", "null", "shape is null")]
    [InlineData("shape", "[4294967296, 4294967296, 4294967296]", "more elements than any file can hold")]
    [InlineData("data_offsets", "[0.5, 100]", "data_offsets[0] is the number 0.5")]
    [InlineData("data_offsets", "\"0\"", "data_offsets is the string")]
    [InlineData("data_offsets", "[0]", "lie outside")]
    [InlineData("dtype", "null", "dtype is null")]
    [InlineData("dtype", "{}", "dtype is an object")]
    [InlineData("dtype", "\"I64\"", "has dtype I64")]
    public void SafetensorsValueOfTheWrongType(string key, string raw, string message)
    {
        PatchHeader(h => SetRaw(h, FirstTensor(h), key, raw));
        AssertOneLineError(Generate("--token-ids", "1"), message);
    }

    [Fact]
    public void SafetensorsEntryThatIsNotAnObject()
    {
        PatchHeader(h => h[FirstTensor(h)] = "F32");
        AssertOneLineError(Generate("--token-ids", "1"), "is the string \"F32\" where an object with dtype, shape and data_offsets was expected");
    }

    [Fact]
    public void SafetensorsNameNotUtf8()
    {
        // a tensor name with a byte that is no UTF-8: the header is rejected as text before any JSON is read
        PatchHeaderBytes(b => { int i = Encoding.UTF8.GetString(b).IndexOf("model.norm.weight"); b[i] = 0xFF; });
        AssertOneLineError(Generate("--token-ids", "1"), "not valid UTF-8");
    }

    [Fact]
    public void SafetensorsNameThatIsALoneSurrogate()
    {
        PatchHeaderText(t => t.Replace("\"model.norm.weight\"", "\"\\ud800\""));
        AssertOneLineError(Generate("--token-ids", "1"), "not a valid Unicode string");
    }

    [Fact]
    public void SafetensorsOverlappingTensors()
    {
        // two tensors of the same size exchange nothing but one points at the other's bytes: an overlap and a hole
        PatchHeader(h =>
        {
            var a = h["model.layers.0.input_layernorm.weight"]!["data_offsets"]!.AsArray();
            var b = h["model.layers.0.post_attention_layernorm.weight"]!["data_offsets"]!.AsArray();
            b[0] = a[0]!.GetValue<long>(); b[1] = a[1]!.GetValue<long>();
        });
        AssertOneLineError(Generate("--token-ids", "1"), "overlaps");
    }

    [Fact]
    public void SafetensorsHoleInTheDataSection()
    {
        PatchHeader(h => h.Remove("model.layers.1.mlp.up_proj.weight"));
        AssertOneLineError(Generate("--token-ids", "1"), "belong to no tensor");
    }

    [Fact]
    public void SafetensorsTrailingBytes()
    {
        File.AppendAllText(Path.Combine(dir, "model.safetensors"), "garbage!");
        AssertOneLineError(Generate("--token-ids", "1"), "trailing bytes");
    }

    [Theory]
    [InlineData("5", "is the number 5 where a shard file name was expected")]
    [InlineData("null", "is null where a shard file name was expected")]
    [InlineData("\"../model.safetensors\"", "is not a plain file name")]
    [InlineData("\"\\ud800\"", "not a valid Unicode string")]
    public void IndexWeightMapValueOfTheWrongType(string raw, string message)
    {
        string sharded = Path.Combine(dir, "sharded");
        RandomCheckpoint.Write(sharded, RandomCheckpointSpec.Preset("tiny-llama") with { Shards = 2 }, seed: 7, keepValues: false);
        string index = Path.Combine(sharded, SafetensorsWriter.IndexFileName);
        var o = JsonNode.Parse(File.ReadAllText(index))!.AsObject();
        var map = o["weight_map"]!.AsObject();
        string key = map.First().Key;
        map[key] = "@@";
        File.WriteAllText(index, o.ToJsonString().Replace("\"@@\"", raw));
        AssertOneLineError(CliRunner.Run("generate", "--model", sharded, "--token-ids", "1"), message);
    }

    [Theory]
    [InlineData("eos_token_id", "[2, \"3\"]", "'eos_token_id'[1] should be an integer")]
    [InlineData("eos_token_id", "[2, 3.5]", "'eos_token_id'[1] should be an integer")]
    [InlineData("eos_token_id", "{\"id\": 2}", "'eos_token_id' should be an integer")]
    [InlineData("eos_token_id", "-5", "eos_token_id -5 must be a token id")]
    [InlineData("hidden_size", "\"64\"", "'hidden_size' should be an integer")]
    [InlineData("rms_norm_eps", "1e400", "'rms_norm_eps' should be a finite number")]
    [InlineData("model_type", "\"\\ud800\"", "not a valid Unicode string")]
    [InlineData("rope_scaling", "{\"rope_type\": 5}", "'rope_type' should be a string")]
    public void ConfigValueOfTheWrongType(string key, string raw, string message)
    {
        EditConfigRaw(key, raw);
        AssertOneLineError(Generate("--token-ids", "1"), message);
    }

    [Theory]
    [InlineData("[\"sliding_attention\", 3, \"full_attention\"]", "layer_types[1] = 3 (expected")]
    [InlineData("[\"sliding_attention\", null, \"full_attention\"]", "layer_types[1] = null (expected")]
    [InlineData("[\"sliding_attention\", \"\\ud800\", \"full_attention\"]", "not a valid Unicode string")]
    public void LayerTypesEntriesThatAreNotStrings(string raw, string message)
    {
        string gemma = Path.Combine(dir, "gemma");
        RandomCheckpoint.Write(gemma, RandomCheckpointSpec.Preset("tiny-gemma3"), seed: 7, keepValues: false);
        EditConfigRaw("layer_types", raw, gemma);
        AssertOneLineError(CliRunner.Run("generate", "--model", gemma, "--token-ids", "1"), message);
    }

    [Theory]
    [InlineData("bos_token", "5", "'bos_token' should be a token text")]
    [InlineData("eos_token", "{\"content\": 5}", "'eos_token' should be a token text")]
    [InlineData("tokenizer_class", "[]", "'tokenizer_class' should be a string")]
    [InlineData("add_bos_token", "\"yes\"", "'add_bos_token' should be true or false")]
    [InlineData("bos_token", "\"\\ud800\"", "not a valid Unicode string")]
    public void TokenizerConfigSpecialTokenOfTheWrongType(string key, string raw, string message)
    {
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), MutationTests.TokenizerJson);
        var o = JsonNode.Parse(MutationTests.TokenizerConfigJson)!.AsObject();
        o[key] = "@@";
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), o.ToJsonString().Replace("\"@@\"", raw));
        AssertOneLineError(Generate("--text", "hello world"), message);
    }

    [Fact]
    public void TokenizerConfigThatIsNotAnObject()
    {
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), MutationTests.TokenizerJson);
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), "[1, 2]");
        AssertOneLineError(Generate("--text", "hello world"), "where a JSON object was expected");
    }

    // ---------------------------------------------------------------------------------------------------
    // Config values out of range: each stops at loading with the key named.

    [Theory]
    [InlineData("num_hidden_layers", "-1", "'num_hidden_layers' = -1 is outside")]
    [InlineData("num_hidden_layers", "1000000000", "'num_hidden_layers' = 1000000000 is outside")]
    [InlineData("num_hidden_layers", "0", "num_hidden_layers = 0 must be positive")]
    [InlineData("hidden_size", "2147483647", "'hidden_size' = 2147483647 is outside")]
    [InlineData("rope_theta", "0", "rope_theta = 0 must be a finite number > 0")]
    [InlineData("rope_theta", "-10000", "rope_theta = -10000 must be a finite number > 0")]
    [InlineData("rms_norm_eps", "-1e-6", "rms_norm_eps = -1E-06 must be a finite number ≥ 0")]
    [InlineData("rope_scaling", "{\"rope_type\": \"linear\", \"factor\": 0}", "RoPE scaling factor = 0 must be a finite number > 0")]
    [InlineData("rope_scaling", "{\"rope_type\": \"llama3\", \"factor\": 8, \"low_freq_factor\": 4, \"high_freq_factor\": 4}", "must exceed low_freq_factor")]
    [InlineData("partial_rotary_factor", "0", "partial_rotary_factor = 0 must lie in (0, 1]")]
    [InlineData("bos_token_id", "-1", "'bos_token_id' = -1 is outside")]
    public void ConfigValueOutOfRange(string key, string raw, string message)
    {
        EditConfigRaw(key, raw);
        AssertOneLineError(Generate("--token-ids", "1"), message);
    }

    [Theory]
    [InlineData("tiny-qwen3", "0")]
    [InlineData("tiny-qwen3", "-4")]
    [InlineData("tiny-gemma3", "0")]
    public void SlidingWindowNotPositive(string preset, string raw)
    {
        string m = Path.Combine(dir, preset);
        RandomCheckpoint.Write(m, RandomCheckpointSpec.Preset(preset), seed: 7, keepValues: false);
        EditConfig(c => { c["use_sliding_window"] = true; c["max_window_layers"] = 0; }, m);
        EditConfigRaw("sliding_window", raw, m);
        var r = CliRunner.Run("generate", "--model", m, "--token-ids", "1,2,3");
        AssertOneLineError(r, raw.StartsWith('-') ? "'sliding_window' = -4 is outside" : "sliding_window = 0 must be positive");
    }

    // ---------------------------------------------------------------------------------------------------
    // Numbers from files never drive an allocation: the memory a run needs is estimated first.

    [Fact]
    public void RunNeedingMoreMemoryThanAvailableStopsBeforeAllocating()
    {
        EditConfig(c => c["max_position_embeddings"] = int.MaxValue);
        var r = CliRunner.Run("generate", "--model", dir, "--token-ids", "1", "--max-new-tokens", "2000000000");   // a KV cache of 2·10⁹ positions
        AssertOneLineError(r, "this run would need about");
        Assert.Contains("KV cache", r.Stderr);
    }

    [Fact]
    public void JacobianOfTooManyTokensStopsWithTheEstimate()
    {
        EditConfig(c => c["max_position_embeddings"] = 1_000_000);
        string ids = string.Join(",", Enumerable.Repeat("1", 300_000));   // the forward pass's n² scores and the ordinary trace's H·n² probabilities: terabytes
        var r = CliRunner.Run("jacobian", "--model", dir, "--token-ids", ids, "--nonlinear");
        AssertOneLineError(r, "this run would need about");
        Assert.Contains("frozen trace", r.Stderr);
    }

    [Fact]
    public void EstimateCountsTheFrozenTraceAndJ()
    {
        var c = ModelConfig.Parse(JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "config.json"))).RootElement);
        var plain = ResourceEstimate.Estimate(c, new RunShape { Tokens = 100, ElementSize = 8 }).bytes;
        var traced = ResourceEstimate.Estimate(c, new RunShape { Tokens = 100, ElementSize = 8, Trace = true, FullJacobians = 1 }).bytes;
        // J alone is d·n·d·8 = 64·100·64·8 bytes; the trace holds H·n² probabilities per layer
        Assert.True(traced - plain >= 64.0 * 100 * 64 * 8 + 2 * 4 * 100 * 100 * 8, $"{plain} → {traced}");
        // past the trace's probability budget it keeps q and k instead: linear in n, as FrozenTrace allocates
        double Trace(int n) => ResourceEstimate.Estimate(c, new RunShape { Tokens = n, ElementSize = 8, Trace = true }).bytes
            - ResourceEstimate.Estimate(c, new RunShape { Tokens = n, ElementSize = 8 }).bytes;
        Assert.True(Trace(40_000) < 2.5 * Trace(20_000), $"{Trace(20_000)} → {Trace(40_000)}");
        Assert.Throws<LinearLensException>(() => ResourceEstimate.Check(c, new RunShape { Tokens = 100, ElementSize = 8 }, available: 1000));
        ResourceEstimate.Check(c, new RunShape { Tokens = 100, ElementSize = 8 }, available: 1L << 40);
    }

    // ---------------------------------------------------------------------------------------------------
    // Non-finite numbers.

    [Fact]
    public void NanWeightsGiveOneErrorLineInAnalyze()
    {
        PoisonEmbeddings(float.NaN);
        AssertOneErrorLine(CliRunner.Run("analyze", "--model", dir, "--token-ids", "1,2,3", "--no-ordinary"));
        AssertOneErrorLine(CliRunner.Run("analyze", "--model", dir, "--token-ids", "1,2,3", "--method", "matrix-free"));
    }

    /// <summary>Exit 2 and exactly one error line (progress lines such as "method: …" may precede it), no stack trace, no result.</summary>
    static void AssertOneErrorLine(CliRunner.Result r)
    {
        Assert.Equal(2, r.ExitCode);
        Assert.Single(r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries), l => l.StartsWith("error: "));
        Assert.DoesNotContain("   at ", r.Stderr);
        Assert.Equal("", r.Stdout);
    }

    [Theory]
    [InlineData("generate", "--json")]
    [InlineData("jacobian", "--json")]
    public void NanWeightsNeverCrashTheJsonWriter(string command, string flag)
    {
        PoisonEmbeddings(float.NaN);
        var r = CliRunner.Run(command, "--model", dir, "--token-ids", "1,2,3", flag);
        // either the forward pass stops on the non-finite state (one error line), or the JSON is valid with null for NaN
        if (r.ExitCode == 2) { AssertOneErrorLine(r); return; }
        Assert.Equal(0, r.ExitCode);
        JsonNode.Parse(r.Stdout);
        Assert.DoesNotContain("NaN", r.Stdout);
    }

    [Fact]
    public void HugeLambdaNeverCrashesTheJsonWriter()
    {
        var r = CliRunner.Run("steer", "--model", dir, "--concept-token-ids", "5,6", "--token-ids", "1,2", "--lambda", "1e300", "--max-new-tokens", "2", "--json");
        if (r.ExitCode == 2) { AssertOneErrorLine(r); return; }
        Assert.Equal(0, r.ExitCode);
        var o = JsonNode.Parse(r.Stdout)!;
        Assert.Equal(1e300, o["results"]![0]!["lambda"]!.GetValue<double>());
    }

    [Fact]
    public void NonFiniteNumbersAreWrittenAsNull()
    {
        var o = new JsonObject { ["nan"] = double.NaN, ["inf"] = double.PositiveInfinity, ["f"] = float.NegativeInfinity, ["ok"] = 1.5, ["list"] = new JsonArray(1.0, double.NaN) };
        Assert.Equal("{\"nan\":null,\"inf\":null,\"f\":null,\"ok\":1.5,\"list\":[1,null]}", JsonText.Write(o));
    }

    [Fact]
    public void SvdOfNanIsOneClearError()
    {
        var a = new double[16];
        a[5] = double.NaN;
        var e = Assert.Throws<LinearLensException>(() => Svd.Dense(a, 4, 4, 2));
        Assert.Contains("NaN", e.Message);
        Assert.Throws<LinearLensException>(() => Svd.SymmetricEigen(a, 4));
    }

    // ---------------------------------------------------------------------------------------------------
    // Options and output paths are checked before the work starts.

    [Fact]
    public void OutNamingAFile()
    {
        string file = Path.Combine(dir, "a-file");
        File.WriteAllText(file, "x");
        foreach (var cmd in new[] { "jacobian", "analyze" })
        {
            var r = CliRunner.Run(cmd, "--model", dir, "--token-ids", "1,2", "--out", file);
            AssertOneLineError(r, "is a file; give a folder");
            Assert.DoesNotContain("already exists", r.Stderr);
        }
        AssertOneLineError(CliRunner.Run("random-checkpoint", "--preset", "tiny-llama", "--out", file), "is a file");
    }

    [Fact]
    public void OutThatCannotBeWritten()
    {
        string file = Path.Combine(dir, "a-file");
        File.WriteAllText(file, "x");
        var r = CliRunner.Run("analyze", "--model", dir, "--token-ids", "1,2", "--out", Path.Combine(file, "sub"));
        AssertOneLineError(r, "cannot be created");
        Assert.DoesNotContain("analysis:", r.Stderr);   // no progress: nothing was computed
    }

    [Fact]
    public void OutInAFolderThatRefusesFiles()
    {
        // /proc refuses new files even for root, so this holds in CI, where tests run as root (chmod would not stop root)
        if (!OperatingSystem.IsLinux()) return;
        var r = CliRunner.Run("jacobian", "--model", dir, "--token-ids", "1,2", "--out", "/proc/linearlens-out");
        AssertOneLineError(r, "--out /proc/linearlens-out cannot be written");
    }

    [Fact]
    public void AttributeOutsideTheVocabularyBeforeTheAnalysis()
    {
        var r = CliRunner.Run("analyze", "--model", dir, "--token-ids", "1,2", "--attribute", "5000");
        AssertOneLineError(r, "--attribute 5000 is outside the vocabulary 0…100");
    }

    [Theory]
    [InlineData("jacobian")]
    [InlineData("analyze")]
    public void ComponentsBeyondTheHiddenSizeAreRejected(string cmd) =>
        AssertOneLineError(CliRunner.Run(cmd, "--model", dir, "--token-ids", "1,2", "--components", "100000000"), "--components 100000000 exceeds hidden_size 64");

    [Theory]
    [InlineData("--m", "0")]
    [InlineData("--n", "-3")]
    public void BenchGemmSizeNotPositive(string option, string value) =>
        AssertOneLineError(CliRunner.Run("bench", "gemm", option, value), $"{option} {value} must be at least 1");

    // ---------------------------------------------------------------------------------------------------
    // Messages in our words.

    [Fact]
    public void UnknownCommand()
    {
        var r = CliRunner.Run("frobnicate");
        AssertOneLineError(r, "'frobnicate' is not a command of linearlens; use one of generate, jacobian, analyze");
        Assert.DoesNotContain("Required command", r.Stderr);
    }

    [Fact]
    public void NoCommand() => AssertOneLineError(CliRunner.Run(), "no command given");

    [Theory]
    [InlineData("--max-new-tokens", "abc", "--max-new-tokens 'abc' is not a whole number")]
    [InlineData("--max-new-tokens", "99999999999", "--max-new-tokens '99999999999' is not a whole number")]
    public void BadIntegerNamesTheOption(string option, string value, string message)
    {
        var r = CliRunner.Run("generate", "--model", dir, "--token-ids", "1", option, value);
        AssertOneLineError(r, message);
        Assert.DoesNotContain("System.", r.Stderr);
    }

    [Fact]
    public void BadNullableIntegerHasNoTypeName()
    {
        var r = CliRunner.Run("jacobian", "--model", dir, "--token-ids", "1", "--components", "1e3");
        AssertOneLineError(r, "--components '1e3' is not a whole number");
        Assert.DoesNotContain("Nullable", r.Stderr);
    }

    // ---------------------------------------------------------------------------------------------------
    // Output files are complete or absent (process-level: a real file-size limit, a real SIGINT).

    [Fact]
    public void FailedWriteLeavesNoFileBehind()
    {
        string target = Path.Combine(dir, "out.bin");
        File.WriteAllText(target, "old");
        Assert.Throws<InvalidOperationException>(() => AtomicFile.Write(target, s => { s.Write(new byte[100_000]); throw new InvalidOperationException("boom"); }));
        Assert.Equal("old", File.ReadAllText(target));   // the earlier file is untouched
        Assert.Empty(Directory.GetFiles(dir, ".out.tmp-*"));
        AtomicFile.Write(target, s => s.Write("new"u8));
        Assert.Equal("new", File.ReadAllText(target));
    }

    [Fact]
    public void FileSizeLimitLeavesNoTruncatedNpy()
    {
        if (!OperatingSystem.IsLinux()) return;
        string outDir = Path.Combine(dir, "j");
        // 32 KiB per file: J [64, 2, 64] in float64 is 64 KiB, so jacobian.npy cannot be written (disk full, in effect)
        var r = RunProcess($"ulimit -f 32; trap '' XFSZ; exec dotnet {Cli} jacobian --model {dir} --token-ids 1,2 --method full --out {outDir}", 60_000);
        Assert.Equal(2, r.code);
        Assert.Contains("error: could not write", r.stderr);
        Assert.DoesNotContain("   at ", r.stderr);
        Assert.False(File.Exists(Path.Combine(outDir, "jacobian.npy")));
        Assert.Empty(Directory.GetFiles(outDir, ".*"));
    }

    [Fact]
    public void FileSizeLimitLeavesOnlyCompleteAnalysisFiles()
    {
        if (!OperatingSystem.IsLinux()) return;
        string outDir = Path.Combine(dir, "a");
        // 64 KiB per file: analysis.json of this model fits, the larger PNGs do not
        var r = RunProcess($"ulimit -f 64; trap '' XFSZ; exec dotnet {Cli} analyze --model {dir} --token-ids 1,2,3 --out {outDir}", 120_000);
        Assert.Equal(2, r.code);
        Assert.Single(r.stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries), l => l.StartsWith("error: could not write"));
        Assert.Empty(Directory.GetFiles(outDir, ".*"));
        foreach (var png in Directory.GetFiles(outDir, "*.png"))
            Assert.True(File.ReadAllBytes(png).AsSpan()[^8..].SequenceEqual(new byte[] { 0x49, 0x45, 0x4E, 0x44, 0xAE, 0x42, 0x60, 0x82 }), $"{png} is truncated (no IEND chunk)");
        if (File.Exists(Path.Combine(outDir, "analysis.json"))) JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, "analysis.json")));

        string ckpt = Path.Combine(dir, "rc");
        r = RunProcess($"ulimit -f 64; trap '' XFSZ; exec dotnet {Cli} random-checkpoint --preset tiny-llama --out {ckpt}", 60_000);
        Assert.Equal(2, r.code);
        Assert.False(File.Exists(Path.Combine(ckpt, "model.safetensors")));
        Assert.Empty(Directory.GetFiles(ckpt, ".*"));
    }

    [Fact]
    public void CtrlCExits130PromptlyAndLeavesNoPartialFile()
    {
        if (!OperatingSystem.IsLinux()) return;
        string outDir = Path.Combine(dir, "big");
        var psi = new ProcessStartInfo("dotnet", [Cli, "random-checkpoint", "--preset", "qwen3-0.6b", "--out", outDir]) { RedirectStandardError = true, RedirectStandardOutput = true };
        using var p = Process.Start(psi)!;
        var stderr = p.StandardError.ReadToEndAsync();
        var sw = Stopwatch.StartNew();
        // wait until the checkpoint is being written under its temporary name
        while (!(Directory.Exists(outDir) && Directory.GetFiles(outDir, ".model.tmp-*").Length > 0) && !p.HasExited && sw.Elapsed.TotalSeconds < 60) Thread.Sleep(20);
        Assert.False(p.HasExited, "random-checkpoint finished before it could be interrupted");
        Process.Start("kill", ["-INT", p.Id.ToString()])!.WaitForExit();
        var sent = Stopwatch.StartNew();
        Assert.True(p.WaitForExit(10_000), "no exit within 10 s of SIGINT");
        double seconds = sent.Elapsed.TotalSeconds;
        Assert.Equal(130, p.ExitCode);
        Assert.Equal("error: interrupted (Ctrl-C); unfinished output files were removed", stderr.Result.Trim());
        Assert.False(File.Exists(Path.Combine(outDir, "model.safetensors")));
        Assert.Empty(Directory.GetFiles(outDir, ".*"));
        Assert.True(seconds < 5, $"{seconds:F1} s from SIGINT to exit");
    }

    static string Cli => Path.Combine(AppContext.BaseDirectory, "LinearLens.Cli.dll");

    static (int code, string stdout, string stderr) RunProcess(string bash, int timeoutMs)
    {
        var psi = new ProcessStartInfo("bash", ["-c", bash]) { RedirectStandardError = true, RedirectStandardOutput = true };
        psi.Environment["DOTNET_EnableWriteXorExecute"] = "0";   // the runtime's double-mapped code pages count against ulimit -f
        using var p = Process.Start(psi)!;
        var o = p.StandardOutput.ReadToEndAsync();
        var e = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(timeoutMs)) { p.Kill(); throw new TimeoutException(bash); }
        return (p.ExitCode, o.Result, e.Result);
    }

    // ---------------------------------------------------------------------------------------------------

    static string FirstTensor(JsonObject h) => h.First(p => p.Key != "__metadata__").Key;

    static void SetRaw(JsonObject h, string tensor, string key, string raw) => h[tensor]![key] = "@@" + raw;

    /// <summary>Rewrites the safetensors header (same data); values set to "@@raw" are written as raw JSON text.</summary>
    void PatchHeader(Action<JsonObject> edit) => PatchHeaderText(t =>
    {
        var node = JsonNode.Parse(t)!.AsObject();
        edit(node);
        return System.Text.RegularExpressions.Regex.Replace(node.ToJsonString(), "\"@@((?:[^\"\\\\]|\\\\.)*)\"", m => System.Text.RegularExpressions.Regex.Unescape(m.Groups[1].Value));
    });

    void PatchHeaderText(Func<string, string> edit) => PatchHeaderBytes(b => Encoding.UTF8.GetBytes(edit(Encoding.UTF8.GetString(b))), replace: true);

    void PatchHeaderBytes(Action<byte[]> edit) => PatchHeaderBytes(b => { edit(b); return b; }, replace: true);

    void PatchHeaderBytes(Func<byte[], byte[]> edit, bool replace)
    {
        string f = Path.Combine(dir, "model.safetensors");
        var bytes = File.ReadAllBytes(f);
        int headerLen = (int)BitConverter.ToUInt64(bytes, 0);
        var header = edit(bytes.AsSpan(8, headerLen).ToArray());
        var padded = header.Concat(Enumerable.Repeat((byte)' ', (8 - header.Length % 8) % 8)).ToArray();
        using var fs = File.Create(f);
        fs.Write(BitConverter.GetBytes((ulong)padded.Length));
        fs.Write(padded);
        fs.Write(bytes.AsSpan(8 + headerLen));
    }

    /// <summary>Overwrites every value of the (F32) embedding matrix with <paramref name="value"/>.</summary>
    void PoisonEmbeddings(float value)
    {
        string f = Path.Combine(dir, "model.safetensors");
        var bytes = File.ReadAllBytes(f);
        int headerLen = (int)BitConverter.ToUInt64(bytes, 0);
        var h = JsonNode.Parse(Encoding.UTF8.GetString(bytes, 8, headerLen))!;
        var off = h["model.embed_tokens.weight"]!["data_offsets"]!.AsArray();
        for (long i = off[0]!.GetValue<long>(); i < off[1]!.GetValue<long>(); i += 4)
            BitConverter.GetBytes(value).CopyTo(bytes, 8 + headerLen + i);
        File.WriteAllBytes(f, bytes);
    }

    void EditConfigRaw(string key, string raw, string? folder = null)
    {
        string path = Path.Combine(folder ?? dir, "config.json");
        var c = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        c[key] = "@@";
        File.WriteAllText(path, c.ToJsonString().Replace("\"@@\"", raw));
    }

    void EditConfig(Action<JsonObject> edit, string? folder = null)
    {
        string path = Path.Combine(folder ?? dir, "config.json");
        var c = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        edit(c);
        File.WriteAllText(path, c.ToJsonString());
    }
}
