using System.Globalization;
using System.Text;

namespace LinearLens.Reporting;

/// <summary>
/// The small pieces every HTML page of LinearLens is made of: escaping of arbitrary token strings, numbers in the
/// invariant culture, the shared style sheet, and line plots drawn as inline SVG (no outside resource).
/// </summary>
public static class Html
{
    /// <summary>
    /// A token as readable text: control characters (C0, DEL, C1) and lone surrogates written as escapes (\n, \t,
    /// \r, \uXXXX) so that every token has a visible, unambiguous form; everything else as it is.
    /// </summary>
    public static string Visible(string s)
    {
        var sb = new StringBuilder(s.Length);
        for (int i = 0; i < s.Length; i++)
        {
            char c = s[i];
            if (char.IsHighSurrogate(c) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1])) { sb.Append(c).Append(s[++i]); continue; }
            if (char.IsSurrogate(c) || c < 0x20 || (c >= 0x7F && c <= 0x9F))
                sb.Append(c switch { '\n' => "\\n", '\t' => "\\t", '\r' => "\\r", _ => $"\\u{(int)c:X4}" });
            else sb.Append(c);
        }
        return sb.ToString();
    }

    /// <summary>Text for an element's content or a quoted attribute value: &amp; &lt; &gt; " ' escaped, after <see cref="Visible"/>.</summary>
    public static string Text(string? s)
    {
        if (s is null) return "";
        var v = Visible(s);
        var sb = new StringBuilder(v.Length + 16);
        foreach (char c in v)
            sb.Append(c switch { '&' => "&amp;", '<' => "&lt;", '>' => "&gt;", '"' => "&quot;", '\'' => "&#39;", _ => c.ToString() });
        return sb.ToString();
    }

    /// <summary>A number, round-trip exact, invariant culture (for data attributes the tests and scripts read).</summary>
    public static string R(double v) => v.ToString("R", CultureInfo.InvariantCulture);

    /// <summary>A number for reading: `digits` significant digits, invariant culture.</summary>
    public static string G(double v, int digits = 4) => v.ToString("G" + digits, CultureInfo.InvariantCulture);

    /// <summary>A small error as 1.2e-15.</summary>
    public static string E(double v) => v.ToString("0.0e+00", CultureInfo.InvariantCulture);

    public const string Style = """
        :root { --fg:#1b1b1b; --muted:#5f6368; --line:#d0d4da; --bg:#fff; --card:#f7f8fa; font-family: "DejaVu Sans", "Liberation Sans", Arial, sans-serif; }
        body { margin: 0 auto; max-width: 1200px; padding: 1.2em 1.5em 3em; color: var(--fg); background: var(--bg); line-height: 1.45; font-size: 15px; }
        h1 { font-size: 1.5em; margin: 0.2em 0 0.4em; } h2 { font-size: 1.2em; margin: 1.6em 0 0.5em; border-bottom: 1px solid var(--line); padding-bottom: 0.2em; }
        h3 { font-size: 1.02em; margin: 1em 0 0.4em; }
        dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 0.15em 1em; margin: 0.5em 0; }
        dl.facts dt { color: var(--muted); } dl.facts dd { margin: 0; overflow-wrap: anywhere; }
        .ok { color: #137333; font-weight: bold; } .bad { color: #b3261e; font-weight: bold; } .muted { color: var(--muted); }
        .tok { font-family: "DejaVu Sans Mono", "Liberation Mono", monospace; white-space: pre; }
        .strip { display: flex; flex-wrap: wrap; gap: 3px; padding: 0.5em; background: var(--card); border: 1px solid var(--line); border-radius: 4px; }
        .strip .tok { display: inline-block; padding: 1px 4px; border-radius: 3px; border: 1px solid rgba(0,0,0,0.12); font-size: 14px; min-width: 0.6em; cursor: default; }
        .strip .tok:hover { outline: 2px solid #1a73e8; }
        .chip { display: inline-block; border: 1px solid #c9ced6; border-radius: 3px; padding: 0 3px; margin: 1px 1px; background: #fff; line-height: 1.3; }
        .scale { display: inline-block; width: 160px; height: 12px; vertical-align: middle; border: 1px solid var(--line);
                 background: linear-gradient(to right, rgb(214,39,40), #fff, rgb(44,160,44)); }
        table { border-collapse: collapse; margin: 0.4em 0; font-size: 13.5px; }
        th, td { border: 1px solid var(--line); padding: 2px 6px; text-align: left; vertical-align: top; }
        th { background: var(--card); } td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
        .wide { overflow-x: auto; max-width: 100%; }
        .side { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; } .side > * { flex: 1 1 420px; min-width: 0; } .side > .wide { flex: 3 1 600px; }
        details { margin: 0.2em 0; } details > summary { cursor: pointer; } details.page > summary { font-weight: bold; }
        figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; border: 1px solid var(--line); } figcaption { color: var(--muted); font-size: 0.9em; }
        svg { max-width: 100%; height: auto; } svg text { font-family: "DejaVu Sans", "Liberation Sans", Arial, sans-serif; }
        @media print {
          body { max-width: none; padding: 0; font-size: 11px; } h2 { break-after: avoid; } figure, table, svg { break-inside: avoid; }
          .strip .tok:hover { outline: none; } .wide { overflow: visible; } a { color: inherit; text-decoration: none; }
        }
        """;

    /// <summary>Opens every collapsed section before printing (and restores them after), so the printout has all of it.</summary>
    public const string PrintScript = """
        <script>
        (function () {
          var opened = [];
          window.addEventListener('beforeprint', function () { document.querySelectorAll('details:not([open])').forEach(function (d) { d.open = true; opened.push(d); }); });
          window.addEventListener('afterprint', function () { opened.forEach(function (d) { d.open = false; }); opened = []; });
        })();
        </script>
        """;

    public static string Page(string title, string body) =>
        $"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">" +
        $"<title>{Text(title)}</title><style>{Style}</style></head>\n<body>\n{body}\n{PrintScript}\n</body></html>\n";

    /// <summary>One line (or band) of an SVG plot: points, optional per-point labels and a shaded band lo…hi.</summary>
    public sealed record Series(string Name, double[] X, double[] Y, string Color, bool Dashed = false, string Marker = "circle",
        string[]? PointLabels = null, double[]? BandLow = null, double[]? BandHigh = null, bool Connect = true);

    static readonly string[] Palette = ["#6a1b9a", "#00897b", "#ef6c00", "#1565c0", "#c62828", "#2e7d32", "#5d4037", "#ad1457"];
    public static string Color(int i) => Palette[i % Palette.Length];

    /// <summary>
    /// A line plot as inline SVG: axes with rounded ticks, the legend below the data area (never over it), point
    /// labels beside their points. Integer x ticks when every x is an integer.
    /// </summary>
    public static string LinePlot(string title, string xLabel, string yLabel, IReadOnlyList<Series> series, int width = 560, int height = 360, bool equalAspect = false)
    {
        var all = series.Where(s => s.X.Length > 0).ToList();
        int legendRows = all.Count;
        const int left = 64, right = 16, top = 34;
        int bottom = 44 + 18 * legendRows;
        int W = width, H = height + 18 * legendRows;
        double pw = W - left - right, ph = H - top - bottom;
        var xs = all.SelectMany(s => s.X).Where(double.IsFinite).ToArray();
        var ys = all.SelectMany(s => s.Y.Concat(s.BandLow ?? []).Concat(s.BandHigh ?? [])).Where(double.IsFinite).ToArray();
        double x0 = xs.Length > 0 ? xs.Min() : 0, x1 = xs.Length > 0 ? xs.Max() : 1, y0 = ys.Length > 0 ? ys.Min() : 0, y1 = ys.Length > 0 ? ys.Max() : 1;
        if (x1 - x0 < 1e-12) { x0 -= 0.5; x1 += 0.5; }
        if (y1 - y0 < 1e-12 * Math.Max(1, Math.Abs(y0))) { y0 -= 0.5; y1 += 0.5; }
        double padX = 0.04 * (x1 - x0), padY = 0.06 * (y1 - y0);
        bool labelled = all.Any(s => s.PointLabels is not null);
        x0 -= padX; x1 += labelled ? 0.25 * (x1 - x0) : padX; y0 -= padY; y1 += padY;
        double Px(double x) => left + (x - x0) / (x1 - x0) * pw;
        double Py(double y) => top + (y1 - y) / (y1 - y0) * ph;
        var sb = new StringBuilder();
        sb.Append($"<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\" role=\"img\" aria-label=\"{Text(title)}\">");
        sb.Append($"<rect width=\"{W}\" height=\"{H}\" fill=\"#fff\"/>");
        sb.Append($"<text x=\"{W / 2}\" y=\"20\" text-anchor=\"middle\" font-size=\"14\" font-weight=\"bold\">{Text(title)}</text>");
        sb.Append($"<rect x=\"{left}\" y=\"{top}\" width=\"{F(pw)}\" height=\"{F(ph)}\" fill=\"none\" stroke=\"#999\"/>");
        bool intX = xs.All(x => x == Math.Round(x));
        foreach (double t in Ticks(x0, x1, 8, intX))
            sb.Append($"<line x1=\"{F(Px(t))}\" x2=\"{F(Px(t))}\" y1=\"{top}\" y2=\"{F(top + ph)}\" stroke=\"#eee\"/><text x=\"{F(Px(t))}\" y=\"{F(top + ph + 14)}\" text-anchor=\"middle\" font-size=\"11\">{G(t, 4)}</text>");
        foreach (double t in Ticks(y0, y1, 6, false))
            sb.Append($"<line x1=\"{left}\" x2=\"{F(left + pw)}\" y1=\"{F(Py(t))}\" y2=\"{F(Py(t))}\" stroke=\"#eee\"/><text x=\"{left - 5}\" y=\"{F(Py(t) + 4)}\" text-anchor=\"end\" font-size=\"11\">{G(t, 4)}</text>");
        sb.Append($"<text x=\"{F(left + pw / 2)}\" y=\"{F(top + ph + 32)}\" text-anchor=\"middle\" font-size=\"12\">{Text(xLabel)}</text>");
        sb.Append($"<text transform=\"translate(14 {F(top + ph / 2)}) rotate(-90)\" text-anchor=\"middle\" font-size=\"12\">{Text(yLabel)}</text>");
        for (int si = 0; si < all.Count; si++)
        {
            var s = all[si];
            string dash = s.Dashed ? " stroke-dasharray=\"6 4\"" : "";
            if (s.BandLow is { } lo && s.BandHigh is { } hi)
            {
                var pts = Enumerable.Range(0, s.X.Length).Select(i => $"{F(Px(s.X[i]))},{F(Py(hi[i]))}")
                    .Concat(Enumerable.Range(0, s.X.Length).Reverse().Select(i => $"{F(Px(s.X[i]))},{F(Py(lo[i]))}"));
                sb.Append($"<polygon points=\"{string.Join(' ', pts)}\" fill=\"{s.Color}\" fill-opacity=\"0.18\" stroke=\"none\"/>");
            }
            if (s.Connect && s.X.Length > 1)
                sb.Append($"<polyline fill=\"none\" stroke=\"{s.Color}\" stroke-width=\"2\"{dash} points=\"{string.Join(' ', Enumerable.Range(0, s.X.Length).Select(i => $"{F(Px(s.X[i]))},{F(Py(s.Y[i]))}"))}\"/>");
            for (int i = 0; i < s.X.Length; i++)
            {
                sb.Append(MarkerSvg(s.Marker, Px(s.X[i]), Py(s.Y[i]), s.Color, $"{s.Name}: x = {G(s.X[i], 6)}, y = {G(s.Y[i], 6)}"));
                if (s.PointLabels is { } labels && i < labels.Length)
                    sb.Append($"<text x=\"{F(Px(s.X[i]) + 7)}\" y=\"{F(Py(s.Y[i]) - 5)}\" font-size=\"10.5\" fill=\"{s.Color}\">{Text(labels[i])}</text>");
            }
            double ly = top + ph + 50 + 18 * si;
            sb.Append($"<line x1=\"{left}\" x2=\"{left + 30}\" y1=\"{F(ly - 4)}\" y2=\"{F(ly - 4)}\" stroke=\"{s.Color}\" stroke-width=\"2\"{dash}/>");
            sb.Append(MarkerSvg(s.Marker, left + 15, ly - 4, s.Color, null));
            sb.Append($"<text x=\"{left + 38}\" y=\"{F(ly)}\" font-size=\"12\">{Text(s.Name)}</text>");
        }
        sb.Append("</svg>");
        return sb.ToString();
    }

    static string MarkerSvg(string marker, double x, double y, string color, string? tip)
    {
        string t = tip is null ? "" : $"<title>{Text(tip)}</title>";
        return marker switch
        {
            "square" => $"<rect x=\"{F(x - 3.5)}\" y=\"{F(y - 3.5)}\" width=\"7\" height=\"7\" fill=\"#fff\" stroke=\"{color}\" stroke-width=\"1.5\">{t}</rect>",
            "none" => "",
            _ => $"<circle cx=\"{F(x)}\" cy=\"{F(y)}\" r=\"3.5\" fill=\"{color}\">{t}</circle>",
        };
    }

    static string F(double v) => v.ToString("0.#", CultureInfo.InvariantCulture);

    /// <summary>About `count` round tick values (1, 2, 5 × 10^k steps) within lo…hi.</summary>
    public static double[] Ticks(double lo, double hi, int count, bool integers)
    {
        double raw = (hi - lo) / Math.Max(1, count);
        double mag = Math.Pow(10, Math.Floor(Math.Log10(raw)));
        double step = new[] { 1.0, 2, 5, 10 }.Select(m => m * mag).First(s => s >= raw);
        if (integers) step = Math.Max(1, Math.Round(step));
        var ticks = new List<double>();
        for (double t = Math.Ceiling(lo / step) * step; t <= hi + 1e-9 * step; t += step) ticks.Add(Math.Abs(t) < 1e-12 * step ? 0 : t);
        return ticks.ToArray();
    }
}
