using LinearLens.Analysis;
using LinearLens.Linearization;
using ScottPlot;
using SkiaSharp;

namespace LinearLens.Reporting;

/// <summary>
/// The paper's figures done properly, as PNG files (ScottPlot): heat map with singular-value inset, reconstruction
/// scatter (detached vs ordinary, error in the title), per-token spectra with decoded tokens, column norms, layer
/// spectra, stable rank across depth, the path plot and an attribution bar chart. Titles come from the data, never
/// from a hard-coded input text. Token labels are escaped where the plot's font has no glyph for them. Legends sit
/// outside the data area and name at most <see cref="MaxLegendItems"/> tokens; token axes label at most
/// <see cref="MaxTickLabels"/> tokens, so a 2,000-token input gives the same readable figures as a 3-token one.
/// </summary>
public static class Figures
{
    const int Width = 1000, Height = 650;
    /// <summary>At most this many tokens are named in a legend (evenly spaced, first and last included).</summary>
    public const int MaxLegendItems = 12;
    /// <summary>At most this many token labels on a token axis.</summary>
    public const int MaxTickLabels = 40;
    /// <summary>At most this many characters of a token in a label.</summary>
    const int MaxLabelChars = 18;

    /// <summary>The figures' names (without .png), in the order they are written and shown.</summary>
    public static readonly string[] Order =
    [
        "jacobian_heatmap", "reconstruction", "singular_values", "column_norms",
        .. new[] { "cumulative", "layerwise" }.SelectMany(m => new[] { "layer", "attn", "mlp" }.Select(k => $"layer_spectra_{k}_{m}")),
        "stable_rank", "path", "attribution",
    ];

    /// <summary>Writes every figure of a report into a folder (each file complete or absent); returns the file names.</summary>
    public static IReadOnlyList<string> WriteAll(AnalysisReport r, string folder)
    {
        Directory.CreateDirectory(folder);
        var files = new List<string>();
        AtomicFile.WriteAllBytes(Path.Combine(folder, "jacobian_heatmap.png"), Heatmap(r).Png());
        files.Add("jacobian_heatmap.png");
        foreach (var (name, plot) in Plots(r))
        {
            AtomicFile.Publish(Path.Combine(folder, name + ".png"), p => plot.SavePng(p, Width, Height));
            files.Add(name + ".png");
        }
        return files;
    }

    /// <summary>Every figure but the heat map as a ScottPlot plot (its layout inspectable before it is saved), with its name.</summary>
    public static IReadOnlyList<(string name, Plot plot)> Plots(AnalysisReport r)
    {
        var plots = new List<(string, Plot)>
        {
            ("reconstruction", Reconstruction(r)),
            ("singular_values", TokenSpectra(r)),
        };
        if (r.ColumnsAndRows.Length > 0) plots.Add(("column_norms", ColumnNorms(r)));
        foreach (var mode in new[] { JacobianMode.Cumulative, JacobianMode.Layerwise })
            foreach (var key in new[] { OutputKey.Layer, OutputKey.Attn, OutputKey.Mlp })
                if (r.LayerSweep.Any(s => s.Key == key && s.Mode == mode))
                    plots.Add(($"layer_spectra_{Name(key)}_{Name(mode)}", LayerSpectra(r, key, mode)));
        if (r.LayerSweep.Length > 0) plots.Add(("stable_rank", StableRank(r)));
        if (r.Path.Length > 0 && r.Path[0].Projections.Length >= 2) plots.Add(("path", PathPlot(r)));
        plots.Add(("attribution", AttributionBars(r)));
        return plots;
    }

    static string Name<TE>(TE e) where TE : Enum => e.ToString().ToLowerInvariant();

    static string Subtitle(AnalysisReport r) =>
        $"{r.ModelType}, {r.DType}, {r.InputIds.Length} tokens → {Label(r.PredictedToken)}";

    static readonly string SansFont = SKFontManager.Default.GetFontFamilies().Contains("DejaVu Sans") ? "DejaVu Sans" : Fonts.Sans;
    static readonly SKTypeface SansTypeface = SKTypeface.FromFamilyName(SansFont);

    static Plot NewPlot(string title)
    {
        var plt = new Plot();
        plt.Font.Set(SansFont);
        plt.Title(title, size: 15);
        return plt;
    }

    /// <summary>The legend in its own panel right of the data area, so it can never cover data.</summary>
    static void LegendOutside(Plot plt, Edge edge = Edge.Right)
    {
        plt.ShowLegend(edge);
        plt.Legend.FontSize = 11;
        plt.Legend.FontName = SansFont;
    }

    static void IntegerTicks(IAxis axis) => axis.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic { IntegerTicksOnly = true };

    /// <summary>At most `max` indices of 0…n−1, evenly spaced, the first and the last included.</summary>
    public static int[] Sample(int n, int max) =>
        n <= max ? Enumerable.Range(0, n).ToArray()
        : Enumerable.Range(0, max).Select(k => (int)Math.Round(k * (n - 1) / (double)(max - 1))).Distinct().ToArray();

    /// <summary>
    /// A token as a label: quoted, whitespace made visible, control characters and characters the plot's font has no
    /// glyph for escaped (\uXXXX), cut to a readable length.
    /// </summary>
    public static string Label(string token)
    {
        var sb = new System.Text.StringBuilder();
        int shown = 0;
        foreach (var rune in EnumerateRunesLenient(token))
        {
            if (shown++ == MaxLabelChars) { sb.Append('…'); break; }
            sb.Append(rune.Value switch
            {
                '\n' => "\\n", '\t' => "\\t", '\r' => "\\r",
                < 0x20 or (>= 0x7F and <= 0x9F) => $"\\u{rune.Value:X4}",
                _ when rune.Value == 0xFFFD && token.Any(char.IsSurrogate) => "\\uFFFD",
                _ => HasGlyph(rune) ? rune.ToString() : $"\\u{rune.Value:X4}",
            });
        }
        return $"'{sb}'";
    }

    static IEnumerable<System.Text.Rune> EnumerateRunesLenient(string s)
    {
        for (int i = 0; i < s.Length;)
        {
            if (System.Text.Rune.DecodeFromUtf16(s.AsSpan(i), out var rune, out int used) != System.Buffers.OperationStatus.Done) rune = System.Text.Rune.ReplacementChar;
            yield return rune;
            i += Math.Max(1, used);
        }
    }

    /// <summary>Whether the plot's font draws this character (the one ScottPlot renders with).</summary>
    public static bool HasGlyph(System.Text.Rune rune) => rune.Value == ' ' || SansTypeface.GetGlyph(rune.Value) != 0;

    static string Tokens(IEnumerable<ScoredToken> t, int k = 3) => string.Join(" ", t.Take(k).Select(x => Label(x.Text)));

    /// <summary>The heat map and, beside it (not over it), the token's top singular values.</summary>
    public sealed record HeatmapFigure(Plot Main, Plot Inset, PixelRect MainRect, PixelRect InsetRect)
    {
        public int Width => (int)InsetRect.Right + 10;

        public byte[] Png()
        {
            using var surface = SKSurface.Create(new SKImageInfo(Width, (int)MainRect.Bottom));
            surface.Canvas.Clear(SKColors.White);
            using (var mainImage = SKImage.FromEncodedData(Main.GetImage((int)MainRect.Width, (int)MainRect.Height).GetImageBytes()))
                surface.Canvas.DrawImage(mainImage, MainRect.Left, MainRect.Top);
            using (var insetImage = SKImage.FromEncodedData(Inset.GetImage((int)InsetRect.Width, (int)InsetRect.Height).GetImageBytes()))
                surface.Canvas.DrawImage(insetImage, InsetRect.Left, InsetRect.Top);
            using var image = surface.Snapshot();
            using var png = image.Encode(SKEncodedImageFormat.Png, 100);
            return png.ToArray();
        }
    }

    public static HeatmapFigure Heatmap(AnalysisReport r)
    {
        int d = r.Hidden, i = r.HeatmapToken;
        var data = new double[d, d];
        var abs = new double[d * d];
        for (int k = 0; k < d; k++)
            for (int j = 0; j < d; j++) { data[d - 1 - k, j] = r.HeatmapMatrix[k * d + j]; abs[k * d + j] = Math.Abs(r.HeatmapMatrix[k * d + j]); }
        Array.Sort(abs);
        double lim = Math.Max(abs[(int)(0.995 * (abs.Length - 1))], 1e-300);
        var plt = NewPlot($"Detached Jacobian J{Sub(i)} of token {i} {Label(r.Tokens[i])}\n{Subtitle(r)}");
        var hm = plt.Add.Heatmap(data);
        hm.Colormap = new ScottPlot.Colormaps.Balance();
        hm.ManualRange = new ScottPlot.Range(-lim, lim);
        plt.Add.ColorBar(hm);
        plt.XLabel("input dimension j");
        plt.YLabel("output dimension k");
        // The token's top singular values, in a panel of their own right of the heat map.
        var sv = r.PerToken[i].SingularValues;
        var inset = new Plot();
        inset.Font.Set(SansFont);
        IntegerTicks(inset.Axes.Bottom);
        var sc = inset.Add.Scatter(Enumerable.Range(0, sv.Length).Select(x => (double)x).ToArray(), sv);
        sc.Color = Colors.Black;
        inset.Axes.SetLimitsX(-0.5, sv.Length - 0.5);
        inset.Title($"σₖ of J{Sub(i)}", size: 12);
        inset.XLabel("component k");
        var main = new PixelRect(0, Width, 0, Height);
        return new HeatmapFigure(plt, inset, main, new PixelRect(Width + 10, Width + 290, 90, 330));
    }

    static string Sub(int i) => string.Concat(i.ToString().Select(c => (char)('₀' + (c - '0'))));

    static Plot Reconstruction(AnalysisReport r)
    {
        string ord = r.OrdinaryRelativeError is double e ? $", ordinary {e:0.00e+00}" : "";
        var plt = NewPlot($"Reconstruction of y: detached ‖Σ Jᵢxᵢ − y‖/‖y‖ = {r.RelativeError:0.00e+00}{ord}\n{Subtitle(r)}");
        if (r.OrdinaryReconstruction is { } o)
        {
            var so = plt.Add.ScatterPoints(r.Output, o);
            so.Color = Colors.SteelBlue; so.MarkerSize = 5; so.LegendText = "ordinary Jacobian Σ Jᵢxᵢ";
        }
        var sd = plt.Add.ScatterPoints(r.Output, r.Reconstruction);
        sd.Color = Colors.Crimson; sd.MarkerSize = 5; sd.LegendText = "detached Jacobian Σ Jᵢxᵢ";
        double lo = r.Output.Min(), hi = r.Output.Max();
        var line = plt.Add.Line(lo, lo, hi, hi);
        line.Color = Colors.Gray; line.LinePattern = LinePattern.Dashed; line.LegendText = "identity";
        plt.XLabel("y (forward pass)");
        plt.YLabel("reconstruction");
        LegendOutside(plt, Edge.Bottom);
        return plt;
    }

    /// <summary>Lines colored by token position; the legend names a sample of the tokens (all of them when few).</summary>
    static string TokenLegendNote(int n) => n > MaxLegendItems ? $"; legend: {MaxLegendItems} of {n} tokens, color = position" : "";

    static string TokenSubtitle(AnalysisReport r, int n) => Subtitle(r) + TokenLegendNote(n);

    static Plot TokenSpectra(AnalysisReport r)
    {
        int n = r.PerToken.Length;
        var plt = NewPlot($"Singular values of each token's detached Jacobian Jᵢ (labels: decoded U₀)\n{TokenSubtitle(r, n)}");
        var cmap = new ScottPlot.Colormaps.Viridis();
        var named = Sample(n, MaxLegendItems).ToHashSet();
        for (int i = 0; i < n; i++)
        {
            var s = r.PerToken[i];
            var xs = Enumerable.Range(0, s.SingularValues.Length).Select(x => (double)x).ToArray();
            var line = plt.Add.Scatter(xs, s.SingularValues);
            line.Color = cmap.GetColor(n == 1 ? 0 : i / (double)(n - 1));
            line.MarkerSize = n > 100 ? 2 : 5;
            line.LineWidth = n > 100 ? 1 : 1.5f;
            if (named.Contains(i)) line.LegendText = $"{i} {Label(r.Tokens[i])}: U₀ {Tokens(s.Components.FirstOrDefault()?.Left ?? [])}";
        }
        plt.Axes.SetLimitsX(-0.3, r.PerToken[0].SingularValues.Length - 0.7);
        IntegerTicks(plt.Axes.Bottom);
        plt.XLabel("component k");
        plt.YLabel("σₖ");
        LegendOutside(plt);
        return plt;
    }

    static Plot ColumnNorms(AnalysisReport r)
    {
        int n = r.ColumnsAndRows.Length;
        var plt = NewPlot($"Sorted column norms ‖Jᵢ[:, j]‖ per token (labels: top column decoded)\n{TokenSubtitle(r, n)}");
        var cmap = new ScottPlot.Colormaps.Viridis();
        var named = Sample(n, MaxLegendItems).ToHashSet();
        foreach (var c in r.ColumnsAndRows)
        {
            var xs = Enumerable.Range(0, c.SortedColumnNorms.Length).Select(x => (double)x).ToArray();
            var line = plt.Add.ScatterLine(xs, c.SortedColumnNorms);
            line.Color = cmap.GetColor(n == 1 ? 0 : c.Token / (double)(n - 1));
            if (named.Contains(c.Token)) line.LegendText = $"{c.Token} {Label(r.Tokens[c.Token])}: {Tokens(c.ColumnTokens[0])}";
        }
        plt.Axes.SetLimitsX(-1, r.Hidden);
        plt.XLabel("column (sorted)");
        plt.YLabel("column norm");
        LegendOutside(plt);
        return plt;
    }

    static Plot LayerSpectra(AnalysisReport r, OutputKey key, JacobianMode mode)
    {
        var rows = r.LayerSweep.Where(s => s.Key == key && s.Mode == mode).OrderBy(s => s.Layer).ToArray();
        var plt = NewPlot($"{Name(key)} output, {Name(mode)}: singular values / σ₁ per layer (labels: U₀)\n{Subtitle(r)}");
        var cmap = key switch { OutputKey.Layer => (IColormap)new ScottPlot.Colormaps.Plasma(), OutputKey.Attn => new ScottPlot.Colormaps.Haline(), _ => new ScottPlot.Colormaps.Viridis() };
        for (int i = 0; i < rows.Length; i++)
        {
            var s = rows[i].Spectrum;
            double s0 = s.SingularValues.Length > 0 && s.SingularValues[0] > 0 ? s.SingularValues[0] : 1;
            var line = plt.Add.Scatter(Enumerable.Range(0, s.SingularValues.Length).Select(x => (double)x).ToArray(), s.SingularValues.Select(v => v / s0).ToArray());
            line.Color = cmap.GetColor(rows.Length == 1 ? 0 : 0.85 * i / (rows.Length - 1));
            line.LegendText = $"layer {rows[i].Layer}: {Tokens(s.Components.FirstOrDefault()?.Left ?? [])}";
        }
        plt.Axes.SetLimitsX(-0.3, rows[0].Spectrum.SingularValues.Length - 0.7);
        IntegerTicks(plt.Axes.Bottom);
        plt.XLabel("component k");
        plt.YLabel("σₖ / σ₁");
        LegendOutside(plt);
        return plt;
    }

    /// <summary>The legend text of a stable-rank line: which output, and whether cumulative or layerwise (and what that means).</summary>
    public static string StableRankLegend(OutputKey key, JacobianMode mode) =>
        $"{Name(key)} output{(key == OutputKey.Layer ? " (residual stream)" : "")}, " +
        (mode == JacobianMode.Cumulative ? "cumulative (∂/∂ input embeddings; solid, ●)" : "layerwise (∂/∂ layer input; dashed, □)");

    static Plot StableRank(AnalysisReport r)
    {
        var plt = NewPlot($"Stable rank ‖J‖²_F / σ₁² across depth (tokens combined)\n{Subtitle(r)}");
        foreach (var mode in new[] { JacobianMode.Cumulative, JacobianMode.Layerwise })
            foreach (var key in new[] { OutputKey.Layer, OutputKey.Attn, OutputKey.Mlp })
            {
                var rows = r.LayerSweep.Where(s => s.Key == key && s.Mode == mode).OrderBy(s => s.Layer).ToArray();
                if (rows.Length == 0) continue;
                var line = plt.Add.Scatter(rows.Select(s => (double)s.Layer).ToArray(), rows.Select(s => s.Spectrum.StableRank).ToArray());
                line.LegendText = StableRankLegend(key, mode);
                line.LinePattern = mode == JacobianMode.Layerwise ? LinePattern.Dashed : LinePattern.Solid;
                line.MarkerShape = mode == JacobianMode.Layerwise ? MarkerShape.OpenSquare : MarkerShape.FilledCircle;
                line.MarkerSize = 8;
                line.LineWidth = 2;
                line.Color = key switch { OutputKey.Layer => Colors.Purple, OutputKey.Attn => Colors.Teal, _ => Colors.DarkOrange };
            }
        IntegerTicks(plt.Axes.Bottom);
        plt.XLabel("layers run");
        plt.YLabel("stable rank");
        LegendOutside(plt, Edge.Bottom);
        return plt;
    }

    static Plot PathPlot(AnalysisReport r)
    {
        var last = r.Path[^1];
        var plt = NewPlot($"Path of the top left singular vectors across layers, projected on layer {last.Layer}'s\n{Subtitle(r)}");
        var cmap = new ScottPlot.Colormaps.Plasma();
        for (int i = 0; i < r.Path.Length; i++)
        {
            var p = r.Path[i];
            var c = cmap.GetColor(r.Path.Length == 1 ? 0 : 0.85 * i / (r.Path.Length - 1));
            if (i > 0)
            {
                var seg = plt.Add.Line(r.Path[i - 1].Projections[0], r.Path[i - 1].Projections[1], p.Projections[0], p.Projections[1]);
                seg.Color = c; seg.LineWidth = 2;
            }
            var m = plt.Add.Marker(p.Projections[0], p.Projections[1]);
            m.Color = c; m.Size = 9;
            var t = plt.Add.Text($"{p.Layer}: {Tokens(p.Top)}", p.Projections[0], p.Projections[1]);
            t.LabelFontSize = 11; t.LabelFontColor = c;
        }
        var lastU = r.LayerSweep.First(s => s.Layer == last.Layer && s.Key == OutputKey.Layer && s.Mode == JacobianMode.Cumulative).Spectrum.Components;
        plt.XLabel($"⟨u₀(l), u₀({last.Layer})⟩  — U₀ {Tokens(lastU[0].Left)}");
        plt.YLabel($"⟨u₁(l), u₁({last.Layer})⟩  — U₁ {Tokens(lastU.Length > 1 ? lastU[1].Left : [])}");
        double x0 = r.Path.Min(p => p.Projections[0]), x1 = r.Path.Max(p => p.Projections[0]);
        double y0 = r.Path.Min(p => p.Projections[1]), y1 = r.Path.Max(p => p.Projections[1]);
        double padX = Math.Max(0.05, 0.1 * (x1 - x0)), padY = Math.Max(0.05, 0.1 * (y1 - y0));
        plt.Axes.SetLimits(x0 - padX, x1 + 3 * padX, y0 - padY, y1 + padY);
        return plt;
    }

    static Plot AttributionBars(AnalysisReport r)
    {
        var a = r.Attributions[0];
        int n = r.Tokens.Length;
        var plt = NewPlot($"Exact contribution of each input token to the logit of {Label(a.Token)}: Σ = {a.Sum:G6}, logit = {a.Logit:G6} (|diff| {a.SumError:0.0e+00})\n{Subtitle(r)}");
        var bars = plt.Add.Bars(a.Contributions);
        foreach (var (bar, i) in bars.Bars.Select((b, i) => (b, i)))
        {
            bar.FillColor = a.Contributions[i] >= 0 ? Colors.SeaGreen : Colors.IndianRed;
            bar.LineWidth = 0;   // outlines of thin bars merge into one black band
            bar.Size = 0.8;
        }
        var shown = Sample(n, MaxTickLabels);
        plt.Axes.Bottom.SetTicks(shown.Select(x => (double)x).ToArray(), shown.Select(i => $"{i} {Label(r.Tokens[i])}").ToArray());
        plt.Axes.Bottom.TickLabelStyle.Rotation = 90;
        plt.Axes.Bottom.TickLabelStyle.Alignment = Alignment.MiddleLeft;
        plt.Axes.Bottom.TickLabelStyle.FontSize = 10;
        plt.Axes.Bottom.MinimumSize = 150;
        plt.Axes.SetLimitsX(-0.6, n - 0.4);
        if (n > MaxTickLabels) plt.XLabel($"input token (every {Math.Ceiling((n - 1) / (double)(MaxTickLabels - 1)):0}th labelled)");
        plt.YLabel("⟨W_U[t], Jᵢxᵢ⟩");
        return plt;
    }
}
