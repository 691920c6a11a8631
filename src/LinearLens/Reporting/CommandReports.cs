using System.Diagnostics;
using System.Numerics;
using System.Text.Json.Nodes;
using LinearLens.Analysis;
using LinearLens.Models;

namespace LinearLens.Reporting;

/// <summary>What `generate` found: greedy continuation of one input, with its log-probabilities. Serialized by <see cref="ToJson"/>.</summary>
public sealed record GenerationReport(string ModelType, string DType, int[] InputIds, Generation Generation, string? Text, string[] Tokens)
{
    public static GenerationReport Run<T>(Transformer<T> model, int[] ids, int maxNewTokens, bool stopAtEos) where T : unmanaged, IFloatingPointIeee754<T>
    {
        var g = Generator.Greedy(model, ids, maxNewTokens, stopAtEos);
        var ckpt = model.Checkpoint;
        return new GenerationReport(ckpt.Config.ModelType, Transformer<T>.DTypeName, ids, g, ckpt.Tokenizer?.Decode(g.NewIds),
            g.NewIds.Select(new TokenDecoder(ckpt).Text).ToArray());
    }

    public JsonObject ToJson() => new()
    {
        ["model_type"] = ModelType,
        ["dtype"] = DType,
        ["input_ids"] = CommandJson.Array(InputIds),
        ["output_ids"] = CommandJson.Array(Generation.NewIds),
        ["text"] = Text,
        ["tokens"] = CommandJson.Array(Tokens),
        ["logprobs"] = CommandJson.Array(Generation.LogProbs),
        ["stopped_at_eos"] = Generation.StoppedAtEos,
    };
}

/// <summary>One λ of a steering sweep: the steered generation, its decoded text and tokens, and how long it took.</summary>
public sealed record SteeringRun(SteeringResult Result, string? Text, string[] Tokens, double Seconds);

/// <summary>What `steer` found: the concept operator and one steered generation per λ. Serialized by <see cref="ToJson"/>.</summary>
public sealed record SteeringReport(
    string ModelType, string DType, int NumLayers, int Layer, DetachPolicy Detach, SteeringAlignment Alignment, int InjectAfterLayers,
    int[] ConceptIds, string[] ConceptTokens, int[] OperatorShape, string OperatorMethod, double OperatorRelativeError,
    int[] InputIds, int MaxNewTokens, double OperatorSeconds, SteeringRun[] Runs)
{
    /// <summary>Builds the concept operator once and generates for every λ.</summary>
    public static SteeringReport Run<T>(Transformer<T> model, int[] conceptIds, int[] ids, int layer, double[] lambdas, int maxNewTokens,
        SteeringAlignment alignment, bool stopAtEos, DetachPolicy detach, bool? form = null, Action<double>? progress = null) where T : unmanaged, IFloatingPointIeee754<T>
    {
        var sw = Stopwatch.StartNew();
        var op = SteeringOperator<T>.Build(model, conceptIds, layer, progress, detach, form);
        double buildSeconds = sw.Elapsed.TotalSeconds;
        var ckpt = model.Checkpoint;
        var decoder = new TokenDecoder(ckpt);
        var runs = new List<SteeringRun>();
        foreach (double l in lambdas)
        {
            var t0 = sw.Elapsed.TotalSeconds;
            var r = Steering.Generate(model, op, ids, l, maxNewTokens, alignment, stopAtEos);
            runs.Add(new SteeringRun(r, ckpt.Tokenizer?.Decode(r.NewIds.ToArray()), r.NewIds.Select(decoder.Text).ToArray(), sw.Elapsed.TotalSeconds - t0));
        }
        return new SteeringReport(ckpt.Config.ModelType, Transformer<T>.DTypeName, ckpt.Config.NumLayers, layer, detach, alignment, op.InjectAfterLayers(alignment),
            conceptIds, conceptIds.Select(decoder.Text).ToArray(), [op.Hidden, op.ConceptTokens, op.Hidden], op.IsFormed ? "full" : "matrix-free", op.ReconstructionError,
            ids, maxNewTokens, buildSeconds, runs.ToArray());
    }

    public JsonObject ToJson() => new()
    {
        ["model_type"] = ModelType,
        ["dtype"] = DType,
        ["num_layers"] = NumLayers,
        ["layer"] = Layer,
        ["detach"] = Detach.ToString().ToLowerInvariant(),
        ["alignment"] = Alignment.ToString().ToLowerInvariant(),
        ["inject_after_layers"] = InjectAfterLayers,
        ["concept_ids"] = CommandJson.Array(ConceptIds),
        ["concept_tokens"] = CommandJson.Array(ConceptTokens),
        ["concept_scored_ids"] = CommandJson.Array(Runs[0].Result.ScoredConceptIds),
        ["operator_shape"] = CommandJson.Array(OperatorShape),
        ["operator_method"] = OperatorMethod,
        ["operator_relative_error"] = OperatorRelativeError,
        ["input_ids"] = CommandJson.Array(InputIds),
        ["max_new_tokens"] = MaxNewTokens,
        ["operator_seconds"] = OperatorSeconds,
        ["results"] = new JsonArray(Runs.Select(x => (JsonNode)RunJson(x)).ToArray()),
    };

    static JsonNode? Num(double v) => double.IsFinite(v) ? JsonValue.Create(v) : null;

    static JsonObject RunJson(SteeringRun x)
    {
        var r = x.Result;
        return new()
        {
            ["lambda"] = r.Lambda,
            ["output_ids"] = CommandJson.Array(r.NewIds),
            ["text"] = x.Text,
            ["tokens"] = CommandJson.Array(x.Tokens),
            ["logprobs"] = CommandJson.Array(r.LogProbs),
            ["stopped_at_eos"] = r.StoppedAtEos,
            ["concept_logprob_mean"] = Num(r.MeanConceptLogProb),
            ["concept_logprob_first"] = Num(r.FirstConceptLogProb),
            ["concept_logprob_per_step"] = new JsonArray(r.ConceptLogProbs.Select(Num).ToArray()),
            ["concept_token_hits"] = r.ConceptTokenHits,
            ["seconds"] = x.Seconds,
        };
    }
}

/// <summary>The JSON conventions of every command's output: readable (tokens such as "&lt;s&gt;" or "é" as they are, not \u escapes).</summary>
public static class CommandJson
{
    public static readonly System.Text.Json.JsonSerializerOptions Options = JsonText.Options;

    public static JsonArray Array<TV>(IEnumerable<TV> values) => new(values.Select(v => JsonValue.Create(v)).ToArray<JsonNode?>());

    /// <summary>The one JSON writer (<see cref="JsonText"/>): NaN and ±∞ become null, so a result never fails on a number.</summary>
    public static string Write(JsonNode node) => JsonText.Write(node);
}
