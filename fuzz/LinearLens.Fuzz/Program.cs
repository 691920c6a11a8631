using LinearLens;
using LinearLens.Loading;
using LinearLens.Models;
using SharpFuzz;

// AFL++ harness (SharpFuzz): the first input byte picks the file of a tiny random checkpoint to replace —
// 0 model.safetensors, 1 model.safetensors.index.json (a 2-shard copy), 2 config.json, 3 tokenizer_config.json —
// and the rest is that file's new content. The checkpoint is opened and run for 3 tokens; LinearLensException is
// the expected failure, any other exception is a finding.
// Instrumented code may only run inside Fuzzer.Run, so `prepare WORK SEEDS` (run with the uninstrumented build)
// writes the checkpoints and the seeds, and `WORK` (under afl-fuzz) only reads them.
string root = args[0] == "prepare" ? args[1] : args[0];
string single = Path.Combine(root, "single"), sharded = Path.Combine(root, "sharded");
(string dir, string file)[] targets =
[
    (single, "model.safetensors"), (sharded, "model.safetensors.index.json"), (single, "config.json"), (single, "tokenizer_config.json"),
];
if (args[0] == "prepare")
{
    RandomCheckpoint.Write(single, RandomCheckpointSpec.Preset("tiny-gemma3"), seed: 1, keepValues: false);
    RandomCheckpoint.Write(sharded, RandomCheckpointSpec.Preset("tiny-llama") with { Shards = 2 }, seed: 1, keepValues: false);
    File.WriteAllText(Path.Combine(single, "tokenizer.json"), Tokenizer.Json);
    File.WriteAllText(Path.Combine(single, "tokenizer_config.json"), Tokenizer.Config);
    Directory.CreateDirectory(args[2]);
    for (int i = 0; i < targets.Length; i++)
        File.WriteAllBytes(Path.Combine(args[2], $"seed{i}"), [(byte)i, .. File.ReadAllBytes(Path.Combine(targets[i].dir, targets[i].file))]);
    return;
}
var originals = targets.Select(t => File.ReadAllBytes(Path.Combine(t.dir, t.file))).ToArray();

Fuzzer.Run(stream =>
{
    using var ms = new MemoryStream();
    stream.CopyTo(ms);
    var input = ms.ToArray();
    if (input.Length == 0) return;
    int t = input[0] % targets.Length;
    string path = Path.Combine(targets[t].dir, targets[t].file);
    File.WriteAllBytes(path, input[1..]);
    try
    {
        using var ckpt = Checkpoint.Open(targets[t].dir);
        var model = new Transformer<double>(ckpt);
        int[] ids = ckpt.Tokenizer is { } tok ? tok.Encode("hello world") : [1, 2, 3];
        ids = ids.Where(i => i < ckpt.Config.VocabSize).DefaultIfEmpty(0).ToArray();
        model.Validate(ids);
        model.Forward(ids);
    }
    catch (LinearLensException) { }
    catch (AggregateException e) when (e.Flatten().InnerExceptions.All(x => x is LinearLensException)) { }
    finally { File.WriteAllBytes(path, originals[t]); }
});

static class Tokenizer
{
    public const string Json = """
        {"version":"1.0","truncation":null,"padding":null,
         "added_tokens":[{"id":1,"content":"<s>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true},
                         {"id":2,"content":"</s>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true}],
         "normalizer":null,"pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,
         "model":{"type":"WordLevel","vocab":{"<unk>":0,"<s>":1,"</s>":2,"hello":3,"world":4},"unk_token":"<unk>"}}
        """;
    public const string Config = """
        {"tokenizer_class":"GemmaTokenizer","add_bos_token":true,"add_eos_token":false,
         "bos_token":{"content":"<s>","lstrip":false,"normalized":false,"rstrip":false,"single_word":false},"eos_token":"</s>"}
        """;
}
