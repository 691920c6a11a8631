using LinearLens.Loading;
using LinearLens.Models;
using LinearLens.Tests.Support;

namespace LinearLens.Tests.Cli;

/// <summary>A forward pass whose hidden state becomes non-finite stops with one line naming the first layer and the tensor.</summary>
public class NonFiniteTests
{
    /// <summary>Overwrites element `index` of a stored F32 tensor in model.safetensors with a value.</summary>
    internal static void Poke(string folder, string tensor, long index, float value)
    {
        string file = Path.Combine(folder, "model.safetensors");
        long offset;
        using (var fs = File.OpenRead(file))
        {
            var len = new byte[8];
            fs.ReadExactly(len);
            offset = 8 + (long)BitConverter.ToUInt64(len) + FirstOffset(file, tensor) + index * 4;   // data section + tensor + element
        }
        using var w = new FileStream(file, FileMode.Open, FileAccess.Write);
        w.Seek(offset, SeekOrigin.Begin);
        w.Write(BitConverter.GetBytes(value));
    }

    static long FirstOffset(string file, string tensor)
    {
        using var fs = File.OpenRead(file);
        var len = new byte[8];
        fs.ReadExactly(len);
        var header = new byte[BitConverter.ToUInt64(len)];
        fs.ReadExactly(header);
        using var doc = System.Text.Json.JsonDocument.Parse(header);
        return doc.RootElement.GetProperty(tensor).GetProperty("data_offsets")[0].GetInt64();
    }

    [Theory]
    [InlineData("model.layers.1.mlp.down_proj.weight", "layer 2", "layer 2 down_proj")]
    [InlineData("model.layers.0.input_layernorm.weight", "layer 1", "layer 1 attention-in norm")]
    public void NanWeightsStopWithTheLayerAndTheTensor(string tensor, string layer, string culprit)
    {
        using var tmp = new ScratchFolder("nan");
        RandomCheckpoint.Write(tmp.Path, RandomCheckpointSpec.Preset("tiny-llama"), 3, keepValues: false);
        Poke(tmp.Path, tensor, 5, float.NaN);
        foreach (var args in new[] { new[] { "generate", "--model", tmp.Path, "--token-ids", "1,2,3" },
                                     new[] { "jacobian", "--model", tmp.Path, "--token-ids", "1,2,3", "--json" },
                                     new[] { "generate", "--model", tmp.Path, "--token-ids", "1,2,3", "--dtype", "float32" } })
        {
            var r = CliRunner.Run(args);
            Assert.Equal(2, r.ExitCode);
            var lines = r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries).Where(l => !l.StartsWith("method:") && !l.StartsWith("memory:")).ToArray();
            Assert.Single(lines);
            Assert.StartsWith("error: ", lines[0]);
            Assert.Contains($"after {layer}", lines[0]);
            Assert.Contains(culprit, lines[0]);
            Assert.Equal("", r.Stdout);
        }
    }
}
