using LinearLens.Loading;
using LinearLens.Tests.Support;

namespace LinearLens.Tests.Loading;

/// <summary>The real Qwen 3, Llama 3 and Gemma 3 tokenizers give the ids Hugging Face's tokenizers library gives.</summary>
public class TokenizerTests
{
    const string Text = "The bridge out of Marin is the";

    [SharedTheory("tokenizers")]
    [InlineData("qwen3", "785,14164,700,315,63377,374,279")]
    [InlineData("llama3", "128000,791,14497,704,315,64477,374,279")]
    [InlineData("gemma3", "2,818,11825,855,529,69480,563,506")]
    public void DefaultSpecialTokensMatchHuggingFace(string family, string expected)
    {
        using var tok = TextTokenizer.TryLoad(SharedData.Tokenizer(family))!;
        Assert.Equal(expected, string.Join(",", tok.Encode(Text)));
    }

    [SharedTheory("tokenizers")]
    [InlineData("qwen3", 14164, " bridge")]
    [InlineData("llama3", 14497, " bridge")]
    [InlineData("gemma3", 11825, " bridge")]
    [InlineData("gemma3", 2, "<bos>")]
    public void TokenStringsKeepTheirLeadingSpace(string family, int id, string expected)
    {
        using var tok = TextTokenizer.TryLoad(SharedData.Tokenizer(family))!;
        Assert.Equal(expected, tok.TokenString(id));
    }

    [SharedFact("tokenizers", "gemma3")]
    public void AddBosTokenFalseInTokenizerConfigDropsBos()
    {
        // Gemma's tokenizer class rebuilds the post-processor from add_bos_token (architectures.md §4).
        string dir = Directory.CreateTempSubdirectory("ll-tok").FullName;
        try
        {
            File.Copy(Path.Combine(SharedData.Tokenizer("gemma3"), "tokenizer.json"), Path.Combine(dir, "tokenizer.json"));
            File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"),
                """{"tokenizer_class": "GemmaTokenizerFast", "bos_token": "<bos>", "eos_token": "<eos>", "add_bos_token": false}""");
            using var tok = TextTokenizer.TryLoad(dir)!;
            Assert.Equal("818,11825,855,529,69480,563,506", string.Join(",", tok.Encode(Text)));
        }
        finally { Directory.Delete(dir, true); }
    }
}
