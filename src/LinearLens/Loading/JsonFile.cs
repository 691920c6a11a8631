using System.Text.Json;

namespace LinearLens.Loading;

/// <summary>
/// Reading a JSON file that came from outside: valid UTF-8, valid JSON, an object at the top, and every string
/// and key decodable (an escape such as "\ud800" is valid JSON but no .NET string), all checked up front so that
/// the code that reads the values only has to check their types and ranges.
/// </summary>
public static class JsonFile
{
    /// <summary>Parses <paramref name="bytes"/> (the contents of <paramref name="path"/>); the caller disposes the document.</summary>
    public static JsonDocument Parse(byte[] bytes, string path, string fix = "the file is corrupt; fetch it again")
    {
        if (!System.Text.Unicode.Utf8.IsValid(bytes))
            throw new LinearLensException($"{path} is not valid UTF-8 text; {fix}");
        JsonDocument doc;
        try { doc = JsonDocument.Parse(bytes); }
        catch (JsonException e) { throw new LinearLensException($"{path} is not valid JSON ({e.Message}); {fix}"); }
        try
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw new LinearLensException($"{path} holds {Describe(doc.RootElement)} where a JSON object was expected; {fix}");
            CheckStrings(doc.RootElement, path, "$", fix);
            return doc;
        }
        catch { doc.Dispose(); throw; }
    }

    /// <summary>Throws a one-line error when a string or key inside <paramref name="e"/> cannot be decoded (a lone surrogate escape).</summary>
    public static void RequireDecodable(JsonElement e, string where) => CheckStrings(e, where, "the value", "fix the file");

    static void CheckStrings(JsonElement e, string path, string at, string fix)
    {
        switch (e.ValueKind)
        {
            case JsonValueKind.Object:
                foreach (var p in e.EnumerateObject())
                {
                    string name;
                    try { name = p.Name; }
                    catch (InvalidOperationException) { throw new LinearLensException($"{path}: a key in {at} is not a valid Unicode string (a lone surrogate escape); {fix}"); }
                    CheckStrings(p.Value, path, $"{at}.{name}", fix);
                }
                break;
            case JsonValueKind.Array:
                int i = 0;
                foreach (var x in e.EnumerateArray()) CheckStrings(x, path, $"{at}[{i++}]", fix);
                break;
            case JsonValueKind.String:
                try { e.GetString(); }
                catch (InvalidOperationException) { throw new LinearLensException($"{path}: {at} is not a valid Unicode string (a lone surrogate escape); {fix}"); }
                break;
        }
    }

    /// <summary>A JSON value as an error message names it: its kind and (shortened) text.</summary>
    public static string Describe(JsonElement e)
    {
        if (e.ValueKind == JsonValueKind.Undefined) return "nothing";
        string text = e.GetRawText();
        if (text.Length > 40) text = text[..37] + "…";
        return e.ValueKind switch
        {
            JsonValueKind.Object => $"an object {text}",
            JsonValueKind.Array => $"an array {text}",
            JsonValueKind.String => $"the string {text}",
            JsonValueKind.Number => $"the number {text}",
            JsonValueKind.True or JsonValueKind.False => $"the boolean {text}",
            _ => "null",
        };
    }
}
