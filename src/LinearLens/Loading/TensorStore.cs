using System.Text.Json;
using System.Text.RegularExpressions;

namespace LinearLens.Loading;

/// <summary>
/// All tensors of a checkpoint: `model.safetensors`, or the shards named by `model.safetensors.index.json`.
/// Names are canonicalised to the text-only layout (`model.…`, `lm_head.weight`): multimodal Gemma 3 prefixes
/// (`language_model.model.`, `model.language_model.`) are mapped, vision tensors and rotary buffers ignored.
/// </summary>
public sealed partial class TensorStore : IDisposable
{
    readonly List<IDisposable> _files = [];   // the mapped files (or GGUF model) the tensors point into
    readonly Dictionary<string, StoredTensor> _tensors = new();
    public string Folder { get; }

    TensorStore(string folder) => Folder = folder;

    public static TensorStore Open(string folder)
    {
        var store = new TensorStore(folder);
        try
        {
            string single = Path.Combine(folder, "model.safetensors"), index = Path.Combine(folder, "model.safetensors.index.json");
            IEnumerable<string> files;
            if (File.Exists(single)) files = [single];
            else if (File.Exists(index)) files = ShardsOf(index);
            else throw new LinearLensException($"no model.safetensors or model.safetensors.index.json in {folder} (LinearLens reads safetensors checkpoints in Hugging Face layout)");
            foreach (var f in files)
            {
                var file = SafetensorsFile.Open(f);
                store._files.Add(file);
                foreach (var (name, t) in file.Tensors)
                    if (Canonical(name) is { } canon)
                    {
                        if (store._tensors.TryGetValue(canon, out var other))
                            throw new LinearLensException($"tensor '{canon}' is stored twice, in {Path.GetFileName(other.File)} and {Path.GetFileName(t.File)}; the checkpoint is inconsistent");
                        store._tensors[canon] = t with { Name = canon };
                    }
            }
            return store;
        }
        catch { store.Dispose(); throw; }
    }

    /// <summary>A store over tensors already named canonically (a GGUF model's); it owns and disposes `owner`.</summary>
    public static TensorStore FromTensors(string source, IEnumerable<StoredTensor> tensors, IDisposable owner)
    {
        var store = new TensorStore(source);
        store._files.Add(owner);
        foreach (var t in tensors) store._tensors[t.Name] = t;
        return store;
    }

    /// <summary>The shard files an index names: its weight_map is an object of tensor name → plain file name in the same folder.</summary>
    static IEnumerable<string> ShardsOf(string index)
    {
        string folder = Path.GetDirectoryName(index)!;
        return ShardNames(index).Select(n => Path.Combine(folder, n)).ToList();
    }

    /// <summary>
    /// The distinct shard file names an index names: its weight_map is an object of tensor name → plain file name in
    /// the same folder, every value checked for its JSON type.
    /// </summary>
    public static IReadOnlyList<string> ShardNames(string indexPath)
    {
        using var doc = JsonFile.Parse(File.ReadAllBytes(indexPath), indexPath, "the index file is corrupt; fetch it again");
        if (!doc.RootElement.TryGetProperty("weight_map", out var map) || map.ValueKind != JsonValueKind.Object)
            throw new LinearLensException($"{indexPath} has no weight_map object; the index file is corrupt");
        var names = new List<string>();
        foreach (var p in map.EnumerateObject())
        {
            if (p.Value.ValueKind != JsonValueKind.String)
                throw new LinearLensException($"{indexPath}: weight_map['{HubCache.Shorten(p.Name)}'] is {JsonFile.Describe(p.Value)} where a shard file name was expected; the index file is corrupt");
            string n = p.Value.GetString()!;
            if (!PlainFileName().IsMatch(n) || n.Contains(".."))
                throw new LinearLensException($"{indexPath}: shard name '{HubCache.Shorten(n)}' of tensor '{HubCache.Shorten(p.Name)}' is not a plain file name");
            if (!names.Contains(n)) names.Add(n);
        }
        if (names.Count == 0) throw new LinearLensException($"{indexPath}: weight_map is empty; the index file is corrupt");
        return names;
    }

    static string? Canonical(string name)
    {
        if (name.StartsWith("vision_tower.") || name.StartsWith("multi_modal_projector.") || name.Contains("rotary_emb.inv_freq")
            || name.StartsWith("model.vision_tower.") || name.StartsWith("model.multi_modal_projector."))
            return null;
        if (name.StartsWith("language_model.model.")) return "model." + name["language_model.model.".Length..];
        if (name.StartsWith("model.language_model.")) return "model." + name["model.language_model.".Length..];
        if (name.StartsWith("language_model.lm_head.")) return "lm_head." + name["language_model.lm_head.".Length..];
        return name;
    }

    public bool Contains(string name) => _tensors.ContainsKey(name);

    /// <summary>The tensor, checked against the shape the config implies.</summary>
    public StoredTensor Get(string name, params long[] shape)
    {
        if (!_tensors.TryGetValue(name, out var t))
            throw new LinearLensException($"tensor '{name}' is missing from the checkpoint in {Folder} (does config.json match the weights?)");
        if (!t.Shape.SequenceEqual(shape))
            throw new LinearLensException($"tensor '{name}' in {Path.GetFileName(t.File)} has shape [{string.Join(", ", t.Shape)}] but config.json implies [{string.Join(", ", shape)}] (config and weights do not match)");
        return t;
    }

    public IEnumerable<StoredTensor> All => _tensors.Values;

    public void Dispose()
    {
        foreach (var f in _files) f.Dispose();
        _files.Clear();
    }

    [GeneratedRegex(@"^[A-Za-z0-9_][A-Za-z0-9._-]*$")]
    private static partial Regex PlainFileName();
}
