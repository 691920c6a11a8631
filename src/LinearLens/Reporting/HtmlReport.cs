using System.Text;
using System.Text.Json.Nodes;
using static LinearLens.Reporting.Html;

namespace LinearLens.Reporting;

/// <summary>
/// report.html: one self-contained page (styles, script and figures inline; nothing is fetched) built from
/// analysis.json alone, so `linearlens report DIR` rebuilds exactly what `analyze --out DIR` wrote. The PNG figures
/// found beside it are embedded as data: URIs; the stable-rank and path plots are drawn here as SVG from the JSON.
/// Long inputs stay readable: the attribution strip wraps, per-token details are collapsed in pages of 50 tokens.
/// </summary>
public static class HtmlReport
{
    public const string FileName = "report.html";
    const int PageSize = 50;

    /// <summary>Writes DIR/report.html from DIR/analysis.json and the PNGs in DIR.</summary>
    public static string WriteFromFolder(string folder)
    {
        string json = Path.Combine(folder, "analysis.json");
        if (!File.Exists(json)) throw new LinearLensException($"{Path.GetFullPath(folder)} has no analysis.json; run 'linearlens analyze --out {folder}' first");
        JsonObject a;
        try { a = JsonNode.Parse(File.ReadAllText(json))?.AsObject() ?? throw new FormatException("not an object"); }
        catch (Exception e) when (e is System.Text.Json.JsonException or FormatException or InvalidOperationException)
        { throw new LinearLensException($"{json} is not an analysis.json written by LinearLens ({e.Message})"); }
        string html;
        // Build reads the values it shows without checking each one's JSON type (a file written by analyze has the right
        // ones): a hand-edited or foreign file that has an object where a list belongs, or misses one, is this one line.
        try { html = Build(a, Pngs(folder)); }
        catch (Exception e) when (e is InvalidOperationException or NullReferenceException or FormatException or InvalidCastException)
        { throw new LinearLensException($"{json} is not an analysis.json written by LinearLens (a value is missing or of the wrong type: {e.Message}); run 'linearlens analyze --out {folder}' again to rewrite it"); }
        string path = Path.Combine(folder, FileName);
        AtomicFile.WriteAllText(path, html);
        return path;
    }

    /// <summary>The figures of a folder in the order analyze writes them.</summary>
    public static IReadOnlyList<(string name, byte[] png)> Pngs(string folder) =>
        Directory.EnumerateFiles(folder, "*.png").Where(f => !Path.GetFileName(f).StartsWith('.'))
            .OrderBy(f => Array.IndexOf(Figures.Order, Path.GetFileNameWithoutExtension(f)) is var i && i >= 0 ? i : 999).ThenBy(f => f, StringComparer.Ordinal)
            .Select(f => (Path.GetFileName(f), File.ReadAllBytes(f))).ToArray();

    public static string Build(JsonObject a, IReadOnlyList<(string name, byte[] png)> figures)
    {
        var tokens = Strings(a["tokens"]);
        int n = tokens.Length;
        string predicted = Str(a["predicted_token"]);
        var sb = new StringBuilder();
        string modelType = Str(a["model_type"]), dtype = Str(a["dtype"]);
        sb.Append($"<header><h1>LinearLens: {Text(modelType)}, {n} tokens → <span class=\"tok\" id=\"predicted\">{Text(predicted)}</span></h1>");
        sb.Append("<dl class=\"facts\">");
        Fact(sb, "model type", Text(modelType));
        if (Opt(a["hub_id"]) is { } hub)
            Fact(sb, "Hub id", $"<span class=\"tok\" id=\"hub-id\">{Text(hub)}</span>" + (Opt(a["hub_revision"]) is { } rev ? $" revision {Text(rev)}" : "") +
                (Opt(a["hub_commit"]) is { } commit ? $" <span class=\"muted\">(commit {Text(commit)})</span>" : ""));
        if (Opt(a["model_path"]) is { Length: > 0 } mp) Fact(sb, "model", $"<span class=\"tok\" id=\"model-path\">{Text(mp)}</span>");
        Fact(sb, "precision", Text(dtype));
        if (Opt(a["detach"]) is { } detach) Fact(sb, "detach policy", Text(detach));
        Fact(sb, "size", $"d = {I(a["hidden_size"])}, {I(a["num_layers"])} layers");
        Fact(sb, "method", $"{Text(Str(a["method"]))} <span class=\"muted\">({Text(Str(a["method_reason"]))})</span>");
        // long inputs: the text and the ids collapsed, so that the page starts with what was found
        if (Opt(a["input_text"]) is { } text) Fact(sb, "input text", Collapsible(text.Length > 400, $"{text.Length} characters", $"<span class=\"tok\" style=\"white-space:pre-wrap\">{Text(text)}</span>"));
        Fact(sb, "input ids", Collapsible(n > 40, $"{n} ids", $"<span class=\"tok\" style=\"white-space:normal\">{string.Join(", ", Ints(a["input_ids"]))}</span>"));
        sb.Append("</dl></header>");

        // Prediction and reconstruction.
        var rec = a["reconstruction"]!.AsObject();
        double rel = Num(rec["relative_error"]);
        double? ord = rec["ordinary_relative_error"] is JsonValue ov ? (double)ov : null;
        string okClass = rel < (dtype == "float64" ? 1e-12 : 1e-5) ? "ok" : "bad";
        sb.Append("<section id=\"reconstruction\"><h2>Prediction and reconstruction</h2><dl class=\"facts\">");
        Fact(sb, "predicted next token", $"<span class=\"tok chip\">{Text(predicted)}</span> (id {I(a["predicted_id"])})");
        double offset = rec["offset_norm"] is JsonValue on ? (double)on : 0;
        string c = offset > 0 ? " + c" : "";
        Fact(sb, "detached Jacobian", $"‖Σᵢ Jᵢxᵢ{c} − y‖/‖y‖ = <span class=\"{okClass}\" id=\"relative-error\">{E(rel)}</span> (max |error| {E(Num(rec["max_abs_error"]))}): the frozen linear system reproduces the model's output" +
            (okClass == "ok" ? " exactly, up to rounding" : " only approximately") + (offset > 0 ? $"; its constant term c (from the biases) has ‖c‖ = {G(offset)}" : ""));
        Fact(sb, "ordinary Jacobian", ord is double o ? $"‖Σᵢ Jᵢxᵢ − y‖/‖y‖ = <span id=\"ordinary-error\">{E(o)}</span>: the ordinary (non-frozen) Jacobian does not reconstruct y" : "<span class=\"muted\">not computed</span>");
        sb.Append("</dl></section>");

        // Attribution strips.
        sb.Append("<section id=\"attribution\"><h2>Exact attribution to the logit</h2>");
        sb.Append("<p class=\"muted\">Each input token's exact contribution ⟨W_U[t], Jᵢxᵢ⟩ to the logit of t (through the frozen final norm); they sum to the logit. " +
                  "Hover a token for its value. Color: <span class=\"scale\"></span> negative … positive, scaled to the largest |contribution|.</p>");
        foreach (var at in (a["attribution"] as JsonArray ?? []).Select(x => x!.AsObject()))
            AttributionStrip(sb, at, tokens);
        sb.Append("</section>");

        // Per-token spectra.
        var perToken = (a["per_token"] as JsonArray ?? []).Select(x => x!.AsObject()).ToArray();
        sb.Append("<section id=\"per-token\"><h2>Per-token SVD of Jᵢ</h2>");
        sb.Append("<p class=\"muted\">Top singular values of each token's detached Jacobian Jᵢ; the left vectors Uₖ decoded by logit (W_U·u), the right vectors Vₖ by cosine with the input embeddings. Open a token for all its components.</p>");
        for (int p0 = 0; p0 < perToken.Length; p0 += PageSize)
        {
            int p1 = Math.Min(perToken.Length, p0 + PageSize);
            bool paged = perToken.Length > PageSize;
            if (paged) sb.Append($"<details class=\"page\"{(p0 == 0 ? " open" : "")}><summary>tokens {p0}–{p1 - 1}</summary>");
            for (int i = p0; i < p1; i++) TokenSpectrum(sb, i, i < n ? tokens[i] : "", perToken[i]);
            if (paged) sb.Append("</details>");
        }
        sb.Append("</section>");

        // Combined spectrum.
        if (a["combined"] is JsonObject combined)
        {
            sb.Append($"<section id=\"combined\"><h2>Tokens combined [J₀ | … | J_{{n−1}}]</h2><p>stable rank ‖J‖²_F/σ₁² = {G(Num(combined["stable_rank"]))}{Estimated(combined)}</p>");
            ComponentTable(sb, combined, right: false);
            sb.Append("</section>");
        }

        // Layer sweep: tables beside the stable-rank and path plots.
        LayerSweep(sb, a);

        if (figures.Count > 0)
        {
            sb.Append("<section id=\"figures\"><h2>Figures</h2>");
            foreach (var (name, png) in figures)
                sb.Append($"<figure><img alt=\"{Text(name)}\" src=\"data:image/png;base64,{Convert.ToBase64String(png)}\"><figcaption>{Text(name)}</figcaption></figure>");
            sb.Append("</section>");
        }
        if (a["seconds"] is JsonObject secs)
            sb.Append($"<p class=\"muted\">Time: {string.Join(", ", secs.Select(kv => $"{Text(kv.Key)} {G(Num(kv.Value), 3)} s"))}.</p>");
        return Page($"LinearLens: {modelType}, {n} tokens → {Visible(predicted)}", sb.ToString());
    }

    static void AttributionStrip(StringBuilder sb, JsonObject at, string[] tokens)
    {
        var c = Doubles(at["contributions"]);
        double max = c.Length == 0 ? 1 : Math.Max(c.Max(Math.Abs), 1e-300);
        string target = Str(at["token"]);
        sb.Append($"<div class=\"attribution\" data-token-id=\"{I(at["token_id"])}\"><h3>Logit of <span class=\"tok chip\">{Text(target)}</span> (id {I(at["token_id"])})</h3><div class=\"strip\">");
        for (int i = 0; i < c.Length; i++)
        {
            string bg = Shade(c[i], max);
            string tok = i < tokens.Length ? tokens[i] : "";
            sb.Append($"<span class=\"tok\" data-index=\"{i}\" data-contribution=\"{R(c[i])}\" style=\"background:{bg}\" title=\"#{i} {Text(tok)}: {Signed(c[i])}\">{Text(tok)}</span>");
        }
        double bias = at["bias"] is JsonValue bv ? (double)bv : 0;
        if (bias != 0)
            sb.Append($"<span class=\"tok bias\" data-bias=\"{R(bias)}\" title=\"constant term c (biases): {Signed(bias)}\" style=\"background:{Shade(bias, max)}\">bias c</span>");
        sb.Append("</div>");
        double sum = Num(at["sum"]), logit = Num(at["logit"]);
        sb.Append($"<p>Σ contributions{(bias != 0 ? " + bias" : "")} = <b class=\"sum\" data-value=\"{R(sum)}\">{G(sum, 10)}</b>, logit = <b class=\"logit\" data-value=\"{R(logit)}\">{G(logit, 10)}</b>, " +
                  $"|difference| = <span class=\"{(Num(at["sum_error"]) <= 1e-8 * Math.Max(1, Math.Abs(logit)) ? "ok" : "bad")}\">{E(Num(at["sum_error"]))}</span></p>");
        // The largest contributions by magnitude: what a reader looks for first in a long input.
        var top = Enumerable.Range(0, c.Length).OrderByDescending(i => Math.Abs(c[i])).Take(10).ToArray();
        sb.Append("<details><summary>largest contributions</summary><table><tr><th>#</th><th>token</th><th>contribution</th></tr>");
        foreach (int i in top) sb.Append($"<tr><td class=\"num\">{i}</td><td class=\"tok\">{Text(i < tokens.Length ? tokens[i] : "")}</td><td class=\"num\">{Signed(c[i])}</td></tr>");
        sb.Append("</table></details></div>");
    }

    static string Signed(double v) => v.ToString("+0.000000;-0.000000", System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>White → green (positive) or red (negative), by |value| relative to the largest.</summary>
    static string Shade(double v, double max)
    {
        double f = Math.Abs(v) / max;
        var (r, g, b) = v >= 0 ? (44, 160, 44) : (214, 39, 40);
        return $"rgb({Mix(r, f)},{Mix(g, f)},{Mix(b, f)})";
    }

    static int Mix(int channel, double f) => (int)Math.Round(255 + (channel - 255) * Math.Clamp(f, 0, 1));

    static void TokenSpectrum(StringBuilder sb, int i, string token, JsonObject s)
    {
        var comps = (s["components"] as JsonArray ?? []).Select(x => x!.AsObject()).ToArray();
        var sv = Doubles(s["singular_values"]);
        string first = comps.Length == 0 ? "" : $" U₀ {TokenList(comps[0]["left_tokens"])} | V₀ {TokenList(comps[0]["right_tokens"])}";
        sb.Append($"<details class=\"token\" id=\"token-{i}\"><summary>#{i} <span class=\"tok chip\">{Text(token)}</span> σ₀ = {(sv.Length > 0 ? G(sv[0]) : "–")}," +
                  $" stable rank {G(Num(s["stable_rank"]))}{first}</summary>");
        ComponentTable(sb, s, right: true);
        sb.Append("</details>");
    }

    static void ComponentTable(StringBuilder sb, JsonObject s, bool right)
    {
        var comps = (s["components"] as JsonArray ?? []).Select(x => x!.AsObject()).ToArray();
        var sv = Doubles(s["singular_values"]);
        var res = s["residuals"] is JsonArray ra ? Doubles(ra) : null;
        sb.Append($"<table><tr><th>k</th><th>σₖ</th>{(res is null ? "" : "<th>residual</th>")}<th>left Uₖ (by logit)</th>{(right ? "<th>right Vₖ (by cosine)</th>" : "")}</tr>");
        for (int k = 0; k < sv.Length; k++)
        {
            var c = comps.FirstOrDefault(x => (int)Num(x["index"]) == k);
            sb.Append($"<tr><td class=\"num\">{k}</td><td class=\"num\">{G(sv[k], 6)}</td>{(res is null ? "" : $"<td class=\"num\">{E(res[k])}</td>")}" +
                      $"<td>{(c is null ? "" : TokenList(c["left_tokens"]))}</td>{(right ? $"<td>{(c is null ? "" : TokenList(c["right_tokens"]))}</td>" : "")}</tr>");
        }
        sb.Append("</table>");
    }

    static string TokenList(JsonNode? list) => list is JsonArray arr
        ? string.Join(" ", arr.Select(t => $"<span class=\"tok chip\" title=\"id {I(t!["id"])}, score {G(Num(t["score"]), 4)}\">{Text(Str(t["token"]))}</span>"))
        : "";

    static string TokenListPlain(JsonNode? list, int k = 3) => list is JsonArray arr ? string.Join(" ", arr.Take(k).Select(t => Visible(Str(t!["token"])))) : "";

    static string Estimated(JsonObject s) => s["frobenius_squared_estimated"] is JsonValue v && (bool)v ? " (‖J‖²_F estimated)" : "";

    static void LayerSweep(StringBuilder sb, JsonObject a)
    {
        var sweep = (a["layer_sweep"] as JsonArray ?? []).Select(x => x!.AsObject()).ToArray();
        if (sweep.Length == 0) return;
        sb.Append("<section id=\"layer-sweep\"><h2>Layer sweep (tokens combined)</h2>");
        sb.Append("<p class=\"muted\">Cumulative: Jacobian with respect to the input embeddings; layerwise: with respect to the residual stream entering that layer. " +
                  "layer = the residual stream after that many layers, attn/mlp = what that branch adds. U₀: the top left singular vector decoded by logit.</p>");
        sb.Append("<div class=\"side\"><div class=\"wide\">");
        string[] keys = ["layer", "attn", "mlp"];
        foreach (var mode in new[] { "cumulative", "layerwise" })
        {
            var rows = sweep.Where(s => Str(s["mode"]) == mode).ToArray();
            if (rows.Length == 0) continue;
            sb.Append($"<h3>{mode}</h3><table><tr><th>layer</th>");
            foreach (var k in keys) sb.Append($"<th>{k}: stable rank</th><th>{k}: U₀</th>");
            sb.Append("</tr>");
            foreach (int layer in rows.Select(s => (int)Num(s["layer"])).Distinct().Order())
            {
                sb.Append($"<tr><td class=\"num\">{layer}</td>");
                foreach (var k in keys)
                {
                    var e = rows.FirstOrDefault(s => (int)Num(s["layer"]) == layer && Str(s["key"]) == k);
                    var u0 = e?["spectrum"]?["components"] is JsonArray cs && cs.Count > 0 ? cs[0]!["left_tokens"] : null;
                    sb.Append(e is null ? "<td></td><td></td>" : $"<td class=\"num\">{G(Num(e["stable_rank"]))}</td><td>{TokenList(u0)}</td>");
                }
                sb.Append("</tr>");
            }
            sb.Append("</table>");
        }
        sb.Append("</div><div>");
        var series = new List<Series>();
        int ci = 0;
        foreach (var k in keys)
        {
            foreach (var mode in new[] { "cumulative", "layerwise" })
            {
                var rows = sweep.Where(s => Str(s["mode"]) == mode && Str(s["key"]) == k).OrderBy(s => Num(s["layer"])).ToArray();
                if (rows.Length == 0) continue;
                series.Add(new Series($"{k} output{(k == "layer" ? " (residual stream)" : "")}, {mode}{(mode == "cumulative" ? " (solid, ●)" : " (dashed, □)")}",
                    rows.Select(s => Num(s["layer"])).ToArray(), rows.Select(s => Num(s["stable_rank"])).ToArray(), Color(ci),
                    Dashed: mode == "layerwise", Marker: mode == "layerwise" ? "square" : "circle"));
            }
            ci++;
        }
        sb.Append(LinePlot("Stable rank ‖J‖²_F / σ₁² across depth", "layers run", "stable rank", series));
        if (a["path"] is JsonArray path && path.Count > 1 && path.All(p => (p!["projections"] as JsonArray)?.Count >= 2))
        {
            var pts = path.Select(p => p!.AsObject()).ToArray();
            int lastLayer = (int)Num(pts[^1]["layer"]);
            sb.Append(LinePlot($"Path of the top left singular vectors, projected on layer {lastLayer}'s", $"⟨u₀(l), u₀({lastLayer})⟩", $"⟨u₁(l), u₁({lastLayer})⟩",
                [new Series("cumulative residual stream, by layer", pts.Select(p => Doubles(p["projections"])[0]).ToArray(), pts.Select(p => Doubles(p["projections"])[1]).ToArray(),
                    Color(3), PointLabels: pts.Select(p => $"{I(p["layer"])}: {TokenListPlain(p["u0_tokens"])}").ToArray())]));
        }
        sb.Append("</div></div></section>");
    }

    static string Collapsible(bool collapse, string summary, string html) => collapse ? $"<details><summary>{Text(summary)}</summary>{html}</details>" : html;

    static void Fact(StringBuilder sb, string name, string html) => sb.Append($"<dt>{Text(name)}</dt><dd>{html}</dd>");

    static string Str(JsonNode? v) => v is JsonValue j && j.TryGetValue(out string? s) ? s : v?.ToString() ?? "";
    static string? Opt(JsonNode? v) => v is JsonValue j && j.TryGetValue(out string? s) ? s : null;
    static double Num(JsonNode? v) => v is JsonValue j && j.TryGetValue(out double d) ? d : double.NaN;
    static string I(JsonNode? v) => ((long)Num(v)).ToString(System.Globalization.CultureInfo.InvariantCulture);
    static string[] Strings(JsonNode? v) => v is JsonArray a ? a.Select(Str).ToArray() : [];
    static double[] Doubles(JsonNode? v) => v is JsonArray a ? a.Select(Num).ToArray() : [];
    static int[] Ints(JsonNode? v) => v is JsonArray a ? a.Select(x => (int)Num(x)).ToArray() : [];
}
