using System.Text;
using System.Text.Json.Nodes;
using static LinearLens.Reporting.Html;

namespace LinearLens.Reporting;

/// <summary>
/// summary.json and summary.html of a prompts run, built from the prompts' analysis.json files: per prompt the
/// prediction, reconstruction errors and the stable rank of every matrix of the layer sweep; across prompts the
/// distribution (median, quartiles, range) of the stable rank per layer — the paper's Fig. 3 — and of the first
/// singular value's share of the energy, σ₁²/‖J‖²_F = σ₁²/Σₖσₖ² (all singular values; = 1/stable rank of the same matrix).
/// </summary>
public static class BatchSummary
{
    public const string JsonName = "summary.json", HtmlName = "summary.html";
    public const string ShareDefinition = "sigma1_share = σ₁² / ‖J‖²_F = σ₁² / Σₖ σₖ² over all singular values of the tokens-combined J (the reciprocal of its stable rank)";
    public const string QuartileDefinition = "quartiles by linear interpolation between order statistics (numpy's default)";

    public static JsonObject Build(JsonObject[] analyses, Prompt[] prompts, string[] folders)
    {
        var first = analyses[0];
        var perPrompt = new JsonArray();
        for (int i = 0; i < analyses.Length; i++)
        {
            var a = analyses[i];
            var rec = a["reconstruction"]!;
            perPrompt.Add(new JsonObject
            {
                ["index"] = i,
                ["line"] = prompts[i].Line,
                ["folder"] = folders[i],
                ["text"] = prompts[i].Text,
                ["tokens"] = (a["input_ids"] as JsonArray)?.Count ?? 0,
                ["predicted_id"] = a["predicted_id"]?.DeepClone(),
                ["predicted_token"] = a["predicted_token"]?.DeepClone(),
                ["relative_error"] = rec["relative_error"]?.DeepClone(),
                ["max_abs_error"] = rec["max_abs_error"]?.DeepClone(),
                ["ordinary_relative_error"] = rec["ordinary_relative_error"]?.DeepClone(),
                ["method"] = a["method"]?.DeepClone(),
                ["stable_rank"] = new JsonArray(Sweep(a).Select(s => (JsonNode)new JsonObject
                {
                    ["layer"] = s.Layer, ["key"] = s.Key, ["mode"] = s.Mode, ["stable_rank"] = s.StableRank, ["sigma1_share"] = s.Share,
                    ["frobenius_squared_estimated"] = s.Estimated,
                }).ToArray<JsonNode?>()),
            });
        }
        var groups = analyses.SelectMany(Sweep).GroupBy(s => (s.Mode, s.Key, s.Layer))
            .OrderBy(g => g.Key.Mode).ThenBy(g => KeyOrder(g.Key.Key)).ThenBy(g => g.Key.Layer);
        var distribution = new JsonArray(groups.Select(g => (JsonNode)new JsonObject
        {
            ["mode"] = g.Key.Mode, ["key"] = g.Key.Key, ["layer"] = g.Key.Layer, ["count"] = g.Count(),
            ["stable_rank"] = Stats(g.Select(s => s.StableRank)),
            ["sigma1_share"] = Stats(g.Select(s => s.Share)),
        }).ToArray<JsonNode?>());
        return new JsonObject
        {
            ["model_type"] = first["model_type"]?.DeepClone(),
            ["model_path"] = first["model_path"]?.DeepClone(),
            ["hub_id"] = first["hub_id"]?.DeepClone(),
            ["hub_revision"] = first["hub_revision"]?.DeepClone(),
            ["dtype"] = first["dtype"]?.DeepClone(),
            ["num_layers"] = first["num_layers"]?.DeepClone(),
            ["count"] = analyses.Length,
            ["sigma1_share_definition"] = ShareDefinition,
            ["quartile_definition"] = QuartileDefinition,
            ["prompts"] = perPrompt,
            ["distribution"] = distribution,
        };
    }

    static int KeyOrder(string key) => key switch { "layer" => 0, "attn" => 1, "mlp" => 2, _ => 3 };

    readonly record struct SweepValue(int Layer, string Key, string Mode, double StableRank, double Share, bool Estimated);

    static IEnumerable<SweepValue> Sweep(JsonObject a) =>
        (a["layer_sweep"] as JsonArray ?? []).Select(x => x!.AsObject()).Select(s =>
        {
            double sr = s["stable_rank"]!.GetValue<double>();
            return new SweepValue(s["layer"]!.GetValue<int>(), s["key"]!.GetValue<string>(), s["mode"]!.GetValue<string>(), sr, sr > 0 ? 1 / sr : 0,
                s["spectrum"]?["frobenius_squared_estimated"]?.GetValue<bool>() ?? false);
        });

    /// <summary>median, q1, q3, min, max of the values.</summary>
    public static JsonObject Stats(IEnumerable<double> values)
    {
        var v = values.Order().ToArray();
        return new JsonObject { ["median"] = Quantile(v, 0.5), ["q1"] = Quantile(v, 0.25), ["q3"] = Quantile(v, 0.75), ["min"] = v[0], ["max"] = v[^1] };
    }

    /// <summary>The q-quantile of sorted values, linear between order statistics (numpy's default, type 7).</summary>
    public static double Quantile(double[] sorted, double q)
    {
        double h = (sorted.Length - 1) * q;
        int lo = (int)Math.Floor(h), hi = Math.Min(lo + 1, sorted.Length - 1);
        return sorted[lo] + (h - lo) * (sorted[hi] - sorted[lo]);
    }

    /// <summary>summary.html from summary.json alone (self-contained, like report.html).</summary>
    public static string Html(JsonObject s)
    {
        var sb = new StringBuilder();
        int count = s["count"]!.GetValue<int>();
        string modelType = s["model_type"]?.ToString() ?? "";
        sb.Append($"<header><h1>LinearLens: {count} prompts on {Text(modelType)}</h1><dl class=\"facts\">");
        sb.Append($"<dt>model type</dt><dd>{Text(modelType)}</dd>");
        if (s["hub_id"]?.ToString() is { Length: > 0 } hub) sb.Append($"<dt>Hub id</dt><dd><span class=\"tok\">{Text(hub)}</span>{(s["hub_revision"]?.ToString() is { } rev ? $" revision {Text(rev)}" : "")}</dd>");
        if (s["model_path"]?.ToString() is { Length: > 0 } mp) sb.Append($"<dt>model</dt><dd><span class=\"tok\">{Text(mp)}</span></dd>");
        sb.Append($"<dt>precision</dt><dd>{Text(s["dtype"]?.ToString())}</dd><dt>prompts</dt><dd>{count}</dd></dl></header>");

        var dist = (s["distribution"] as JsonArray ?? []).Select(x => x!.AsObject()).ToArray();
        sb.Append("<section id=\"stable-rank\"><h2>Stable rank across layers, over the prompts (the paper's Fig. 3)</h2>");
        sb.Append($"<p class=\"muted\">Lines: the median over the prompts; bands: the first to third quartile ({Text(QuartileDefinition)}). Tokens-combined Jacobians.</p><div class=\"side\">");
        foreach (var mode in new[] { "cumulative", "layerwise" })
        {
            var series = new List<Series>();
            int ci = 0;
            foreach (var key in new[] { "layer", "attn", "mlp" })
            {
                var rows = dist.Where(d => d["mode"]!.ToString() == mode && d["key"]!.ToString() == key).OrderBy(d => d["layer"]!.GetValue<int>()).ToArray();
                if (rows.Length > 0)
                    series.Add(new Series($"{key} output{(key == "layer" ? " (residual stream)" : "")}: median, quartile band",
                        rows.Select(d => (double)d["layer"]!.GetValue<int>()).ToArray(), rows.Select(d => St(d, "stable_rank", "median")).ToArray(), Color(ci),
                        Dashed: mode == "layerwise", Marker: mode == "layerwise" ? "square" : "circle",
                        BandLow: rows.Select(d => St(d, "stable_rank", "q1")).ToArray(), BandHigh: rows.Select(d => St(d, "stable_rank", "q3")).ToArray()));
                ci++;
            }
            if (series.Count > 0) sb.Append($"<div>{LinePlot($"Stable rank, {mode}", "layers run", "stable rank ‖J‖²_F/σ₁²", series)}</div>");
        }
        sb.Append("</div>");
        sb.Append($"<div class=\"wide\"><table id=\"distribution\"><tr><th>mode</th><th>output</th><th>layer</th><th>n</th><th>stable rank: median</th><th>q1</th><th>q3</th><th>min</th><th>max</th>" +
                  $"<th title=\"{Text(ShareDefinition)}\">σ₁ share σ₁²/Σσ²: median</th><th>q1</th><th>q3</th></tr>");
        foreach (var d in dist)
            sb.Append($"<tr><td>{Text(d["mode"]!.ToString())}</td><td>{Text(d["key"]!.ToString())}</td><td class=\"num\">{d["layer"]}</td><td class=\"num\">{d["count"]}</td>" +
                      string.Concat(new[] { "median", "q1", "q3", "min", "max" }.Select(q => $"<td class=\"num\">{G(St(d, "stable_rank", q))}</td>")) +
                      string.Concat(new[] { "median", "q1", "q3" }.Select(q => $"<td class=\"num\">{G(St(d, "sigma1_share", q), 3)}</td>")) + "</tr>");
        sb.Append($"</table></div><p class=\"muted\">σ₁ share: {Text(ShareDefinition)}.</p></section>");

        var prompts = (s["prompts"] as JsonArray ?? []).Select(x => x!.AsObject()).ToArray();
        var layers = prompts.SelectMany(p => (p["stable_rank"] as JsonArray ?? []).Select(x => x!))
            .Where(x => x["mode"]!.ToString() == "cumulative" && x["key"]!.ToString() == "layer").Select(x => x["layer"]!.GetValue<int>()).Distinct().Order().ToArray();
        sb.Append("<section id=\"prompts\"><h2>Per prompt</h2><p class=\"muted\">Stable rank of the cumulative residual-stream Jacobian after each layer (every other matrix in summary.json and in each prompt's report).</p>");
        sb.Append("<div class=\"wide\"><table><tr><th>#</th><th>line</th><th>prompt</th><th>tokens</th><th>prediction</th><th>detached error</th><th>ordinary error</th>");
        foreach (int l in layers) sb.Append($"<th>SR {l}</th>");
        sb.Append("</tr>");
        foreach (var p in prompts)
        {
            string folder = p["folder"]!.ToString();
            sb.Append($"<tr><td class=\"num\"><a href=\"{Text(folder)}/{HtmlReport.FileName}\">{p["index"]!.GetValue<int>() + 1}</a></td><td class=\"num\">{p["line"]}</td>" +
                      $"<td class=\"tok\" style=\"white-space:pre-wrap\">{Text(p["text"]!.ToString())}</td><td class=\"num\">{p["tokens"]}</td>" +
                      $"<td><span class=\"tok prediction\">{Text(p["predicted_token"]?.ToString())}</span></td><td class=\"num\">{E(p["relative_error"]!.GetValue<double>())}</td>" +
                      $"<td class=\"num\">{(p["ordinary_relative_error"] is JsonValue o ? E(o.GetValue<double>()) : "–")}</td>");
            var sr = (p["stable_rank"] as JsonArray ?? []).Select(x => x!).Where(x => x["mode"]!.ToString() == "cumulative" && x["key"]!.ToString() == "layer").ToArray();
            foreach (int l in layers)
                sb.Append($"<td class=\"num\">{(sr.FirstOrDefault(x => x["layer"]!.GetValue<int>() == l) is { } e ? G(e["stable_rank"]!.GetValue<double>()) : "")}</td>");
            sb.Append("</tr>");
        }
        sb.Append("</table></div></section>");
        return Page($"LinearLens: {count} prompts on {modelType}", sb.ToString());
    }

    static double St(JsonObject d, string what, string q) => d[what]![q]!.GetValue<double>();

    /// <summary>Rebuilds summary.html from a folder's summary.json.</summary>
    public static string WriteHtmlFromFolder(string folder)
    {
        string json = Path.Combine(folder, JsonName);
        JsonObject s;
        try { s = JsonNode.Parse(File.ReadAllText(json))!.AsObject(); }
        catch (Exception e) when (e is System.Text.Json.JsonException or InvalidOperationException or NullReferenceException)
        { throw new LinearLensException($"{json} is not a summary.json written by LinearLens ({e.Message})"); }
        string html;
        // Html reads the values it shows without checking each one's JSON type (a file written by analyze has the right ones).
        try { html = Html(s); }
        catch (Exception e) when (e is InvalidOperationException or NullReferenceException or FormatException or InvalidCastException)
        { throw new LinearLensException($"{json} is not a summary.json written by LinearLens (a value is missing or of the wrong type: {e.Message}); run 'linearlens analyze --prompts … --out {folder}' again to rewrite it"); }
        string path = Path.Combine(folder, HtmlName);
        AtomicFile.WriteAllText(path, html);
        return path;
    }
}
