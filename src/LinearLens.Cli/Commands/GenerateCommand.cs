using System.CommandLine;
using System.Numerics;
using System.Text.Json.Nodes;
using LinearLens.Loading;
using LinearLens.Models;

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
        var model = new Transformer<T>(ckpt);
        var g = Generator.Greedy(model, ids, maxNew, stopAtEos);
        string? text = ckpt.Tokenizer?.Decode(g.NewIds);
        if (json)
        {
            var o = new JsonObject
            {
                ["model_type"] = ckpt.Config.ModelType,
                ["dtype"] = Transformer<T>.DTypeName,
                ["input_ids"] = new JsonArray(ids.Select(i => (JsonNode)i).ToArray()),
                ["output_ids"] = new JsonArray(g.NewIds.Select(i => (JsonNode)i).ToArray()),
                ["text"] = text,
                ["tokens"] = new JsonArray(ModelInput.TokenStrings(ckpt, g.NewIds).Select(s => (JsonNode)s).ToArray()),
                ["logprobs"] = new JsonArray(g.LogProbs.Select(v => (JsonNode)v).ToArray()),
                ["stopped_at_eos"] = g.StoppedAtEos,
            };
            stdout.WriteLine(Json.Write(o));
        }
        else stdout.WriteLine(text ?? string.Join(",", g.NewIds));
        return 0;
    }
}
