using System.Text.Json.Nodes;
using LinearLens.Loading;
using LinearLens.Models;
using LinearLens.Tests.Support;
using static LinearLens.Tests.Support.CliRunner;

namespace LinearLens.Tests.Cli;

/// <summary>
/// Options given explicitly that would have no effect in the combination given are one error line (what, which
/// options, how to fix) and exit code 2, before any work; the same options left at their defaults stay silent, and a
/// combination where they are used still runs. (jacobian's --tolerance and --detach cases are in AuditTests.)
/// </summary>
public sealed class OptionConflictTests : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("ll-options").FullName;

    public void Dispose() => Directory.Delete(dir, true);

    static void AssertRuns(CliRunner.Result r) => Assert.True(r.ExitCode == 0, $"exit code {r.ExitCode}: {r.Stderr}");

    string TinyModel()
    {
        string model = Path.Combine(dir, "model");
        if (!Directory.Exists(model)) RandomCheckpoint.Write(model, RandomCheckpointSpec.Preset("tiny-llama"), seed: 3, keepValues: false);
        return model;
    }

    // ---------------------------------------------------------------------------------------------------
    // jacobian --probabilities

    [Fact]
    public void JacobianRecomputedProbabilitiesWithNonlinear()
    {
        string model = TinyModel();
        AssertOneLineError(CliRunner.Run("jacobian", "--model", model, "--token-ids", "1,2,3,4,5,6", "--nonlinear", "--probabilities", "recomputed"),
            "--nonlinear differentiates through them");
        // what --nonlinear does anyway, and the default, are no contradiction
        AssertRuns(CliRunner.Run("jacobian", "--model", model, "--token-ids", "1,2,3,4,5,6", "--nonlinear", "--probabilities", "stored"));
        AssertRuns(CliRunner.Run("jacobian", "--model", model, "--token-ids", "1,2,3,4,5,6", "--nonlinear"));
    }

    [Fact]
    public void JacobianRecomputedProbabilitiesWithFourTokensOrFewer()
    {
        string model = TinyModel();
        AssertOneLineError(CliRunner.Run("jacobian", "--model", model, "--token-ids", "1,2,3,4", "--probabilities", "recomputed"),
            "with 4 tokens (at most 4) the attention probabilities are always stored");
        // five tokens recompute them, and give what the stored ones give
        var recomputed = CliRunner.Run("jacobian", "--model", model, "--token-ids", "1,2,3,4,5", "--probabilities", "recomputed", "--json");
        var stored = CliRunner.Run("jacobian", "--model", model, "--token-ids", "1,2,3,4,5", "--probabilities", "stored", "--json");
        AssertRuns(recomputed);
        AssertRuns(stored);
        Assert.Equal(JsonNode.Parse(stored.Stdout)!["contribution_norms"]!.ToJsonString(), JsonNode.Parse(recomputed.Stdout)!["contribution_norms"]!.ToJsonString());
        AssertRuns(CliRunner.Run("jacobian", "--model", model, "--token-ids", "1,2", "--probabilities", "auto"));
    }

    [Fact]
    public void JacobianToleranceWithOut()
    {
        // --out makes auto form J (the files are J), so Lanczos and its stopping rule never run
        string model = TinyModel(), outDir = Path.Combine(dir, "j");
        AssertOneLineError(CliRunner.Run("jacobian", "--model", model, "--token-ids", "1,2,3", "--out", outDir, "--tolerance", "1e-3", "--components", "2"),
            "--out forms J and its SVD is exact: drop --tolerance, or use --method matrix-free without --out");
        Assert.False(Directory.Exists(outDir));
        AssertRuns(CliRunner.Run("jacobian", "--model", model, "--token-ids", "1,2,3", "--out", outDir, "--components", "2"));
        Assert.True(File.Exists(Path.Combine(outDir, "jacobian.npy")));
        AssertRuns(CliRunner.Run("jacobian", "--model", model, "--token-ids", "1,2,3", "--tolerance", "1e-3", "--components", "2"));
    }

    // ---------------------------------------------------------------------------------------------------
    // analyze

    [Fact]
    public void AnalyzeFiguresWithoutPrompts()
    {
        string model = TinyModel(), outDir = Path.Combine(dir, "out");
        AssertOneLineError(CliRunner.Run("analyze", "--model", model, "--token-ids", "1,2", "--components", "2", "--figures", "--out", outDir),
            "--figures applies to --prompts");
        Assert.False(Directory.Exists(outDir));
        // a single input's figures are written without it (--prompts with --figures: AuditTests.PromptsRunWithFiguresRedoesFoldersThatHaveNone)
        AssertRuns(CliRunner.Run("analyze", "--model", model, "--token-ids", "1,2", "--components", "2", "--layers", "2", "--no-ordinary", "--out", outDir));
        Assert.True(File.Exists(Path.Combine(outDir, "attribution.png")));
    }

    [Fact]
    public void AnalyzeNoOrdinaryWithMatrixFree()
    {
        string model = TinyModel();
        AssertOneLineError(CliRunner.Run("analyze", "--model", model, "--token-ids", "1,2", "--components", "2", "--method", "matrix-free", "--no-ordinary"),
            "--no-ordinary skips the ordinary Jacobian, which --method matrix-free never computes");
        // used with full, and with auto (auto may choose full)
        AssertRuns(CliRunner.Run("analyze", "--model", model, "--token-ids", "1,2", "--components", "2", "--layers", "2", "--method", "full", "--no-ordinary"));
        AssertRuns(CliRunner.Run("analyze", "--model", model, "--token-ids", "1,2", "--components", "2", "--layers", "2", "--no-ordinary"));
        AssertRuns(CliRunner.Run("analyze", "--model", model, "--token-ids", "1,2", "--components", "2", "--layers", "2", "--method", "matrix-free"));
    }

    // ---------------------------------------------------------------------------------------------------
    // generate, steer: --ignore-eos when nothing is generated; steer --alignment when nothing is added

    [Fact]
    public void GenerateIgnoreEosWithNoNewTokens()
    {
        string model = TinyModel();
        AssertOneLineError(CliRunner.Run("generate", "--model", model, "--token-ids", "1,2", "--max-new-tokens", "0", "--ignore-eos"),
            "--ignore-eos has no effect with --max-new-tokens 0");
        AssertRuns(CliRunner.Run("generate", "--model", model, "--token-ids", "1,2", "--max-new-tokens", "0"));
        AssertRuns(CliRunner.Run("generate", "--model", model, "--token-ids", "1,2", "--max-new-tokens", "2", "--ignore-eos"));
    }

    [Theory]
    [InlineData("--ignore-eos")]
    [InlineData("--lambda", "1")]
    [InlineData("--lambda-sweep", "0,1")]
    [InlineData("--alignment", "reference")]
    public void SteerOptionsWithNoNewTokens(string option, params string[] value)
    {
        string model = TinyModel();
        AssertOneLineError(CliRunner.Run(["steer", "--model", model, "--token-ids", "1,2", "--concept-token-ids", "5,6", "--max-new-tokens", "0", option, .. value]),
            $"{option} has no effect with --max-new-tokens 0");
        AssertRuns(CliRunner.Run("steer", "--model", model, "--token-ids", "1,2", "--concept-token-ids", "5,6", "--max-new-tokens", "0"));
        AssertRuns(CliRunner.Run("steer", "--model", model, "--token-ids", "1,2", "--concept-token-ids", "5,6", "--max-new-tokens", "2", "--ignore-eos"));
    }

    [Theory]
    [InlineData("--lambda", "0")]
    [InlineData("--lambda-sweep", "0,0")]
    public void SteerAlignmentWithOnlyLambdaZero(string option, string value)
    {
        string model = TinyModel();
        AssertOneLineError(CliRunner.Run("steer", "--model", model, "--token-ids", "1,2", "--concept-token-ids", "5,6", "--max-new-tokens", "2", option, value, "--alignment", "reference"),
            "--alignment chooses where the steering vector is added, and λ = 0 adds none");
        AssertRuns(CliRunner.Run("steer", "--model", model, "--token-ids", "1,2", "--concept-token-ids", "5,6", "--max-new-tokens", "2", option, value));
        AssertRuns(CliRunner.Run("steer", "--model", model, "--token-ids", "1,2", "--concept-token-ids", "5,6", "--max-new-tokens", "2", "--lambda-sweep", "0,1", "--alignment", "reference"));
    }

    // ---------------------------------------------------------------------------------------------------
    // A checkpoint holding more layers than its config runs

    string ModelWithConfigLayers(int layers)
    {
        string model = TinyModel();   // 2 layers stored
        string path = Path.Combine(model, "config.json");
        var c = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        c["num_hidden_layers"] = layers;
        File.WriteAllText(path, c.ToJsonString());
        return model;
    }

    [Fact]
    public void FewerConfigLayersThanStoredIsAWarningNamingBoth()
    {
        var r = CliRunner.Run("generate", "--model", ModelWithConfigLayers(1), "--token-ids", "1,2", "--max-new-tokens", "2");
        AssertRuns(r);
        var lines = r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        var warning = Assert.Single(lines);
        Assert.StartsWith("warning: config.json's num_hidden_layers is 1 but ", warning);
        Assert.Contains("holds weights of 2 layers", warning);
        Assert.NotEqual("", r.Stdout);
        // analyze opens its model another way: the same warning
        var a = CliRunner.Run("analyze", "--model", ModelWithConfigLayers(1), "--token-ids", "1,2", "--components", "2", "--no-ordinary", "--json");
        AssertRuns(a);
        Assert.Contains("warning: config.json's num_hidden_layers is 1 but ", a.Stderr);
        // as many as stored: silent
        var ok = CliRunner.Run("generate", "--model", ModelWithConfigLayers(2), "--token-ids", "1,2", "--max-new-tokens", "2");
        AssertRuns(ok);
        Assert.Equal("", ok.Stderr);
    }

    [Fact]
    public void GgufBlocksBeyondBlockCountAreNamed()
    {
        // llama.cpp refuses such a file; the error names the tensor and block_count instead of "unsupported variant"
        string file = Path.Combine(dir, "model.gguf");
        GgufExport.FromHuggingFace(ModelWithConfigLayers(1), file);
        AssertOneLineError(CliRunner.Run("generate", "--model", file, "--token-ids", "1,2", "--max-new-tokens", "2"),
            "has tensor 'blk.1.");
        var r = CliRunner.Run("generate", "--model", file, "--token-ids", "1,2", "--max-new-tokens", "2");
        Assert.Contains("of layer 2, but llama.block_count = 1 layers", r.Stderr);
    }
}
