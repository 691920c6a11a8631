using System.CommandLine;
using LinearLens.Models;

namespace LinearLens.Cli.Commands;

/// <summary>`linearlens random-checkpoint`: writes a random checkpoint of a named real shape, for benchmarks and tests.</summary>
static class RandomCheckpointCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var preset = new Option<string>("--preset") { Description = $"Shape: {string.Join(", ", RandomCheckpointSpec.PresetNames)}", Required = true };
        var outDir = new Option<string>("--out") { Description = "Folder to write config.json and safetensors into", Required = true };
        var seed = new Option<int>("--seed") { Description = "Random seed", DefaultValueFactory = _ => 1 };
        var cmd = new Command("random-checkpoint", "Write a Hugging Face-layout checkpoint of random weights with a named real shape (e.g. qwen3-0.6b)")
        { preset, outDir, seed };
        cmd.SetAction(p =>
        {
            string name = p.GetValue(preset)!;
            if (!RandomCheckpointSpec.PresetNames.Contains(name))
                throw new LinearLensException($"--preset '{name}' is not a known shape; use one of {string.Join(", ", RandomCheckpointSpec.PresetNames)}");
            string dir = p.GetValue(outDir)!;
            Checks.OutputFolder(dir);
            var sw = System.Diagnostics.Stopwatch.StartNew();
            RandomCheckpoint.Write(dir, RandomCheckpointSpec.Preset(name), p.GetValue(seed), keepValues: false);
            stdout.WriteLine($"wrote {name} to {Path.GetFullPath(dir)} in {sw.Elapsed.TotalSeconds:F1} s");
            return 0;
        });
        return cmd;
    }
}
