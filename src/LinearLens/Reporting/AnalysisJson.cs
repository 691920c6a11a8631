using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;
using LinearLens.Analysis;

namespace LinearLens.Reporting;

/// <summary>analysis.json: every number and decoded token of an <see cref="AnalysisReport"/> (the heat-map matrix aside; it is in the PNG).</summary>
public static class AnalysisJson
{
    public static readonly JsonSerializerOptions Options = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping, WriteIndented = false };

    public static JsonObject Build(AnalysisReport r) => new()
    {
        ["model_type"] = r.ModelType,
        ["dtype"] = r.DType,
        ["input_ids"] = Arr(r.InputIds),
        ["tokens"] = Arr(r.Tokens),
        ["predicted_id"] = r.PredictedId,
        ["predicted_token"] = r.PredictedToken,
        ["hidden_size"] = r.Hidden,
        ["method"] = r.Method,
        ["method_reason"] = r.MethodReason,
        ["num_layers"] = r.NumLayers,
        ["detach"] = r.Detach.ToString().ToLowerInvariant(),
        ["reconstruction"] = new JsonObject
        {
            ["relative_error"] = r.RelativeError,
            ["max_abs_error"] = r.MaxAbsError,
            ["ordinary_relative_error"] = r.OrdinaryRelativeError,
            ["offset_norm"] = r.OffsetNorm,
            ["definition"] = "‖Σᵢ Jᵢxᵢ + c − y‖ / ‖y‖ with y the final-normed hidden state of the last position and c the frozen map's constant term (0 without biases)",
        },
        ["output"] = Arr(r.Output),
        ["per_token"] = new JsonArray(r.PerToken.Select(Spectrum).ToArray<JsonNode?>()),
        ["combined"] = Spectrum(r.Combined),
        ["columns_and_rows"] = new JsonArray(r.ColumnsAndRows.Select(c => (JsonNode)new JsonObject
        {
            ["token"] = c.Token,
            ["sorted_column_norms"] = Arr(c.SortedColumnNorms),
            ["top_columns"] = Arr(c.TopColumns),
            ["column_tokens"] = new JsonArray(c.ColumnTokens.Select(Tokens).ToArray<JsonNode?>()),
            ["top_rows"] = Arr(c.TopRows),
            ["row_tokens"] = new JsonArray(c.RowTokens.Select(Tokens).ToArray<JsonNode?>()),
        }).ToArray<JsonNode?>()),
        ["layer_sweep"] = new JsonArray(r.LayerSweep.Select(s => (JsonNode)new JsonObject
        {
            ["layer"] = s.Layer,
            ["key"] = s.Key.ToString().ToLowerInvariant(),
            ["mode"] = s.Mode.ToString().ToLowerInvariant(),
            ["relative_error"] = s.RelativeError,
            ["stable_rank"] = s.Spectrum.StableRank,
            ["spectrum"] = Spectrum(s.Spectrum),
        }).ToArray<JsonNode?>()),
        ["path"] = new JsonArray(r.Path.Select(p => (JsonNode)new JsonObject
        {
            ["layer"] = p.Layer,
            ["projections"] = Arr(p.Projections),
            ["u0_tokens"] = Tokens(p.Top),
        }).ToArray<JsonNode?>()),
        ["attribution"] = new JsonArray(r.Attributions.Select(a => (JsonNode)new JsonObject
        {
            ["token_id"] = a.TokenId,
            ["token"] = a.Token,
            ["contributions"] = Arr(a.Contributions),
            ["bias"] = a.Bias,
            ["sum"] = a.Sum,
            ["logit"] = a.Logit,
            ["sum_error"] = a.SumError,
        }).ToArray<JsonNode?>()),
        ["seconds"] = new JsonObject(r.Seconds.Select(kv => new KeyValuePair<string, JsonNode?>(kv.Key, kv.Value))),
    };

    static JsonObject Spectrum(Spectrum s) => new()
    {
        ["name"] = s.Name,
        ["method"] = s.Method,
        ["singular_values"] = Arr(s.SingularValues),
        ["residuals"] = s.Residuals is null ? null : Arr(s.Residuals),
        ["frobenius_squared"] = s.FrobeniusSquared,
        ["frobenius_squared_estimated"] = s.FrobeniusEstimated,
        ["stable_rank"] = s.StableRank,
        ["components"] = new JsonArray(s.Components.Select(c => (JsonNode)new JsonObject
        {
            ["index"] = c.Index,
            ["sigma"] = c.Sigma,
            ["sign"] = c.Sign,
            ["left_tokens"] = Tokens(c.Left),
            ["right_tokens"] = c.Right is null ? null : Tokens(c.Right),
        }).ToArray<JsonNode?>()),
    };

    static JsonArray Tokens(ScoredToken[] t) => new(t.Select(x => (JsonNode)new JsonObject { ["id"] = x.Id, ["token"] = x.Text, ["score"] = x.Score }).ToArray<JsonNode?>());

    static JsonArray Arr<TV>(IEnumerable<TV> values) => new(values.Select(v => JsonValue.Create(v)).ToArray<JsonNode?>());

    public static string Write(AnalysisReport r) => Build(r).ToJsonString(Options);
}
