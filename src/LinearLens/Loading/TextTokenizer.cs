using System.Text;
using System.Text.Json;
using HfTokenizer = Tokenizers.DotNet.Tokenizer;

namespace LinearLens.Loading;

/// <summary>
/// A Hugging Face tokenizer (`tokenizer.json` run by the tokenizers library through Tokenizers.DotNet) with
/// transformers' default special-token rules (architectures.md §4): the file's post-processor decides, except
/// that Llama and Gemma tokenizer classes rebuild it from `add_bos_token` / `add_eos_token` in
/// `tokenizer_config.json`.
/// </summary>
public sealed class TextTokenizer : IDisposable
{
    readonly HfTokenizer _tok;
    readonly string _jsonPath;
    readonly int? _bosId, _eosId;
    readonly bool? _addBos, _addEos;   // null: keep what the post-processor does
    readonly bool _templateAddsBos, _templateAddsEos;
    string[]? _pieces;

    public string? TokenizerClass { get; }

    TextTokenizer(string jsonPath, HfTokenizer tok, string? cls, int? bos, int? eos, bool? addBos, bool? addEos)
    {
        _jsonPath = jsonPath; _tok = tok; TokenizerClass = cls; _bosId = bos; _eosId = eos; _addBos = addBos; _addEos = addEos;
        var empty = tok.Encode("");
        _templateAddsBos = bos is int b && empty.Length > 0 && empty[0] == b;
        _templateAddsEos = eos is int e && empty.Length > 0 && empty[^1] == e && !(empty.Length == 1 && _templateAddsBos && bos == e);
    }

    /// <summary>Loads `tokenizer.json` (+ `tokenizer_config.json` if present) from a folder; null when there is no tokenizer.json.</summary>
    public static TextTokenizer? TryLoad(string folder)
    {
        string json = Path.Combine(folder, "tokenizer.json");
        if (!File.Exists(json)) return null;
        HfTokenizer tok;
        try { tok = new HfTokenizer(vocabPath: json); }
        catch (Exception e) { throw new LinearLensException($"{json} could not be loaded by the tokenizers library: {e.Message}"); }

        string? cls = null; bool? addBos = null, addEos = null; string? bosText = null, eosText = null;
        string cfgPath = Path.Combine(folder, "tokenizer_config.json");
        if (File.Exists(cfgPath))
        {
            using (var doc = JsonFile.Parse(File.ReadAllBytes(cfgPath), cfgPath))
            {
                var r = doc.RootElement;
                cls = Str(r, "tokenizer_class", cfgPath);
                bosText = TokenText(r, "bos_token", cfgPath);
                eosText = TokenText(r, "eos_token", cfgPath);
                bool rebuilds = cls is not null && (cls.StartsWith("Llama") || cls.StartsWith("Gemma") || cls.StartsWith("CodeLlama"));
                if (rebuilds)
                {
                    addBos = Flag(r, "add_bos_token", cfgPath) ?? true;
                    addEos = Flag(r, "add_eos_token", cfgPath) ?? false;
                }
            }
        }
        var added = AddedTokens(json);
        int? bos = bosText is not null && added.TryGetValue(bosText, out int bi) ? bi : null;
        int? eos = eosText is not null && added.TryGetValue(eosText, out int ei) ? ei : null;
        return new TextTokenizer(json, tok, cls, bos, eos, addBos, addEos);
    }

    /// <summary>
    /// A tokenizer from a tokenizer.json document built in memory (a GGUF's vocabulary): its post-processor decides
    /// the special tokens; bos/eos are the ids it may add. `source` names the origin in error messages.
    /// </summary>
    public static TextTokenizer FromJson(string tokenizerJson, string source, int? bos, int? eos)
    {
        string tmp = Path.Combine(Path.GetTempPath(), $"linearlens-tokenizer-{Guid.NewGuid():N}.json");
        try
        {
            File.WriteAllText(tmp, tokenizerJson);
            HfTokenizer tok;
            try { tok = new HfTokenizer(vocabPath: tmp); }
            catch (Exception e) { throw new LinearLensException($"{source}: its tokenizer could not be built by the tokenizers library: {e.Message}"); }
            var t = new TextTokenizer(tmp, tok, null, bos, eos, null, null);
            t._pieces = t.LoadPieces();   // read now: the temporary file goes away
            return t;
        }
        finally { File.Delete(tmp); }
    }

    // tokenizer_config.json values: absent or null means "not set"; any other wrong type is an error naming the key.
    static string? Str(JsonElement r, string key, string file) =>
        !r.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null ? null
        : v.ValueKind == JsonValueKind.String ? v.GetString()
        : throw new LinearLensException($"{file}: '{key}' should be a string, found {JsonFile.Describe(v)}");

    static bool? Flag(JsonElement r, string key, string file) =>
        !r.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null ? null
        : v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean()
        : throw new LinearLensException($"{file}: '{key}' should be true or false, found {JsonFile.Describe(v)}");

    /// <summary>A special token: its text, or an AddedToken object {"content": text, …}.</summary>
    static string? TokenText(JsonElement r, string key, string file)
    {
        if (!r.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        if (v.ValueKind == JsonValueKind.String) return v.GetString();
        if (v.ValueKind == JsonValueKind.Object && v.TryGetProperty("content", out var c) && c.ValueKind == JsonValueKind.String) return c.GetString();
        throw new LinearLensException($"{file}: '{key}' should be a token text or an object with a string 'content', found {JsonFile.Describe(v)}");
    }

    /// <summary>The added (special) tokens of tokenizer.json, read without parsing the whole vocabulary.</summary>
    static Dictionary<string, int> AddedTokens(string json)
    {
        var result = new Dictionary<string, int>();
        using var fs = File.OpenRead(json);
        using var doc = JsonDocument.Parse(fs);
        if (doc.RootElement.TryGetProperty("added_tokens", out var arr) && arr.ValueKind == JsonValueKind.Array)
            foreach (var t in arr.EnumerateArray())
                if (t.TryGetProperty("content", out var c) && t.TryGetProperty("id", out var id))
                    result[c.GetString()!] = id.GetInt32();
        return result;
    }

    /// <summary>Token ids of a text without any special tokens (HF `add_special_tokens=False`).</summary>
    public int[] EncodeWithoutSpecialTokens(string text)
    {
        var ids = _tok.Encode(text).Select(x => (int)x).ToList();
        if (_templateAddsBos && ids.Count > 0 && ids[0] == _bosId) ids.RemoveAt(0);
        if (_templateAddsEos && ids.Count > 0 && ids[^1] == _eosId) ids.RemoveAt(ids.Count - 1);
        return ids.ToArray();
    }

    /// <summary>Token ids of a text with the default special tokens (HF `add_special_tokens=True`).</summary>
    public int[] Encode(string text)
    {
        var ids = _tok.Encode(text).Select(x => (int)x).ToList();
        if (_addBos is bool wantBos && _bosId is int bos)
        {
            if (_templateAddsBos && !wantBos && ids.Count > 0 && ids[0] == bos) ids.RemoveAt(0);
            else if (!_templateAddsBos && wantBos) ids.Insert(0, bos);
        }
        if (_addEos is bool wantEos && _eosId is int eos)
        {
            if (_templateAddsEos && !wantEos && ids.Count > 0 && ids[^1] == eos) ids.RemoveAt(ids.Count - 1);
            else if (!_templateAddsEos && wantEos) ids.Add(eos);
        }
        return ids.ToArray();
    }

    /// <summary>Text of generated ids (special tokens skipped, as HF's decode(skip_special_tokens=True)).</summary>
    public string Decode(IEnumerable<int> ids) => _tok.Decode(ids.Select(i => (uint)i).ToArray());

    /// <summary>
    /// One token as a readable string that keeps its leading space: the vocabulary piece with SentencePiece's
    /// '▁' and byte-level BPE's byte alphabet turned back into text (special tokens as written, e.g. "&lt;s&gt;").
    /// </summary>
    public string TokenString(int id)
    {
        _pieces ??= LoadPieces();
        if ((uint)id >= (uint)_pieces.Length || _pieces[id] is null) return $"<{id}>";
        return _pieces[id];
    }

    string[] LoadPieces()
    {
        using var fs = File.OpenRead(_jsonPath);
        using var doc = JsonDocument.Parse(fs);
        var r = doc.RootElement;
        var map = new Dictionary<int, string>();
        bool byteLevel = false;
        if (r.TryGetProperty("model", out var model) && model.TryGetProperty("vocab", out var vocab))
        {
            if (vocab.ValueKind == JsonValueKind.Object)
                foreach (var p in vocab.EnumerateObject()) map[p.Value.GetInt32()] = p.Name;
            else if (vocab.ValueKind == JsonValueKind.Array) // Unigram: [[piece, score], …]
            {
                int i = 0;
                foreach (var e in vocab.EnumerateArray()) map[i++] = e[0].GetString()!;
            }
        }
        if (r.TryGetProperty("decoder", out var dec)) byteLevel = dec.GetRawText().Contains("\"ByteLevel\"");
        var special = new HashSet<int>();
        if (r.TryGetProperty("added_tokens", out var added))
            foreach (var t in added.EnumerateArray()) { int id = t.GetProperty("id").GetInt32(); map[id] = t.GetProperty("content").GetString()!; special.Add(id); }
        int n = map.Count == 0 ? 0 : map.Keys.Max() + 1;
        var pieces = new string[n];
        var byteDecoder = byteLevel ? ByteLevelDecoder() : null;
        foreach (var (id, piece) in map)
            pieces[id] = special.Contains(id) ? piece : byteDecoder is not null ? FromByteLevel(piece, byteDecoder) : piece.Replace('▁', ' ');
        return pieces;
    }

    // GPT-2's byte ↔ unicode alphabet: printable bytes map to themselves, the others to U+0100 upwards.
    static Dictionary<char, byte> ByteLevelDecoder()
    {
        var bs = new List<int>();
        for (int b = '!'; b <= '~'; b++) bs.Add(b);
        for (int b = 0xA1; b <= 0xAC; b++) bs.Add(b);
        for (int b = 0xAE; b <= 0xFF; b++) bs.Add(b);
        var cs = new List<int>(bs);
        int extra = 0;
        for (int b = 0; b < 256; b++)
            if (!bs.Contains(b)) { bs.Add(b); cs.Add(256 + extra++); }
        var d = new Dictionary<char, byte>();
        for (int i = 0; i < bs.Count; i++) d[(char)cs[i]] = (byte)bs[i];
        return d;
    }

    static string FromByteLevel(string piece, Dictionary<char, byte> dec)
    {
        var bytes = new List<byte>(piece.Length);
        foreach (char ch in piece)
            if (dec.TryGetValue(ch, out byte b)) bytes.Add(b);
            else bytes.AddRange(Encoding.UTF8.GetBytes(ch.ToString()));
        return Encoding.UTF8.GetString(bytes.ToArray());
    }

    public void Dispose() => _tok.Dispose();
}
