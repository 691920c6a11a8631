using System.CommandLine;
using System.Numerics;
using LinearLens.Loading;
using LinearLens.Models;
using LinearLens.Reporting;

namespace LinearLens.Cli.Commands;

static class GenerateCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr, Func<HubOptions> hub)
    {
        var input = new ModelInput(hub, stderr);
        var maxNew = new Option<int>("--max-new-tokens") { Description = "How many tokens to generate (greedy)", DefaultValueFactory = _ => 32 };
        var ignoreEos = new Option<bool>("--ignore-eos") { Description = "Keep generating past an end-of-sequence token" };
        var json = new Option<bool>("--json") { Description = "Print one JSON object on stdout" };
        var cmd = new Command("generate", "Greedy generation with a KV cache");
        input.AddTo(cmd);
        cmd.Options.Add(maxNew); cmd.Options.Add(ignoreEos); cmd.Options.Add(json);
        cmd.SetAction(p =>
        {
            if (p.GetValue(maxNew) == 0 && p.GetResult(ignoreEos) is { Implicit: false })
                throw new LinearLensException("--ignore-eos has no effect with --max-new-tokens 0 (nothing is generated): drop one of them");
            using var ckpt = input.Open(p);
            var ids = input.Ids(p, ckpt);
            return input.IsFloat64(p)
                ? Run<double>(ckpt, ids, p.GetValue(maxNew), !p.GetValue(ignoreEos), p.GetValue(json), stdout)
                : Run<float>(ckpt, ids, p.GetValue(maxNew), !p.GetValue(ignoreEos), p.GetValue(json), stdout);
        });
        return cmd;
    }

    static int Run<T>(Checkpoint ckpt, int[] ids, int maxNew, bool stopAtEos, bool json, TextWriter stdout)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        if (maxNew < 0) throw new LinearLensException($"--max-new-tokens must be ≥ 0 (got {maxNew})");
        Checks.Memory(ckpt.Config, new LinearLens.Analysis.RunShape { Tokens = ids.Length, NewTokens = maxNew, ElementSize = System.Runtime.CompilerServices.Unsafe.SizeOf<T>() });
        var report = GenerationReport.Run(new Transformer<T>(ckpt), ids, maxNew, stopAtEos);
        stdout.WriteLine(json ? CommandJson.Write(report.ToJson()) : report.Text ?? string.Join(",", report.Generation.NewIds));
        return 0;
    }
}
