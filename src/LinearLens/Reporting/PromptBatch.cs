using System.Diagnostics;
using System.Numerics;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using LinearLens.Analysis;
using LinearLens.Models;

namespace LinearLens.Reporting;

/// <summary>One prompt of a prompts file: its 1-based line number and its text.</summary>
public sealed record Prompt(int Line, string Text);

/// <summary>
/// A prompts file: plain text, one prompt per line; or JSON Lines (a .jsonl file, or one not named .txt whose first
/// non-blank line starts with '{'), one object with a string "text" field per line. Blank lines are skipped. A bad line is one
/// error that names the file and the line.
/// </summary>
public static class PromptFile
{
    public static Prompt[] Read(string path)
    {
        if (Directory.Exists(path)) throw new LinearLensException($"--prompts: {path} is a folder; give a text file with one prompt per line, or JSON Lines with a \"text\" field");
        if (!File.Exists(path)) throw new LinearLensException($"--prompts: {path} does not exist; give a text file with one prompt per line, or JSON Lines with a \"text\" field");
        var bytes = File.ReadAllBytes(path);
        var strict = new UTF8Encoding(false, throwOnInvalidBytes: true);
        var lines = new List<string>();
        int start = bytes.Length >= 3 && bytes[0] == 0xEF && bytes[1] == 0xBB && bytes[2] == 0xBF ? 3 : 0;
        for (int i = start; i <= bytes.Length; i++)
        {
            if (i < bytes.Length && bytes[i] != (byte)'\n') continue;
            try { lines.Add(strict.GetString(bytes, start, i - start).TrimEnd('\r')); }
            catch (DecoderFallbackException) { throw new LinearLensException($"{path} line {lines.Count + 1}: not valid UTF-8; save the prompts file as UTF-8"); }
            start = i + 1;
        }
        if (lines.Count > 0 && lines[^1].Length == 0) lines.RemoveAt(lines.Count - 1);
        // a .txt file is text even when its first prompt starts with '{' ("{name} went to the park")
        bool jsonLines = path.EndsWith(".jsonl", StringComparison.OrdinalIgnoreCase)
            || !path.EndsWith(".txt", StringComparison.OrdinalIgnoreCase) && lines.FirstOrDefault(l => !string.IsNullOrWhiteSpace(l))?.TrimStart().StartsWith('{') == true;
        string asText = path.EndsWith(".jsonl", StringComparison.OrdinalIgnoreCase) ? "" : " (a file of plain-text prompts: name it .txt)";
        var prompts = new List<Prompt>();
        for (int i = 0; i < lines.Count; i++)
        {
            string line = lines[i];
            if (string.IsNullOrWhiteSpace(line)) continue;
            if (!jsonLines) { prompts.Add(new Prompt(i + 1, line)); continue; }
            JsonNode? node;
            try { node = JsonNode.Parse(line); }
            catch (JsonException e) { throw new LinearLensException($"{path} line {i + 1}: not valid JSON ({e.Message.Split('.')[0]}); each line of a JSON Lines prompts file is an object like {{\"text\": \"…\"}}{asText}"); }
            if (node is not JsonObject o || o["text"] is not JsonValue v || !v.TryGetValue(out string? text))
                throw new LinearLensException($"{path} line {i + 1}: no string \"text\" field; each line of a JSON Lines prompts file is an object like {{\"text\": \"…\"}}{asText}");
            if (text.Length == 0) throw new LinearLensException($"{path} line {i + 1}: \"text\" is empty; give some text or remove the line");
            prompts.Add(new Prompt(i + 1, text));
        }
        if (prompts.Count == 0) throw new LinearLensException($"--prompts: {path} has no prompts (only blank lines); give one prompt per line");
        return prompts.ToArray();
    }
}

/// <summary>Where a prompts run stands after each prompt: for progress lines with an ETA.</summary>
public sealed record BatchProgress(int Done, int Total, Prompt Prompt, int Tokens, bool Reused, double Seconds, double? EtaSeconds);

/// <summary>What a prompts run did: how many prompts it computed and how many it found finished, and the summary's path.</summary>
public sealed record BatchResult(int Computed, int Reused, string SummaryJson, string SummaryHtml);

/// <summary>
/// `analyze --prompts`: the model loaded once, one folder per prompt (prompt-0001, … in file order) with its
/// analysis.json and report.html (figures when asked), then summary.json and summary.html over all prompts.
/// A folder whose analysis.json exists and was made by the same model from the same text, precision and options (with its figures when they are wanted) is finished and is not redone,
/// so an interrupted run started again computes only the rest. Every file is complete or absent.
/// </summary>
public static class PromptBatch
{
    public static string FolderName(int index) => $"prompt-{index + 1:D4}";

    public static BatchResult Run<T>(Transformer<T> model, Prompt[] prompts, string outDir, AnalysisOptions options, bool figures,
        Action<BatchProgress>? progress = null, CancellationToken cancel = default, Loading.ResolvedModel? source = null)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        var tokenizer = model.Checkpoint.RequireTokenizer();
        // Tokenize every prompt first: a bad line stops the run before any work.
        var ids = prompts.Select(p => tokenizer.Encode(p.Text) is { Length: > 0 } e ? e
            : throw new LinearLensException($"--prompts line {p.Line}: the text encodes to no tokens; give some text or remove the line")).ToArray();
        for (int i = 0; i < prompts.Length; i++)
        {
            try
            {
                model.Validate(ids[i]);
                ResourceEstimate.Check(model.Config, Analyzer.Shape(model.Config, ids[i].Length, options, System.Runtime.CompilerServices.Unsafe.SizeOf<T>()));
            }
            catch (LinearLensException e) { throw new LinearLensException($"--prompts line {prompts[i].Line}: {e.Message}"); }
        }
        // --out is created with the first prompt's folder: a run that fails before it leaves no empty folder behind
        var analyses = new JsonObject[prompts.Length];
        int computed = 0, reused = 0;
        double computeSeconds = 0;
        string modelPath = Path.GetFullPath(model.Checkpoint.Folder);
        var wanted = AnalysisJson.OptionsJson(options with { Layers = options.Layers ?? AnalysisOptions.DefaultLayers(model.Config.NumLayers) });
        for (int i = 0; i < prompts.Length; i++)
        {
            cancel.ThrowIfCancellationRequested();
            string folder = Path.Combine(outDir, FolderName(i));
            var sw = Stopwatch.StartNew();
            var done = Finished(folder, prompts[i].Text, ids[i], modelPath, Transformer<T>.DTypeName, wanted, figures);
            if (done is not null) { analyses[i] = done; reused++; }
            else
            {
                var report = Analyzer.Run(model, ids[i], options) with
                {
                    InputText = prompts[i].Text, HubId = source?.HubId, HubRevision = source?.Revision, HubCommit = source?.Commit,
                };
                analyses[i] = AnalysisFolder.Write(report, folder, figures);
                computed++;
                computeSeconds += sw.Elapsed.TotalSeconds;
            }
            int remaining = prompts.Length - i - 1;
            progress?.Invoke(new BatchProgress(i + 1, prompts.Length, prompts[i], ids[i].Length, done is not null, sw.Elapsed.TotalSeconds,
                computed > 0 ? computeSeconds / computed * remaining : null));
        }
        var summary = BatchSummary.Build(analyses, prompts, Enumerable.Range(0, prompts.Length).Select(FolderName).ToArray());
        string jsonPath = Path.Combine(outDir, BatchSummary.JsonName), htmlPath = Path.Combine(outDir, BatchSummary.HtmlName);
        AtomicFile.WriteAllText(jsonPath, JsonText.Write(summary));
        AtomicFile.WriteAllText(htmlPath, BatchSummary.Html(summary));
        return new BatchResult(computed, reused, jsonPath, htmlPath);
    }

    /// <summary>
    /// The folder's analysis.json when it is complete and was made by this model (its file or folder, so that a
    /// quantized copy of the same model is not taken for it) from this text and these ids, in this precision, with
    /// these options, and has its figures when they are wanted (attribution.png is the last one written); else null.
    /// </summary>
    static JsonObject? Finished(string folder, string text, int[] ids, string modelPath, string dtype, JsonObject options, bool figures)
    {
        string path = Path.Combine(folder, AnalysisFolder.JsonName);
        if (!File.Exists(path)) return null;
        if (figures && !File.Exists(Path.Combine(folder, "attribution.png"))) return null;
        try
        {
            var o = JsonNode.Parse(File.ReadAllText(path)) as JsonObject;
            return o is not null && o["input_text"]?.GetValue<string>() == text && o["dtype"]?.GetValue<string>() == dtype
                && o["model_path"]?.GetValue<string>() == modelPath
                && o["input_ids"] is JsonArray stored && stored.Select(x => x?.GetValue<int>()).SequenceEqual(ids.Select(x => (int?)x))
                && o["options"]?.ToJsonString() == options.ToJsonString() ? o : null;
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or FormatException) { return null; }
    }
}
