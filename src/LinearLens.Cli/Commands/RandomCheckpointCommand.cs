using System.CommandLine;
using LinearLens.Loading;
using LinearLens.Models;
using LinearLens.Numerics;

namespace LinearLens.Cli.Commands;

/// <summary>`linearlens random-checkpoint`: writes a random checkpoint of a named real shape, for benchmarks and tests.</summary>
static class RandomCheckpointCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var preset = new Option<string>("--preset") { Description = $"Shape: {string.Join(", ", RandomCheckpointSpec.PresetNames)}", Required = true };
        var outDir = new Option<string>("--out") { Description = "Folder to write config.json and safetensors into (gguf: a FILE.gguf, or a folder that gets model.gguf)", Required = true };
        var seed = new Option<int>("--seed") { Description = "Random seed", DefaultValueFactory = _ => 1 };
        var format = new Option<string>("--format") { Description = "safetensors (Hugging Face folder) or gguf (llama.cpp's layout)", DefaultValueFactory = _ => "safetensors" };
        var quant = new Option<string?>("--quant") { Description = "gguf only: store the matrices as this type (F32, F16, BF16, or random valid blocks of Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS, or Q4_K_M: llama.cpp's Q4_K/Q6_K mixture)" };
        var cmd = new Command("random-checkpoint", "Write a checkpoint of random weights with a named real shape (e.g. qwen3-0.6b), as a Hugging Face folder or a GGUF file")
        { preset, outDir, seed, format, quant };
        cmd.SetAction(p =>
        {
            string name = p.GetValue(preset)!;
            if (!RandomCheckpointSpec.PresetNames.Contains(name))
                throw new LinearLensException($"--preset '{name}' is not a known shape; use one of {string.Join(", ", RandomCheckpointSpec.PresetNames)}");
            string dir = p.GetValue(outDir)!;
            string fmt = p.GetValue(format)!;
            if (fmt is not ("safetensors" or "gguf")) throw new LinearLensException($"--format '{fmt}': use safetensors or gguf");
            // FILE.gguf is the file to write (replaced when it exists, as the files of a folder are): its folder is checked
            bool ggufFile = dir.EndsWith(".gguf", StringComparison.OrdinalIgnoreCase);
            if (ggufFile && fmt == "safetensors")
                throw new LinearLensException($"--out {dir} names a .gguf file, but --format safetensors writes a Hugging Face folder; add --format gguf, or give a folder name");
            if (ggufFile && Directory.Exists(dir))
                throw new LinearLensException($"--out {dir} is a folder; give the .gguf file to write (e.g. {Path.Combine(dir, "model.gguf")})");
            if (ggufFile) Checks.OutputFolder(Path.GetDirectoryName(Path.GetFullPath(dir)));
            else Checks.OutputFolder(dir);
            string? quantName = p.GetValue(quant);
            if (quantName is not null && fmt != "gguf") throw new LinearLensException("--quant needs --format gguf");
            bool q4km = string.Equals(quantName, "q4_k_m", StringComparison.OrdinalIgnoreCase);
            DType? matrixType = quantName is null || q4km ? null
                : Enum.TryParse<DType>(quantName, ignoreCase: true, out var t) && t != DType.F64 ? t
                : throw new LinearLensException($"--quant '{quantName}' is not a GGUF type LinearLens writes (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS, or the Q4_K_M mixture)");
            var spec = RandomCheckpointSpec.Preset(name);
            // the disk must hold the files (a float GGUF is converted from a Hugging Face copy written beside it; the Q4_K_M
            // mixture counted as all Q4_K): say so now rather than fail minutes in with a full disk
            long need = fmt == "safetensors" ? spec.StoredBytes()
                : spec.StoredBytes(q4km ? DType.Q4_K : matrixType) + (q4km || matrixType?.IsQuantized() == true ? 0 : spec.StoredBytes());
            LinearLens.Analysis.ResourceEstimate.CheckFreeDisk(ggufFile ? Path.GetDirectoryName(Path.GetFullPath(dir))! : dir, need, "--out");
            var sw = System.Diagnostics.Stopwatch.StartNew();
            if (fmt == "safetensors")
            {
                Directory.CreateDirectory(dir);
                RandomCheckpoint.Write(dir, spec, p.GetValue(seed), keepValues: false);
                stdout.WriteLine($"wrote {name} to {Path.GetFullPath(dir)} in {sw.Elapsed.TotalSeconds:F1} s");
                return 0;
            }
            string file = dir.EndsWith(".gguf", StringComparison.OrdinalIgnoreCase) ? dir : Path.Combine(dir, "model.gguf");
            string parent = Path.GetDirectoryName(Path.GetFullPath(file))!;
            Directory.CreateDirectory(parent);
            Func<string, int, DType>? mixture = q4km ? (gg, layers) => GgufExport.Q4KMedium(gg, layers, spec.Tie) : null;
            if (q4km || matrixType?.IsQuantized() == true)
                GgufExport.FromRandom(spec, p.GetValue(seed), file, matrixType, name, mixture);   // no Hugging Face copy needed
            else
            {
                // The Hugging Face checkpoint of the same seed, written beside the output, then converted and removed.
                string hf = Path.Combine(parent, $".{Path.GetFileName(file)}.hf-{Environment.ProcessId}");
                try
                {
                    RandomCheckpoint.Write(hf, spec, p.GetValue(seed), keepValues: false);
                    GgufExport.FromHuggingFace(hf, file, matrixType, (ulong)p.GetValue(seed), name, mixture);
                }
                finally { if (Directory.Exists(hf)) Directory.Delete(hf, recursive: true); }
            }
            stdout.WriteLine($"wrote {name} ({(q4km ? "Q4_K_M mixture of" : (matrixType ?? spec.DType).Name())} matrices) to {file} in {sw.Elapsed.TotalSeconds:F1} s");
            return 0;
        });
        return cmd;
    }
}
