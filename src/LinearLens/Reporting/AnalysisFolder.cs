using System.Text.Json.Nodes;
using LinearLens.Analysis;

namespace LinearLens.Reporting;

/// <summary>
/// What `analyze --out DIR` leaves in DIR: the PNG figures (optional), report.html and analysis.json. Every file is
/// written under a temporary name and renamed when complete; analysis.json comes last, so a folder that has it is
/// finished (that is what a resumed `analyze --prompts` run checks). The figures in DIR are this analysis' only.
/// </summary>
public static class AnalysisFolder
{
    public const string JsonName = "analysis.json";

    /// <summary>Writes the folder; returns analysis.json as the report read it.</summary>
    public static JsonObject Write(AnalysisReport r, string folder, bool figures)
    {
        Directory.CreateDirectory(folder);
        // An earlier analysis.json goes first: beside figures of this analysis it would pass for their analysis (and a
        // resumed run would take the folder for finished) if this one fails before its own is written.
        File.Delete(Path.Combine(folder, JsonName));
        string text = AnalysisJson.Write(r);
        var json = JsonNode.Parse(text)!.AsObject();   // the report reads the JSON, exactly as `linearlens report` does
        IReadOnlyList<string> written = figures ? Figures.WriteAll(r, folder) : [];
        // Figures of an earlier analysis in this folder that this one does not draw (none without figures, column_norms
        // without a formed J) would otherwise stay beside the new analysis.json and be embedded by `linearlens report`.
        foreach (var name in Figures.Order.Select(f => f + ".png").Except(written))
            File.Delete(Path.Combine(folder, name));
        AtomicFile.WriteAllText(Path.Combine(folder, HtmlReport.FileName), HtmlReport.Build(json, figures ? HtmlReport.Pngs(folder) : []));
        AtomicFile.WriteAllText(Path.Combine(folder, JsonName), text);
        return json;
    }
}
