using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace LinearLens.Reporting;

/// <summary>
/// The one JSON writer of every result LinearLens prints or saves. Readable (tokens such as "&lt;s&gt;" or "é"
/// as they are, not as \u escapes), and total: a number that is not finite (NaN, ±∞ — e.g. a log-probability of a
/// model whose weights hold NaN, or the output of a huge --lambda) is written as JSON null, because JSON has no
/// such numbers and a writer that throws on them would lose the whole result.
/// </summary>
public static class JsonText
{
    public static readonly JsonSerializerOptions Options = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping, WriteIndented = false };

    public static string Write(JsonNode node)
    {
        NullNonFinite(node);
        return node.ToJsonString(Options);
    }

    /// <summary>A string as a JSON string literal (for quoting tokens in text output).</summary>
    public static string Quote(string s) => JsonSerializer.Serialize(s, Options);

    /// <summary>Replaces every non-finite number in the tree with null, in place.</summary>
    public static void NullNonFinite(JsonNode? node)
    {
        switch (node)
        {
            case JsonObject o:
                foreach (var key in o.Select(p => p.Key).ToList())
                    if (IsNonFinite(o[key])) o[key] = null; else NullNonFinite(o[key]);
                break;
            case JsonArray a:
                for (int i = 0; i < a.Count; i++)
                    if (IsNonFinite(a[i])) a[i] = null; else NullNonFinite(a[i]);
                break;
        }
    }

    static bool IsNonFinite(JsonNode? n) => n is JsonValue v
        && (v.TryGetValue(out double d) && !double.IsFinite(d) || v.TryGetValue(out float f) && !float.IsFinite(f));
}
