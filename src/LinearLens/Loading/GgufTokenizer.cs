using System.Text;
using System.Text.Json;

namespace LinearLens.Loading;

/// <summary>
/// The tokenizer a GGUF file carries (tokenizer.ggml.*), rebuilt as the Hugging Face tokenizer.json that gives the
/// same ids, and run by the tokenizers library:
/// * `llama` — SentencePiece BPE: the vocabulary with byte fallback (&lt;0xNN&gt; tokens), merges derived from the
///   scores (every split of a normal token into two vocabulary pieces, ranked by the merged token's score, as
///   transformers' SentencePiece converter does), "▁" for spaces, a prefix space unless add_space_prefix is false;
/// * `gpt2` — byte-level BPE with the stored merges and the pre-tokenizer regex named by tokenizer.ggml.pre
///   (llama.cpp's llama-vocab.cpp names: llama-bpe for Llama 3, qwen2 for Qwen 2/3, gpt-2/default for GPT-2's).
/// Tokens of type CONTROL/UNKNOWN become special added tokens, USER_DEFINED ones non-special added tokens; BOS/EOS
/// are added as tokenizer.ggml.add_bos_token / add_eos_token say (llama.cpp's defaults when absent).
/// </summary>
public static class GgufTokenizer
{
    const int Normal = 1, Unknown = 2, Control = 3, UserDefined = 4;

    // Split regexes of Hugging Face's own tokenizer.json for these models (the same expressions llama.cpp uses).
    const string Llama3Regex = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const string Qwen2Regex = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    /// <summary>The tokenizer of the file, or null when it carries none (no tokenizer.ggml.model).</summary>
    public static TextTokenizer? TryLoad(GgufFile f, int vocabSize)
    {
        string? model = f.Str("tokenizer.ggml.model");
        if (model is null) return null;
        try
        {
            var (json, bos, eos) = BuildJson(f, vocabSize);
            return TextTokenizer.FromJson(json, f.Path, bos, eos);
        }
        catch (LinearLensException e) { throw GgufFile.Clean(e); }
    }

    /// <summary>The tokenizer.json document and the BOS/EOS ids it may add.</summary>
    public static (string json, int? bos, int? eos) BuildJson(GgufFile f, int vocabSize)
    {
        string model = f.Str("tokenizer.ggml.model")!;
        var tokens = f.Array<string>("tokenizer.ggml.tokens") ?? throw f.Error("has tokenizer.ggml.model but no tokenizer.ggml.tokens");
        if (tokens.Length == 0 || tokens.Length > vocabSize)
            throw f.Error($"has {tokens.Length} tokens for an embedding of {vocabSize} rows");
        var types = f.Array<int>("tokenizer.ggml.token_type") ?? Enumerable.Repeat(Normal, tokens.Length).ToArray();
        if (types.Length != tokens.Length) throw f.Error($"has {types.Length} token types for {tokens.Length} tokens");
        int? Id(string key)
        {
            long? v = f.Integer(key);
            if (v is null || v == uint.MaxValue || v == -1) return null;
            if (v < 0 || v >= tokens.Length) throw f.Error($"has {key} = {v}, outside the {tokens.Length} tokens");
            return (int)v;
        }
        int? bos = Id("tokenizer.ggml.bos_token_id"), eos = Id("tokenizer.ggml.eos_token_id"), unk = Id("tokenizer.ggml.unknown_token_id");
        string? pre = f.Str("tokenizer.ggml.pre");
        bool addBos = f.Bool("tokenizer.ggml.add_bos_token") ?? model == "llama" || pre == "llama-bpe";
        bool addEos = f.Bool("tokenizer.ggml.add_eos_token") ?? false;

        var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms))
        {
            w.WriteStartObject();
            w.WriteString("version", "1.0");
            w.WriteNull("truncation");
            w.WriteNull("padding");
            WriteAddedTokens(w, tokens, types);
            switch (model)
            {
                case "llama":
                {
                    var scores = f.Array<float>("tokenizer.ggml.scores") ?? new float[tokens.Length];
                    if (scores.Length != tokens.Length) throw f.Error($"has {scores.Length} token scores for {tokens.Length} tokens");
                    bool prefix = f.Bool("tokenizer.ggml.add_space_prefix") ?? true;
                    w.WritePropertyName("normalizer");
                    w.WriteStartObject(); w.WriteString("type", "Sequence"); w.WriteStartArray("normalizers");
                    if (prefix) { w.WriteStartObject(); w.WriteString("type", "Prepend"); w.WriteString("prepend", "▁"); w.WriteEndObject(); }
                    w.WriteStartObject(); w.WriteString("type", "Replace");
                    w.WritePropertyName("pattern"); w.WriteStartObject(); w.WriteString("String", " "); w.WriteEndObject();
                    w.WriteString("content", "▁"); w.WriteEndObject();
                    w.WriteEndArray(); w.WriteEndObject();
                    w.WriteNull("pre_tokenizer");
                    WriteTemplate(w, tokens, addBos ? bos : null, addEos ? eos : null, byteLevel: false);
                    w.WritePropertyName("decoder");
                    w.WriteStartObject(); w.WriteString("type", "Sequence"); w.WriteStartArray("decoders");
                    w.WriteStartObject(); w.WriteString("type", "Replace");
                    w.WritePropertyName("pattern"); w.WriteStartObject(); w.WriteString("String", "▁"); w.WriteEndObject();
                    w.WriteString("content", " "); w.WriteEndObject();
                    w.WriteStartObject(); w.WriteString("type", "ByteFallback"); w.WriteEndObject();
                    w.WriteStartObject(); w.WriteString("type", "Fuse"); w.WriteEndObject();
                    if (prefix) { w.WriteStartObject(); w.WriteString("type", "Strip"); w.WriteString("content", " "); w.WriteNumber("start", 1); w.WriteNumber("stop", 0); w.WriteEndObject(); }
                    w.WriteEndArray(); w.WriteEndObject();
                    WriteBpeModel(w, tokens, SentencePieceMerges(tokens, types, scores), unk is int u ? tokens[u] : null, byteFallback: true, ignoreMerges: false);
                    break;
                }
                case "gpt2":
                {
                    var merges = f.Array<string>("tokenizer.ggml.merges") ?? throw f.Error("has a gpt2 tokenizer without tokenizer.ggml.merges");
                    var pairs = new List<(string, string)>(merges.Length);
                    foreach (var m in merges)
                    {
                        int sp = m.IndexOf(' ');
                        if (sp <= 0 || sp == m.Length - 1) throw f.Error($"has the merge '{m}', not two pieces separated by one space");
                        pairs.Add((m[..sp], m[(sp + 1)..]));
                    }
                    string? regex = pre switch
                    {
                        "llama-bpe" or "llama3" => Llama3Regex,
                        "qwen2" => Qwen2Regex,
                        "gpt-2" or "gpt2" or "default" or null => null,   // GPT-2's own regex, inside ByteLevel
                        _ => throw f.Error($"has tokenizer.ggml.pre = '{pre}', a pre-tokenizer LinearLens does not know (supported: llama-bpe, qwen2, gpt-2, default)"),
                    };
                    if (pre == "qwen2") { w.WritePropertyName("normalizer"); w.WriteStartObject(); w.WriteString("type", "NFC"); w.WriteEndObject(); }
                    else w.WriteNull("normalizer");
                    w.WritePropertyName("pre_tokenizer");
                    if (regex is not null)
                    {
                        w.WriteStartObject(); w.WriteString("type", "Sequence"); w.WriteStartArray("pretokenizers");
                        w.WriteStartObject(); w.WriteString("type", "Split");
                        w.WritePropertyName("pattern"); w.WriteStartObject(); w.WriteString("Regex", regex); w.WriteEndObject();
                        w.WriteString("behavior", "Isolated"); w.WriteBoolean("invert", false); w.WriteEndObject();
                        WriteByteLevel(w, useRegex: false);
                        w.WriteEndArray(); w.WriteEndObject();
                    }
                    else WriteByteLevel(w, useRegex: true);
                    WriteTemplate(w, tokens, addBos ? bos : null, addEos ? eos : null, byteLevel: true);
                    w.WritePropertyName("decoder"); WriteByteLevel(w, useRegex: true);
                    WriteBpeModel(w, tokens, pairs, null, byteFallback: false, ignoreMerges: pre is "llama-bpe" or "llama3");
                    break;
                }
                default:
                    throw f.Error($"has tokenizer.ggml.model = '{model}', which LinearLens does not read (supported: llama, gpt2); pass --token-ids instead of --text");
            }
            w.WriteEndObject();
        }
        return (Encoding.UTF8.GetString(ms.ToArray()), bos, eos);
    }

    /// <summary>
    /// SentencePiece BPE merges from scores: for each normal token (in id order), every split into two vocabulary
    /// pieces, ordered by the pieces' ids; all of them then stably sorted by the merged token's score, best first.
    /// </summary>
    internal static List<(string, string)> SentencePieceMerges(string[] tokens, int[] types, float[] scores)
    {
        var vocab = new Dictionary<string, int>();
        for (int i = 0; i < tokens.Length; i++) vocab.TryAdd(tokens[i], i);
        var merges = new List<(string l, string r, float score)>();
        var local = new List<(string l, string r, float score, int li, int ri)>();
        for (int i = 0; i < tokens.Length; i++)
        {
            if (types[i] != Normal) continue;
            string m = tokens[i];
            local.Clear();
            for (int k = 1; k < m.Length; k++)
            {
                if (char.IsLowSurrogate(m[k])) continue;   // never split a code point
                string l = m[..k], r = m[k..];
                if (vocab.TryGetValue(l, out int li) && vocab.TryGetValue(r, out int ri)) local.Add((l, r, scores[i], li, ri));
            }
            foreach (var x in local.OrderBy(x => x.li).ThenBy(x => x.ri)) merges.Add((x.l, x.r, x.score));
        }
        return merges.OrderByDescending(x => x.score).Select(x => (x.l, x.r)).ToList();
    }

    static void WriteAddedTokens(Utf8JsonWriter w, string[] tokens, int[] types)
    {
        w.WriteStartArray("added_tokens");
        for (int i = 0; i < tokens.Length; i++)
        {
            if (types[i] is not (Unknown or Control or UserDefined) || tokens[i].Length == 0) continue;
            w.WriteStartObject();
            w.WriteNumber("id", i);
            w.WriteString("content", tokens[i]);
            w.WriteBoolean("single_word", false); w.WriteBoolean("lstrip", false); w.WriteBoolean("rstrip", false);
            w.WriteBoolean("normalized", false);
            w.WriteBoolean("special", types[i] != UserDefined);
            w.WriteEndObject();
        }
        w.WriteEndArray();
    }

    static void WriteByteLevel(Utf8JsonWriter w, bool useRegex)
    {
        w.WriteStartObject(); w.WriteString("type", "ByteLevel");
        w.WriteBoolean("add_prefix_space", false); w.WriteBoolean("trim_offsets", false); w.WriteBoolean("use_regex", useRegex);
        w.WriteEndObject();
    }

    /// <summary>TemplateProcessing that adds BOS before / EOS after the sequence (either may be absent).</summary>
    static void WriteTemplate(Utf8JsonWriter w, string[] tokens, int? bos, int? eos, bool byteLevel)
    {
        w.WritePropertyName("post_processor");
        w.WriteStartObject();
        w.WriteString("type", "Sequence");
        w.WriteStartArray("processors");
        if (byteLevel) WriteByteLevel(w, useRegex: false);
        w.WriteStartObject();
        w.WriteString("type", "TemplateProcessing");
        void Piece(string kind, string id, int typeId)
        {
            w.WriteStartObject(); w.WritePropertyName(kind); w.WriteStartObject();
            w.WriteString("id", id); w.WriteNumber("type_id", typeId);
            w.WriteEndObject(); w.WriteEndObject();
        }
        void Seq(string id, int typeId)
        {
            if (bos is int b) Piece("SpecialToken", tokens[b], typeId);
            Piece("Sequence", id, typeId);
            if (eos is int e) Piece("SpecialToken", tokens[e], typeId);
        }
        w.WriteStartArray("single"); Seq("A", 0); w.WriteEndArray();
        w.WriteStartArray("pair"); Seq("A", 0); Seq("B", 1); w.WriteEndArray();
        w.WriteStartObject("special_tokens");
        foreach (int id in new[] { bos, eos }.OfType<int>().Distinct())
        {
            w.WriteStartObject(tokens[id]);
            w.WriteString("id", tokens[id]);
            w.WriteStartArray("ids"); w.WriteNumberValue(id); w.WriteEndArray();
            w.WriteStartArray("tokens"); w.WriteStringValue(tokens[id]); w.WriteEndArray();
            w.WriteEndObject();
        }
        w.WriteEndObject();
        w.WriteEndObject();
        w.WriteEndArray();
        w.WriteEndObject();
    }

    static void WriteBpeModel(Utf8JsonWriter w, string[] tokens, List<(string, string)> merges, string? unk, bool byteFallback, bool ignoreMerges)
    {
        w.WritePropertyName("model");
        w.WriteStartObject();
        w.WriteString("type", "BPE");
        w.WriteNull("dropout");
        if (unk is null) w.WriteNull("unk_token"); else w.WriteString("unk_token", unk);
        w.WriteNull("continuing_subword_prefix");
        w.WriteNull("end_of_word_suffix");
        w.WriteBoolean("fuse_unk", byteFallback);
        w.WriteBoolean("byte_fallback", byteFallback);
        w.WriteBoolean("ignore_merges", ignoreMerges);
        w.WriteStartObject("vocab");
        var seen = new HashSet<string>();
        for (int i = 0; i < tokens.Length; i++)
            if (seen.Add(tokens[i])) w.WriteNumber(tokens[i], i);
        w.WriteEndObject();
        w.WriteStartArray("merges");
        foreach (var (l, r) in merges) { w.WriteStartArray(); w.WriteStringValue(l); w.WriteStringValue(r); w.WriteEndArray(); }
        w.WriteEndArray();
        w.WriteEndObject();
    }
}
