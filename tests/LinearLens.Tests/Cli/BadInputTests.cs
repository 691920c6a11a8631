using System.Text;
using System.Text.Json.Nodes;
using LinearLens.Models;
using LinearLens.Tests.Support;

namespace LinearLens.Tests.Cli;

/// <summary>Every kind of bad input ends in one clear line on stderr and exit code 2 — no stack trace.</summary>
public sealed class BadInputTests : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("ll-bad").FullName;

    public BadInputTests() => RandomCheckpoint.Write(dir, RandomCheckpointSpec.Preset("tiny-llama"), seed: 7, keepValues: false);

    public void Dispose() => Directory.Delete(dir, true);

    static void AssertOneLineError(CliRunner.Result r, string mustContain)
    {
        Assert.Equal(2, r.ExitCode);
        var lines = r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Single(lines);
        Assert.StartsWith("error: ", lines[0]);
        Assert.Contains(mustContain, lines[0]);
        Assert.DoesNotContain("   at ", r.Stderr);
        Assert.Equal("", r.Stdout);
    }

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

    void EditConfig(Action<JsonObject> edit)
    {
        string path = Path.Combine(dir, "config.json");
        var c = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        edit(c);
        File.WriteAllText(path, c.ToJsonString());
    }
}
