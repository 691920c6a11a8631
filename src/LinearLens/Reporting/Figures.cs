using LinearLens.Analysis;
using LinearLens.Linearization;
using ScottPlot;
using SkiaSharp;

namespace LinearLens.Reporting;

/// <summary>
/// The paper's figures done properly, as PNG files (ScottPlot): heat map with singular-value inset, reconstruction
/// scatter (detached vs ordinary, error in the title), per-token spectra with decoded tokens, column norms, layer
/// spectra, stable rank across depth, the path plot and an attribution bar chart. Titles come from the data, never
/// from a hard-coded input text. Token labels are escaped where no installed font has the glyphs.
/// </summary>
public static class Figures
{
    const int Width = 1000, Height = 650;

    /// <summary>Writes every figure of a report into a folder; returns the file names.</summary>
    public static IReadOnlyList<string> WriteAll(AnalysisReport r, string folder)
    {
        Directory.CreateDirectory(folder);
        var files = new List<string>();
        void Save(string name, Action<string> draw) { AtomicFile.Publish(Path.Combine(folder, name), draw); files.Add(name); }
        Save("jacobian_heatmap.png", p => Heatmap(r, p));
        Save("reconstruction.png", p => Reconstruction(r, p));
        Save("singular_values.png", p => TokenSpectra(r, p));
        if (r.ColumnsAndRows.Length > 0) Save("column_norms.png", p => ColumnNorms(r, p));
        foreach (var mode in new[] { JacobianMode.Cumulative, JacobianMode.Layerwise })
            foreach (var key in new[] { OutputKey.Layer, OutputKey.Attn, OutputKey.Mlp })
                if (r.LayerSweep.Any(s => s.Key == key && s.Mode == mode))
                    Save($"layer_spectra_{Name(key)}_{Name(mode)}.png", p => LayerSpectra(r, key, mode, p));
        if (r.LayerSweep.Length > 0) Save("stable_rank.png", p => StableRank(r, p));
        if (r.Path.Length > 0 && r.Path[0].Projections.Length >= 2) Save("path.png", p => PathPlot(r, p));
        Save("attribution.png", p => AttributionBars(r, p));
        return files;
    }

    static string Name<TE>(TE e) where TE : Enum => e.ToString().ToLowerInvariant();

    static string Subtitle(AnalysisReport r) =>
        $"{r.ModelType}, {r.DType}, {r.InputIds.Length} tokens → {Label(r.PredictedToken)}";

    static readonly string SansFont = SKFontManager.Default.GetFontFamilies().Contains("DejaVu Sans") ? "DejaVu Sans" : Fonts.Sans;

    static Plot NewPlot(string title)
    {
        var plt = new Plot();
        plt.Font.Set(SansFont);
        plt.Title(title, size: 15);
        return plt;
    }

    static void IntegerTicks(IAxis axis) => axis.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic { IntegerTicksOnly = true };

    /// <summary>A token as a label: quoted, whitespace made visible, characters no installed font can draw escaped.</summary>
    public static string Label(string token)
    {
        var s = token.Replace("\n", "\\n").Replace("\t", "\\t");
        var sb = new System.Text.StringBuilder();
        foreach (var rune in s.EnumerateRunes())
        {
            string ch = rune.ToString();
            bool drawable = rune.Value < 0x250 || SKFontManager.Default.MatchCharacter(rune.Value) is not null;
            sb.Append(drawable ? ch : $"\\u{rune.Value:X4}");
        }
        return $"'{sb}'";
    }

    static string Tokens(IEnumerable<ScoredToken> t, int k = 3) => string.Join(" ", t.Take(k).Select(x => Label(x.Text)));

    static void Heatmap(AnalysisReport r, string path)
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
        // Inset: the token's top singular values.
        var sv = r.PerToken[i].SingularValues;
        var inset = new Plot();
        inset.Font.Set(SansFont);
        IntegerTicks(inset.Axes.Bottom);
        var sc = inset.Add.Scatter(Enumerable.Range(0, sv.Length).Select(x => (double)x).ToArray(), sv);
        sc.Color = Colors.Black;
        inset.Title($"σ of J{Sub(i)}", size: 11);
        inset.FigureBackground.Color = Colors.White.WithAlpha(0.9);
        Compose(plt, inset, path);
    }

    /// <summary>The main plot with a small plot drawn over its upper right corner (each rendered on its own, then composed).</summary>
    static void Compose(Plot main, Plot inset, string path)
    {
        using var surface = SKSurface.Create(new SKImageInfo(Width, Height));
        using (var mainImage = SKImage.FromEncodedData(main.GetImage(Width, Height).GetImageBytes()))
            surface.Canvas.DrawImage(mainImage, 0, 0);
        using (var insetImage = SKImage.FromEncodedData(inset.GetImage(250, 200).GetImageBytes()))
            surface.Canvas.DrawImage(insetImage, Width - 420, 75);
        using var image = surface.Snapshot();
        using var png = image.Encode(SKEncodedImageFormat.Png, 100);
        using var fs = File.Create(path);
        png.SaveTo(fs);
    }

    static string Sub(int i) => string.Concat(i.ToString().Select(c => (char)('₀' + (c - '0'))));

    static void Reconstruction(AnalysisReport r, string path)
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
        plt.ShowLegend(Alignment.UpperLeft);
        plt.SavePng(path, Width, Height);
    }

    static void TokenSpectra(AnalysisReport r, string path)
    {
        var plt = NewPlot($"Singular values of each token's detached Jacobian Jᵢ (labels: decoded U₀)\n{Subtitle(r)}");
        var cmap = new ScottPlot.Colormaps.Viridis();
        int n = r.PerToken.Length;
        for (int i = 0; i < n; i++)
        {
            var s = r.PerToken[i];
            var xs = Enumerable.Range(0, s.SingularValues.Length).Select(x => (double)x).ToArray();
            var line = plt.Add.Scatter(xs, s.SingularValues);
            line.Color = cmap.GetColor(n == 1 ? 0 : i / (double)(n - 1));
            line.LegendText = $"{i} {Label(r.Tokens[i])}: U₀ {Tokens(s.Components.FirstOrDefault()?.Left ?? [])}";
        }
        plt.Axes.SetLimitsX(-0.5, r.PerToken[0].SingularValues.Length * 1.6);
        IntegerTicks(plt.Axes.Bottom);
        plt.XLabel("component");
        plt.YLabel("σ");
        plt.ShowLegend(Alignment.UpperRight);
        plt.SavePng(path, Width, Height);
    }

    static void ColumnNorms(AnalysisReport r, string path)
    {
        var plt = NewPlot($"Sorted column norms ‖Jᵢ[:, j]‖ per token (labels: top column decoded)\n{Subtitle(r)}");
        var cmap = new ScottPlot.Colormaps.Viridis();
        int n = r.ColumnsAndRows.Length;
        foreach (var c in r.ColumnsAndRows)
        {
            var xs = Enumerable.Range(0, c.SortedColumnNorms.Length).Select(x => (double)x).ToArray();
            var line = plt.Add.ScatterLine(xs, c.SortedColumnNorms);
            line.Color = cmap.GetColor(n == 1 ? 0 : c.Token / (double)(n - 1));
            line.LegendText = $"{c.Token} {Label(r.Tokens[c.Token])}: {Tokens(c.ColumnTokens[0])}";
        }
        plt.Axes.SetLimitsX(-1, r.Hidden * 1.6);
        plt.XLabel("column (sorted)");
        plt.YLabel("column norm");
        plt.ShowLegend(Alignment.UpperRight);
        plt.SavePng(path, Width, Height);
    }

    static void LayerSpectra(AnalysisReport r, OutputKey key, JacobianMode mode, string path)
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
        plt.Axes.SetLimitsX(-0.5, rows[0].Spectrum.SingularValues.Length * 1.8);
        IntegerTicks(plt.Axes.Bottom);
        plt.XLabel("component");
        plt.YLabel("σₖ / σ₁");
        plt.ShowLegend(Alignment.UpperRight);
        plt.SavePng(path, Width, Height);
    }

    static void StableRank(AnalysisReport r, string path)
    {
        var plt = NewPlot($"Stable rank ‖J‖²_F / σ₁² across depth (tokens combined)\n{Subtitle(r)}");
        foreach (var mode in new[] { JacobianMode.Cumulative, JacobianMode.Layerwise })
            foreach (var key in new[] { OutputKey.Layer, OutputKey.Attn, OutputKey.Mlp })
            {
                var rows = r.LayerSweep.Where(s => s.Key == key && s.Mode == mode).OrderBy(s => s.Layer).ToArray();
                if (rows.Length == 0) continue;
                var line = plt.Add.Scatter(rows.Select(s => (double)s.Layer).ToArray(), rows.Select(s => s.Spectrum.StableRank).ToArray());
                line.LegendText = $"{Name(key)} output{(key == OutputKey.Layer ? " (with residual)" : "")}, {Name(mode)}";
                line.LinePattern = mode == JacobianMode.Layerwise ? LinePattern.Dashed : LinePattern.Solid;
                line.Color = key switch { OutputKey.Layer => Colors.Purple, OutputKey.Attn => Colors.Teal, _ => Colors.DarkOrange };
            }
        IntegerTicks(plt.Axes.Bottom);
        plt.XLabel("layers run");
        plt.YLabel("stable rank");
        plt.ShowLegend(Alignment.UpperLeft);
        plt.SavePng(path, Width, Height);
    }

    static void PathPlot(AnalysisReport r, string path)
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
        plt.SavePng(path, Width, Height);
    }

    static void AttributionBars(AnalysisReport r, string path)
    {
        var a = r.Attributions[0];
        var plt = NewPlot($"Exact contribution of each input token to the logit of {Label(a.Token)}: Σ = {a.Sum:G6}, logit = {a.Logit:G6} (|diff| {a.SumError:0.0e+00})\n{Subtitle(r)}");
        var bars = plt.Add.Bars(a.Contributions);
        for (int i = 0; i < bars.Bars.Count; i++) bars.Bars[i].FillColor = a.Contributions[i] >= 0 ? Colors.SeaGreen : Colors.IndianRed;
        plt.Axes.Bottom.SetTicks(Enumerable.Range(0, r.Tokens.Length).Select(x => (double)x).ToArray(), r.Tokens.Select((t, i) => $"{i} {Label(t)}").ToArray());
        plt.Axes.Bottom.TickLabelStyle.Rotation = 45;
        plt.Axes.Bottom.TickLabelStyle.Alignment = Alignment.MiddleLeft;
        plt.Axes.Bottom.MinimumSize = 120;
        plt.YLabel("⟨W_U[t], Jᵢxᵢ⟩");
        plt.SavePng(path, Width, Height);
    }
}
