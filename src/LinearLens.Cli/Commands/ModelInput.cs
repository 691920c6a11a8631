using System.CommandLine;
using LinearLens.Loading;

namespace LinearLens.Cli.Commands;

/// <summary>
/// The options every model command shares: --model (a local path, or an ORG/NAME Hub id with --revision), --text |
/// --token-ids, --dtype. Hub ids are resolved through the Hugging Face cache by <see cref="HubClient"/> with the
/// options the CLI was started with (read when a command opens its model, so that a bad HF_* variable is an error
/// line of that command, not of every command).
/// </summary>
sealed class ModelInput(Func<HubOptions> hub, TextWriter stderr)
{
    public readonly Option<string> Model = new("--model") { Description = "Model: a folder in Hugging Face layout (config.json, *.safetensors, tokenizer.json), a .gguf file or a folder holding one, a Hub id ORG/NAME (read from the Hugging Face cache, downloaded into it when missing), or ORG/NAME/FILE.gguf (or ORG/NAME:TAG, e.g. :Q4_K_M, as llama.cpp's -hf) for one file of a Hub repo of GGUF files", Required = true };
    public readonly Option<string> Revision = new("--revision") { Description = "Branch, tag or commit of a Hub id given to --model (default: main)" };
    public readonly Option<string> Text = new("--text") { Description = "Input text (tokenized with the model's tokenizer and its default special tokens)" };
    public readonly Option<string> TokenIds = new("--token-ids") { Description = "Input token ids instead of text, e.g. 1,403,407" };
    public readonly Option<string> DType = new("--dtype") { Description = "Compute precision: float64 (true double everywhere) or float32 (Hugging Face float32)", DefaultValueFactory = _ => "float64" };

    public void AddTo(Command c) { c.Options.Add(Model); c.Options.Add(Revision); c.Options.Add(Text); c.Options.Add(TokenIds); c.Options.Add(DType); }

    /// <summary>
    /// What --model names: an existing file or folder unchanged, an ORG/NAME id as its snapshot folder in the cache
    /// (downloaded with a progress bar on stderr when missing).
    /// </summary>
    public ResolvedModel Resolve(ParseResult p)
    {
        var model = Progress.Download(stderr, report => HubClient.Resolve(p.GetValue(Model)!, p.GetValue(Revision), hub, report));
        if (model.Note is { } note) stderr.WriteLine($"note: {note}");
        return model;
    }

    public Checkpoint Open(ParseResult p) => Open(Resolve(p));

    /// <summary>Opens what --model resolved to; what the checkpoint has to warn of (e.g. layers config.json leaves unused) goes to stderr.</summary>
    public Checkpoint Open(ResolvedModel model)
    {
        var ckpt = Checkpoint.Open(model.LocalPath);
        foreach (var w in ckpt.Warnings) stderr.WriteLine($"warning: {w}");
        return ckpt;
    }

    public bool IsFloat64(ParseResult p) => p.GetValue(DType) switch
    {
        "float64" => true,
        "float32" => false,
        var s => throw new LinearLensException($"--dtype '{s}' is not a precision LinearLens computes in; use float64 or float32"),
    };

    /// <summary>The input ids: --token-ids as given, or --text through the tokenizer. Exactly one of the two.</summary>
    public int[] Ids(ParseResult p, Checkpoint ckpt)
    {
        string? text = p.GetValue(Text), ids = p.GetValue(TokenIds);
        if (text is not null && ids is not null) throw new LinearLensException("give either --text or --token-ids, not both");
        if (ids is not null) return ParseIds(ids);
        if (text is null) throw new LinearLensException("no input: give --text \"…\" or --token-ids 1,2,3");
        if (text.Length == 0) throw new LinearLensException("--text is empty; give some text to analyse");
        var result = Encode(ckpt, text, "--text");
        if (result.Length == 0) throw new LinearLensException("--text encodes to no tokens; give some text to analyse");
        return result;
    }

    /// <summary>
    /// A text option through the checkpoint's tokenizer. An id the model has no embedding for means the tokenizer is
    /// another model's (a tokenizer.json copied in from elsewhere): said so here, not as a bad token id.
    /// </summary>
    public static int[] Encode(Checkpoint ckpt, string text, string option)
    {
        var ids = ckpt.RequireTokenizer().Encode(text);
        foreach (int id in ids)
            if ((uint)id >= (uint)ckpt.Config.VocabSize)
                throw new LinearLensException($"{option} encodes to token id {id}, outside the model's vocabulary 0…{ckpt.Config.VocabSize - 1}: the tokenizer in {ckpt.Folder} is not this model's; put the model's own tokenizer beside it");
        return ids;
    }

    public static int[] ParseIds(string s)
    {
        var parts = s.Split(',', StringSplitOptions.TrimEntries);
        if (parts.Length == 0 || parts.All(x => x.Length == 0)) throw new LinearLensException("--token-ids is empty; give ids like 1,403,407");
        var ids = new int[parts.Length];
        for (int i = 0; i < parts.Length; i++)
            if (!int.TryParse(parts[i], System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out ids[i]))
                throw new LinearLensException($"--token-ids: '{parts[i]}' (item {i + 1}) is not a non-negative integer; give ids like 1,403,407");
        return ids;
    }

    /// <summary>--detach ours|reference: what the detached map freezes and where attn/mlp are tapped.</summary>
    public static Option<string> DetachOption() => new("--detach")
    {
        Description = "ours (act(gate) frozen in every family, attn/mlp tapped after their post-norms) or reference (what the paper's code freezes: Phi's u and σ(gate) with gate linear, Gemma 3/OLMo 2 attn/mlp tapped before their post-norms)",
        DefaultValueFactory = _ => "ours",
    };

    public static Models.DetachPolicy ParseDetach(string? s) => s switch
    {
        "ours" or null => Models.DetachPolicy.Ours,
        "reference" => Models.DetachPolicy.Reference,
        _ => throw new LinearLensException($"--detach '{s}' is not a policy; use ours or reference"),
    };

    /// <summary>Readable strings of ids, or "&lt;id&gt;" when the folder has no tokenizer.</summary>
    public static string[] TokenStrings(Checkpoint ckpt, IEnumerable<int> ids) =>
        ids.Select(i => ckpt.Tokenizer?.TokenString(i) ?? $"<{i}>").ToArray();
}
