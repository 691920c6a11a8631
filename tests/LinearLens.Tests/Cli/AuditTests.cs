using LinearLens.Numerics;
using System.Text.Json.Nodes;
using LinearLens.Models;
using LinearLens.Reporting;
using LinearLens.Tests.Support;
using static LinearLens.Tests.Support.CliRunner;

namespace LinearLens.Tests.Cli;

/// <summary>Bad input found by a black-box audit of the CLI: each is one clear line on stderr and exit code 2, or the right answer.</summary>
public sealed class AuditTests : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("ll-audit").FullName;

    public void Dispose() => Directory.Delete(dir, true);

    /// <summary>A folder as `analyze --out` leaves it (a synthetic report, no figures), its analysis.json edited.</summary>
    string AnalysisFolderWith(Action<JsonObject> edit)
    {
        string folder = Path.Combine(dir, "analysis");
        AnalysisFolder.Write(SyntheticReport.Make(5), folder, figures: false);
        string path = Path.Combine(folder, AnalysisFolder.JsonName);
        var a = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        edit(a);
        File.WriteAllText(path, a.ToJsonString());
        return folder;
    }

    [Theory]
    [InlineData("reconstruction", "\"x\"")]
    [InlineData("reconstruction", null)]
    [InlineData("attribution", "[1]")]
    [InlineData("per_token", "[null]")]
    [InlineData("layer_sweep", "[\"layer\"]")]
    public void ReportOfAnAnalysisJsonWithAValueOfTheWrongType(string key, string? raw)
    {
        string folder = AnalysisFolderWith(a => { if (raw is null) a.Remove(key); else a[key] = JsonNode.Parse(raw); });
        AssertOneLineError(CliRunner.Run("report", folder), "is not an analysis.json written by LinearLens");
        Assert.False(File.Exists(Path.Combine(folder, HtmlReport.FileName + ".tmp")));
    }

    [Theory]
    [InlineData("{}")]
    [InlineData("{\"count\": 1, \"prompts\": [1]}")]
    [InlineData("{\"count\": 1, \"prompts\": [{}]}")]
    [InlineData("{\"count\": \"one\"}")]
    public void ReportOfASummaryJsonWithAValueOfTheWrongType(string raw)
    {
        File.WriteAllText(Path.Combine(dir, BatchSummary.JsonName), raw);
        AssertOneLineError(CliRunner.Run("report", dir), "is not a summary.json written by LinearLens");
        Assert.False(File.Exists(Path.Combine(dir, BatchSummary.HtmlName)));
    }

    // ---------------------------------------------------------------------------------------------------
    // analyze --prompts resumes only what this run would have made.

    CliRunner.Result Prompts(string model, string outDir, params string[] extra)
    {
        string file = Path.Combine(dir, "prompts.txt");
        File.WriteAllText(file, "Once upon a time\nThe dog\n");
        return CliRunner.Run(["analyze", "--model", model, "--prompts", file, "--out", outDir, "--layers", "5", "--components", "2", "--no-ordinary", .. extra]);
    }

    [SharedFact("models", "stories260K", "gguf", "stories260K.gguf")]
    public void PromptsRunOfAnotherModelIntoTheSameFolderRedoesEveryPrompt()
    {
        // The same folder, first the Hugging Face checkpoint, then a GGUF file: the second run's summary is the GGUF's,
        // not the first model's analyses relabelled as done.
        string outDir = Path.Combine(dir, "out"), gguf = SharedData.Path_("models", "stories260K", "gguf", "stories260K.gguf");
        var r = Prompts(SharedData.Stories260K, outDir);
        Assert.True(r.ExitCode == 0, r.Stderr);
        r = Prompts(gguf, outDir);
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Contains("2 prompts: 2 analysed, 0 already done", r.Stdout);
        var summary = JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, BatchSummary.JsonName)))!;
        Assert.Equal(Path.GetFullPath(gguf), summary["model_path"]!.GetValue<string>());
        var prompt = JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, "prompt-0001", AnalysisFolder.JsonName)))!;
        Assert.Equal(Path.GetFullPath(gguf), prompt["model_path"]!.GetValue<string>());
        // the same model again: nothing redone
        r = Prompts(gguf, outDir);
        Assert.Contains("2 prompts: 0 analysed, 2 already done", r.Stdout);
    }

    [SharedFact("models", "stories260K", "hf", "model.safetensors")]
    public void PromptsRunWithFiguresRedoesFoldersThatHaveNone()
    {
        string outDir = Path.Combine(dir, "out");
        var r = Prompts(SharedData.Stories260K, outDir);
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.False(File.Exists(Path.Combine(outDir, "prompt-0001", "attribution.png")));
        r = Prompts(SharedData.Stories260K, outDir, "--figures");
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Contains("2 prompts: 2 analysed, 0 already done", r.Stdout);
        Assert.True(File.Exists(Path.Combine(outDir, "prompt-0001", "attribution.png")));
        Assert.True(File.Exists(Path.Combine(outDir, "prompt-0002", "jacobian_heatmap.png")));
    }

    [Fact]
    public void AnAnalysisWrittenWithoutFiguresRemovesTheFiguresOfAnEarlierOne()
    {
        string folder = Path.Combine(dir, "analysis");
        AnalysisFolder.Write(SyntheticReport.Make(4), folder, figures: true);
        Assert.NotEmpty(Directory.EnumerateFiles(folder, "*.png"));
        AnalysisFolder.Write(SyntheticReport.Make(4, seed: 2), folder, figures: false);
        Assert.Empty(Directory.EnumerateFiles(folder, "*.png"));
        // and `linearlens report` then shows no figure of the earlier analysis
        var r = CliRunner.Run("report", folder);
        Assert.Equal(0, r.ExitCode);
        Assert.DoesNotContain("data:image/png", File.ReadAllText(Path.Combine(folder, HtmlReport.FileName)));
    }

    // ---------------------------------------------------------------------------------------------------
    // Paths of the wrong kind, and lists with repeats.

    string TinyModel()
    {
        string model = Path.Combine(dir, "model");
        if (!Directory.Exists(model)) RandomCheckpoint.Write(model, RandomCheckpointSpec.Preset("tiny-llama"), seed: 3, keepValues: false);
        return model;
    }

    [Fact]
    public void ModelNamingAFileOfAModelFolderNamesTheFolder()
    {
        string model = TinyModel();
        AssertOneLineError(CliRunner.Run("generate", "--model", Path.Combine(model, "config.json"), "--token-ids", "1"),
            $"is a file of a model folder; pass --model the folder itself: {Path.GetFullPath(model)}");
    }

    [Fact]
    public void ModelNamingAFileThatIsNoGguf()
    {
        string file = Path.Combine(dir, "model.bin");
        File.WriteAllText(file, "weights");
        AssertOneLineError(CliRunner.Run("generate", "--model", file, "--token-ids", "1"), "is a file but not a .gguf file");
    }

    [Fact]
    public void PromptsNamingAFolder()
    {
        string folder = Directory.CreateDirectory(Path.Combine(dir, "prompts")).FullName;
        AssertOneLineError(CliRunner.Run("analyze", "--model", TinyModel(), "--prompts", folder, "--out", Path.Combine(dir, "out")), "is a folder; give a text file");
    }

    [Fact]
    public void LayersGivenTwiceAreRejected() =>
        AssertOneLineError(CliRunner.Run("analyze", "--model", TinyModel(), "--token-ids", "1,2", "--layers", "2,1,2", "--components", "2"),
            "--layers '2,1,2' names layer 2 more than once");

    [Fact]
    public void LayersOutOfOrderAreSweptInOrderAndThePathEndsAtTheDeepest()
    {
        var r = CliRunner.Run("analyze", "--model", TinyModel(), "--token-ids", "1,2", "--layers", "2,1", "--components", "2", "--no-ordinary", "--json");
        Assert.True(r.ExitCode == 0, r.Stderr);
        var a = JsonNode.Parse(r.Stdout)!;
        Assert.Equal([1, 2], a["options"]!["layers"]!.AsArray().Select(x => x!.GetValue<int>()));
        Assert.Equal([1, 2], a["path"]!.AsArray().Select(x => x!["layer"]!.GetValue<int>()));
    }

    [Fact]
    public void RandomCheckpointReplacesAnExistingGgufFile()
    {
        string file = Path.Combine(dir, "tiny.gguf");
        File.WriteAllText(file, "old");
        var r = CliRunner.Run("random-checkpoint", "--preset", "tiny-llama", "--format", "gguf", "--out", file);
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Equal("GGUF", System.Text.Encoding.ASCII.GetString(File.ReadAllBytes(file), 0, 4));
    }

    [Fact]
    public void RandomCheckpointGgufNameWithoutGgufFormat()
    {
        string file = Path.Combine(dir, "tiny.gguf");
        AssertOneLineError(CliRunner.Run("random-checkpoint", "--preset", "tiny-llama", "--out", file), "add --format gguf");
        Assert.False(Directory.Exists(file));
    }

    [Fact]
    public void RandomCheckpointGgufNameThatIsAFolder()
    {
        string folder = Directory.CreateDirectory(Path.Combine(dir, "tiny.gguf")).FullName;
        AssertOneLineError(CliRunner.Run("random-checkpoint", "--preset", "tiny-llama", "--format", "gguf", "--out", folder), "is a folder; give the .gguf file to write");
    }

    // ---------------------------------------------------------------------------------------------------
    // An output folder used twice holds the second run's files only.

    [Fact]
    public void JacobianNonlinearIntoAFolderOfADetachedRunLeavesNoOffsetOfThatRun()
    {
        // offset.npy belongs to the detached J; the ordinary J has none, and an old one beside the new J is another input's
        string outDir = Path.Combine(dir, "j");
        var r = CliRunner.Run("jacobian", "--model", TinyModel(), "--token-ids", "1,2", "--method", "full", "--out", outDir);
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.True(File.Exists(Path.Combine(outDir, "offset.npy")));
        r = CliRunner.Run("jacobian", "--model", TinyModel(), "--token-ids", "1,2,3", "--nonlinear", "--out", outDir);
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.False(File.Exists(Path.Combine(outDir, "offset.npy")));
        Assert.True(File.Exists(Path.Combine(outDir, "jacobian.npy")));
    }

    [Fact]
    public void AnalysisThatFailsLeavesNoAnalysisJsonOfAnEarlierOne()
    {
        // a figure that cannot be written (a folder in its place) fails the second analysis after the first one's analysis.json was there
        string folder = Path.Combine(dir, "analysis");
        AnalysisFolder.Write(SyntheticReport.Make(4), folder, figures: false);
        Directory.CreateDirectory(Path.Combine(folder, "attribution.png"));
        Assert.Throws<LinearLensException>(() => AnalysisFolder.Write(SyntheticReport.Make(4, seed: 2), folder, figures: true));
        Assert.False(File.Exists(Path.Combine(folder, AnalysisFolder.JsonName)));
    }

    [Theory]
    [InlineData("q4_k", "8", "--k 8 is not a whole number of Q4_K blocks of 256 weights; give a multiple of 256 (e.g. 256)")]
    [InlineData("q8_0", "33", "--k 33 is not a whole number of Q8_0 blocks of 32 weights; give a multiple of 32 (e.g. 64)")]
    public void BenchGemmKThatIsNoWholeNumberOfBlocks(string weights, string k, string message) =>
        AssertOneLineError(CliRunner.Run("bench", "gemm", "--weights", weights, "--m", "1", "--n", "8", "--k", k), message);

    [Theory]
    [InlineData(" 5")]
    [InlineData("+5")]
    public void AttributeWithASpaceOrASignIsAText(string attribute) =>
        // a text needs the tokenizer, which this checkpoint has none of: the id 5 was taken instead
        AssertOneLineError(CliRunner.Run("analyze", "--model", TinyModel(), "--token-ids", "1,2", "--attribute", attribute, "--components", "2"), "no tokenizer");

    [SharedFact("models", "stories260K", "hf", "model.safetensors")]
    public void AttributeWithALeadingSpaceIsTokenized() =>
        AssertOneLineError(CliRunner.Run("analyze", "--model", SharedData.Stories260K, "--text", "Once upon", "--attribute", " 5", "--components", "2"),
            "--attribute \" 5\" is 3 tokens");

    [SharedFact("models", "stories260K", "hf", "model.safetensors")]
    public void AttributeWithALeadingSpaceNamesTheWordThatIsOneToken() =>
        // SentencePiece adds its own space before a word: " big" is two tokens, "big" the one a user meant
        AssertOneLineError(CliRunner.Run("analyze", "--model", SharedData.Stories260K, "--text", "Once upon", "--attribute", " big", "--components", "2"),
            "--attribute \" big\" is 2 tokens", "this tokenizer adds the leading space itself: \"big\" is the one token 370");

    [Theory]
    [InlineData("notaurl")]
    [InlineData("ftp://hub.example")]
    [InlineData("huggingface.co")]
    public void HfEndpointThatIsNoHttpUrl(string endpoint)
    {
        // read where the CLI reads it (when a command resolves a Hub id): an unparsable one was an internal error (UriFormatException)
        var e = Assert.Throws<LinearLensException>(() => LinearLens.Loading.HubOptions.FromEnvironment(k => k == "HF_ENDPOINT" ? endpoint : null, dir));
        Assert.Contains($"HF_ENDPOINT='{endpoint}' is not an http or https URL", e.Message);
    }

    [Fact]
    public void OverflowInFloat64DoesNotSuggestFloat64()
    {
        var r = CliRunner.Run("steer", "--model", TinyModel(), "--token-ids", "1,2,3", "--concept-token-ids", "4,5", "--lambda", "1e308", "--max-new-tokens", "2");
        AssertOneLineError(r, "overflow float64");
        Assert.DoesNotContain("--dtype float64", r.Stderr);
    }

    [Theory]
    [InlineData("eos_token_id", "101", "eos_token_id 101 is outside the vocabulary 0…100")]
    [InlineData("eos_token_id", "[2, 5000]", "eos_token_id 5000 is outside the vocabulary 0…100")]
    [InlineData("bos_token_id", "101", "bos_token_id = 101 is outside the vocabulary 0…100")]
    public void ConfigSpecialTokenBeyondTheVocabulary(string key, string raw, string message)
    {
        string model = TinyModel(), config = Path.Combine(model, "config.json");
        var c = JsonNode.Parse(File.ReadAllText(config))!.AsObject();
        c[key] = JsonNode.Parse(raw);
        File.WriteAllText(config, c.ToJsonString());
        AssertOneLineError(CliRunner.Run("generate", "--model", model, "--token-ids", "1,2", "--max-new-tokens", "2"), message);
    }

    [SharedFact("models", "stories260K", "hf", "model.safetensors")]
    public void PromptsLineLongerThanTheModelStopsBeforeAnyPrompt()
    {
        // stories260K takes 512 positions; line 3 is about 800 tokens: the run stops before analysing lines 1 and 2
        string file = Path.Combine(dir, "prompts.txt"), outDir = Path.Combine(dir, "out");
        File.WriteAllText(file, "Once upon a time\n\n" + string.Concat(Enumerable.Repeat("Once upon a time ", 200)) + "\n");
        var r = CliRunner.Run("analyze", "--model", SharedData.Stories260K, "--prompts", file, "--out", outDir, "--layers", "5", "--components", "2");
        AssertOneLineError(r, "--prompts line 3: ");
        Assert.Contains("exceed max_position_embeddings = 512", r.Stderr);
        Assert.False(Directory.Exists(Path.Combine(outDir, "prompt-0001")));
    }

    [SharedTheory("tokenizers", "qwen3", "tokenizer.json")]
    [InlineData("generate", "--text")]
    [InlineData("steer", "--concept")]
    public void TokenizerOfAnotherModelIsNamedAsSuch(string command, string option)
    {
        // Qwen3's tokenizer beside a 101-token model: "hello world" becomes ids the model has no embedding for
        string model = TinyModel();
        File.Copy(SharedData.Path_("tokenizers", "qwen3", "tokenizer.json"), Path.Combine(model, "tokenizer.json"));
        string[] args = command == "generate"
            ? ["generate", "--model", model, "--text", "hello world", "--max-new-tokens", "1"]
            : ["steer", "--model", model, "--token-ids", "1,2", "--concept", "hello world", "--lambda", "1", "--max-new-tokens", "1"];
        AssertOneLineError(CliRunner.Run(args), $"{option} encodes to token id");
        Assert.Contains("is not this model's", CliRunner.Run(args).Stderr);
    }

    // ---------------------------------------------------------------------------------------------------
    // Symbolic links: a Hugging Face cache snapshot is a folder of links into blobs/.

    [Fact]
    public void GgufReachedThroughASymlinkIsRead()
    {
        string file = Path.Combine(dir, "real.gguf"), link = Path.Combine(dir, "link.gguf");
        Assert.Equal(0, CliRunner.Run("random-checkpoint", "--preset", "tiny-llama", "--format", "gguf", "--out", file).ExitCode);
        File.CreateSymbolicLink(link, file);
        var direct = CliRunner.Run("generate", "--model", file, "--token-ids", "1,2", "--max-new-tokens", "3");
        var linked = CliRunner.Run("generate", "--model", link, "--token-ids", "1,2", "--max-new-tokens", "3");
        Assert.True(linked.ExitCode == 0, linked.Stderr);   // was: "… too short for a GGUF file" (the length of the link itself)
        Assert.Equal(direct.Stdout, linked.Stdout);
    }

    [Theory]
    [InlineData("model.safetensors")]
    [InlineData("config.json")]
    [InlineData("tokenizer.json")]
    public void FileThatIsABrokenSymlinkIsNamedAsSuch(string name)
    {
        string model = TinyModel(), target = Path.Combine(dir, "blobs", "gone");
        File.Delete(Path.Combine(model, name));
        File.CreateSymbolicLink(Path.Combine(model, name), target);
        AssertOneLineError(CliRunner.Run("generate", "--model", model, "--token-ids", "1", "--max-new-tokens", "1"),
            $"{name} is a symbolic link to {target}, which does not exist");
    }

    [Fact]
    public void GgufThatIsABrokenSymlinkIsNamedAsSuch()
    {
        string link = Path.Combine(dir, "model.gguf");
        File.CreateSymbolicLink(link, Path.Combine(dir, "blobs", "gone"));
        AssertOneLineError(CliRunner.Run("generate", "--model", link, "--token-ids", "1"), "is a symbolic link to");
    }

    [SharedFact("models", "stories260K", "hf", "model.safetensors")]
    public void PromptsWithALayerOutOfRangeCreateNoOutFolder()
    {
        string file = Path.Combine(dir, "prompts.txt"), outDir = Path.Combine(dir, "out");
        File.WriteAllText(file, "Once upon a time\n");
        AssertOneLineError(CliRunner.Run("analyze", "--model", SharedData.Stories260K, "--prompts", file, "--out", outDir, "--layers", "99"), "--layers: layer 99 is outside 1…5");
        Assert.False(Directory.Exists(outDir));
    }

    [SharedFact("models", "stories260K", "hf", "model.safetensors")]
    public void PromptsLineNeedingMoreMemoryThanAvailableStopsBeforeAnyPrompt()
    {
        // stories260K (copied, its position limit raised): line 2 is 300,000 tokens, whose ordinary trace alone is terabytes
        string model = Path.Combine(dir, "stories");
        Directory.CreateDirectory(model);
        foreach (var f in Directory.GetFiles(SharedData.Stories260K)) File.Copy(f, Path.Combine(model, Path.GetFileName(f)));
        var c = JsonNode.Parse(File.ReadAllText(Path.Combine(model, "config.json")))!.AsObject();
        c["max_position_embeddings"] = 1_000_000;
        File.WriteAllText(Path.Combine(model, "config.json"), c.ToJsonString());
        string file = Path.Combine(dir, "prompts.txt"), outDir = Path.Combine(dir, "out");
        File.WriteAllText(file, "Once upon a time\n" + string.Concat(Enumerable.Repeat(" a", 300_000)) + "\n");
        var r = CliRunner.Run("analyze", "--model", model, "--prompts", file, "--out", outDir);
        AssertOneLineError(r, "--prompts line 2: this run would need about");
        Assert.False(Directory.Exists(Path.Combine(outDir, "prompt-0001")));
    }

    [Fact]
    public void RandomCheckpointChecksTheDiskBeforeWriting()
    {
        // the size estimate is a lower bound close to the files written (safetensors, and a quantized GGUF)
        var spec = RandomCheckpointSpec.Preset("tiny-llama");
        string hf = Path.Combine(dir, "hf"), gguf = Path.Combine(dir, "q.gguf");
        Assert.Equal(0, CliRunner.Run("random-checkpoint", "--preset", "tiny-llama", "--out", hf).ExitCode);
        Assert.Equal(0, CliRunner.Run("random-checkpoint", "--preset", "tiny-llama", "--out", gguf, "--format", "gguf", "--quant", "Q8_0").ExitCode);
        long st = new FileInfo(Path.Combine(hf, "model.safetensors")).Length, gg = new FileInfo(gguf).Length;
        Assert.InRange(spec.StoredBytes(), st * 0.9, st);
        Assert.InRange(spec.StoredBytes(DType.Q8_0), gg * 0.5, gg);
        // the 14B preset's bf16 files are 29.5 GB
        Assert.InRange(RandomCheckpointSpec.Preset("qwen3-14b").StoredBytes(), 29.4e9, 29.6e9);
        // more than the disk holds is one error line, before anything is written
        var e = Assert.Throws<LinearLensException>(() => LinearLens.Analysis.ResourceEstimate.CheckFreeDisk(Path.Combine(dir, "new", "folder"), long.MaxValue / 2, "--out"));
        Assert.Contains("free some space", e.Message);
        Assert.False(Directory.Exists(Path.Combine(dir, "new")));
    }

    [Fact]
    public void JacobianOptionsThatWouldBeIgnoredAreErrors()
    {
        string model = TinyModel();
        AssertOneLineError(CliRunner.Run("jacobian", "--model", model, "--token-ids", "1,2", "--method", "full", "--tolerance", "1e-10"), "--tolerance is the stopping rule");
        AssertOneLineError(CliRunner.Run("jacobian", "--model", model, "--token-ids", "1,2", "--nonlinear", "--tolerance", "1e-10"), "--nonlinear forms J");
        AssertOneLineError(CliRunner.Run("jacobian", "--model", model, "--token-ids", "1,2", "--nonlinear", "--detach", "reference"), "--nonlinear freezes nothing");
        // the defaults stay silent, and a tolerance with matrix-free or auto is used
        Assert.Equal(0, CliRunner.Run("jacobian", "--model", model, "--token-ids", "1,2", "--nonlinear").ExitCode);
        Assert.Equal(0, CliRunner.Run("jacobian", "--model", model, "--token-ids", "1,2", "--method", "matrix-free", "--components", "2", "--tolerance", "1e-6").ExitCode);
    }

    [Fact]
    public void BenchGemmWeightsMemoryCountsTheSizesTheBenchmarkFillsIn()
    {
        // --weights with only --m times one row block of a 4096×4096 weight (not the plain case's 2048³), and the memory
        // check reads the same sizes: it let --weights q8_0 --m 250000 through on a 2048-based estimate of half the need.
        // The shape function is tested here, not a run: a broken check would start a benchmark of the machine's size.
        Assert.Equal((250000, 4096, 4096), GemmBenchmark.CustomShape(250000, null, null, weights: true));
        Assert.Equal((250000, 2048, 2048), GemmBenchmark.CustomShape(250000, null, null, weights: false));
        Assert.Equal((1, 4096, 512), GemmBenchmark.CustomShape(null, null, 512, weights: true));
        AssertOneLineError(CliRunner.Run("bench", "gemm", "--weights", "q8_0", "--m", "2000000000", "--k", "4096"), "of memory but");
    }

    [SharedFact("models", "stories260K", "hf", "model.safetensors")]
    public void PromptsRunFailingInItsFirstPromptLeavesNoOutFolder()
    {
        string model = Path.Combine(dir, "stories");
        Directory.CreateDirectory(model);
        foreach (var f in Directory.GetFiles(SharedData.Stories260K)) File.Copy(f, Path.Combine(model, Path.GetFileName(f)));
        NonFiniteTests.Poke(model, "model.layers.0.input_layernorm.weight", 3, float.NaN);
        string file = Path.Combine(dir, "prompts.txt"), outDir = Path.Combine(dir, "out");
        File.WriteAllText(file, "Once upon a time\n");
        AssertOneLineError(CliRunner.Run("analyze", "--model", model, "--prompts", file, "--out", outDir, "--layers", "5", "--components", "2"), "non-finite");
        Assert.False(Directory.Exists(outDir));
    }

    [Fact]
    public void OutThatIsABrokenSymlink()
    {
        // File.Exists is true for the link itself: it was "is a file; give a folder"
        string link = Path.Combine(dir, "out");
        File.CreateSymbolicLink(link, Path.Combine(dir, "gone"));
        AssertOneLineError(CliRunner.Run("jacobian", "--model", TinyModel(), "--token-ids", "1,2", "--out", link), "is a symbolic link to");
    }

    [Fact]
    public void TxtPromptsFileWhoseFirstPromptStartsWithABraceIsText()
    {
        string txt = Path.Combine(dir, "p.txt"), other = Path.Combine(dir, "p.prompts");
        File.WriteAllText(txt, "{name} went to the park\nThe dog\n");
        Assert.Equal([new Prompt(1, "{name} went to the park"), new Prompt(2, "The dog")], PromptFile.Read(txt));
        // without .txt the first '{' still means JSON Lines, and the error says how to have it read as text
        File.WriteAllText(other, "{name} went to the park\n");
        var e = Assert.Throws<LinearLensException>(() => PromptFile.Read(other));
        Assert.Contains("name it .txt", e.Message);
    }
}
