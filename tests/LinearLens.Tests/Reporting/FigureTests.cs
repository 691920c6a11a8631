using LinearLens.Analysis;
using LinearLens.Linearization;
using LinearLens.Reporting;
using LinearLens.Tests.Support;
using ScottPlot;

namespace LinearLens.Tests.Reporting;

/// <summary>
/// The figures' layouts on a long input (498 tokens), read from ScottPlot's objects after a render: legends in a
/// panel of their own (never over the data), a bounded number of legend items and token labels, axis limits that fit
/// the data, the heat map's σ panel beside the heat map.
/// </summary>
public sealed class FigureTests
{
    const int K = 8;
    static readonly AnalysisReport Long = SyntheticReport.Make(498, k: K);

    static Dictionary<string, Plot> Rendered(AnalysisReport r)
    {
        var plots = Figures.Plots(r).ToDictionary(p => p.name, p => p.plot);
        foreach (var p in plots.Values) p.GetImage(1000, 650);
        return plots;
    }

    static LegendItem[] Items(Plot p) => p.PlottableList.SelectMany(x => x.LegendItems).Where(i => !string.IsNullOrEmpty(i.LabelText)).ToArray();

    [Fact]
    public void EveryLegendSitsOutsideTheDataAreaAndNamesFewTokens()
    {
        int withLegend = 0;
        foreach (var (name, plot) in Rendered(Long))
        {
            var items = Items(plot);
            if (items.Length == 0) continue;
            withLegend++;
            Assert.False(plot.Legend.IsVisible, $"{name}: the legend is drawn inside the data area");
            var panel = Assert.Single(plot.Axes.GetPanels().OfType<ScottPlot.Panels.LegendPanel>());
            var data = plot.RenderManager.LastRender.DataRect;
            // the legend panel takes its room beside the data area
            if (panel.Edge == Edge.Right) Assert.True(data.Right < 1000 - 150, $"{name}: data area runs to {data.Right}");
            else Assert.True(data.Bottom < 650 - 60, $"{name}: data area runs to {data.Bottom}");
            Assert.True(items.Length <= Figures.MaxLegendItems, $"{name}: {items.Length} legend items");
            Assert.All(items, i => Assert.DoesNotContain("\\u201", i.LabelText));   // “ ” are drawn, not escaped
        }
        Assert.True(withLegend >= 9, $"only {withLegend} figures have a legend");
    }

    [Fact]
    public void SpectrumAxesEndAtTheLastComponent()
    {
        var plots = Rendered(Long);
        foreach (var name in new[] { "singular_values", "layer_spectra_layer_cumulative", "layer_spectra_mlp_layerwise" })
        {
            var x = plots[name].Axes.GetLimits();
            Assert.InRange(x.Left, -1, 0);
            Assert.InRange(x.Right, K - 1, K - 0.5);
        }
        Assert.InRange(plots["column_norms"].Axes.GetLimits().Right, Long.Hidden - 1, Long.Hidden);
    }

    [Fact]
    public void AttributionLabelsAreSampledAndBarsHaveNoOutline()
    {
        var plot = Rendered(Long)["attribution"];
        var ticks = plot.Axes.Bottom.TickGenerator.Ticks;
        Assert.InRange(ticks.Length, 10, Figures.MaxTickLabels);
        Assert.Contains(ticks, t => t.Position == 0);
        Assert.Contains(ticks, t => t.Position == 497);
        var bars = Assert.Single(plot.PlottableList.OfType<ScottPlot.Plottables.BarPlot>());
        Assert.Equal(498, bars.Bars.Count);
        Assert.All(bars.Bars, b => Assert.Equal(0, b.LineWidth));
        Assert.InRange(plot.Axes.GetLimits().Right, 497, 498);
        // few tokens: every one labelled
        var shortPlot = Rendered(SyntheticReport.Make(5))["attribution"];
        Assert.Equal(5, shortPlot.Axes.Bottom.TickGenerator.Ticks.Length);
    }

    [Fact]
    public void StableRankLegendTellsCumulativeFromLayerwise()
    {
        var plot = Rendered(Long)["stable_rank"];
        var lines = plot.PlottableList.OfType<ScottPlot.Plottables.Scatter>().ToArray();
        Assert.Equal(6, lines.Length);
        foreach (var l in lines)
        {
            bool cumulative = l.LegendText.Contains("cumulative");
            Assert.NotEqual(cumulative, l.LegendText.Contains("layerwise"));
            Assert.Equal(cumulative ? LinePattern.Solid : LinePattern.Dashed, l.LinePattern);
            Assert.Equal(cumulative ? MarkerShape.FilledCircle : MarkerShape.OpenSquare, l.MarkerShape);
        }
        Assert.Equal(Figures.StableRankLegend(OutputKey.Attn, JacobianMode.Layerwise), lines.Single(l => l.LegendText.StartsWith("attn") && l.LinePattern.Equals(LinePattern.Dashed)).LegendText);
    }

    [Fact]
    public void HeatmapSigmaPanelIsBesideTheHeatmap()
    {
        var f = Figures.Heatmap(Long);
        Assert.True(f.InsetRect.Left >= f.MainRect.Right, "the σ panel overlaps the heat map");
        var png = f.Png();
        Assert.True(png.Length > 10_000);
        Assert.Equal(K - 0.5, f.Inset.Axes.GetLimits().Right, 1e-12);
    }

    [Fact]
    public void LabelsQuoteEscapeAndShorten()
    {
        Assert.Equal("'\\n\\t'", Figures.Label("\n\t"));
        Assert.Equal("'\u201Cbig\u201D'", Figures.Label("\u201Cbig\u201D"));
        Assert.Equal("'\\u0001'", Figures.Label("\u0001"));
        Assert.Equal("'\\uFFFD'", Figures.Label("\ud800"));
        Assert.Equal($"'{new string('a', 18)}…'", Figures.Label(new string('a', 40)));
        Assert.Equal([0, 166, 331, 497], Figures.Sample(498, 4));
        Assert.Equal([0, 1, 2], Figures.Sample(3, 12));
    }

    [Fact]
    public void AllFiguresOfALongInputAreWritten()
    {
        // kept as test artifacts, to look at
        string dir = Path.Combine(Browser.ArtifactFolder, "figures-498-tokens");
        if (Directory.Exists(dir)) Directory.Delete(dir, true);
        var files = Figures.WriteAll(Long, dir);
        Assert.Equal(files.Count, Directory.GetFiles(dir, "*.png").Length);
        Assert.Empty(Directory.GetFiles(dir, ".*"));
        Assert.All(files, f => Assert.Contains(Path.GetFileNameWithoutExtension(f), Figures.Order));
    }
}
