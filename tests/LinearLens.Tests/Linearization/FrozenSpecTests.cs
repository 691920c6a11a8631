using System.Text.Json;
using LinearLens.Models;
using LinearLens.Reporting;
using LinearLens.Tests.Support;

namespace LinearLens.Tests.Linearization;

/// <summary>
/// The detached Jacobian and its affine offset against an independent reference: <see cref="SpecFrozenMap"/> evaluates
/// the frozen network from the spec decoder's recorded factors, and J, c follow from unit inputs. First the reference
/// checks itself (it reproduces y*, reconstructs, c = 0 exactly without biases); then `linearlens jacobian --out` on
/// tiny checkpoints of every new family must give the same J, c, y and X to 1e-12 relative in float64, for the
/// final output and for --layer/--key/--mode/--no-final-norm/--detach reference.
/// </summary>
public class FrozenSpecTests
{
    static int[] Tokens(int n, int seed) { var r = new Random(seed); return Enumerable.Range(0, n).Select(_ => r.Next(101)).ToArray(); }

    static double RelErr(double[] a, double[] b)
    {
        Assert.Equal(b.Length, a.Length);
        double num = 0, den = 0;
        for (int i = 0; i < b.Length; i++) { num += (a[i] - b[i]) * (a[i] - b[i]); den += b[i] * b[i]; }
        return den == 0 ? Math.Sqrt(num) : Math.Sqrt(num / den);
    }

    static double[] Reconstruct(SpecFrozenMap.Result r)
    {
        int n = r.N, d = r.Hidden;
        var y = (double[])r.Offset.Clone();
        for (int k = 0; k < d; k++)
            for (int i = 0; i < n; i++)
                for (int j = 0; j < d; j++) y[k] += r.J[(k * n + i) * d + j] * r.Input[i * d + j];
        return y;
    }

    public static TheoryData<string> Presets => new()
    {
        "tiny-phi3", "tiny-phi4-mini", "tiny-olmo2", "tiny-mistral", "tiny-ministral", "tiny-qwen2", "tiny-llama-bias",
        "tiny-llama", "tiny-qwen3", "tiny-gemma3",
    };

    [Theory]
    [MemberData(nameof(Presets))]
    public void Reference_frozen_map_reproduces_the_forward_pass_and_reconstructs(string preset)
    {
        using var tmp = new ScratchFolder("frozenself");
        var w = RandomCheckpoint.Write(tmp.Path, RandomCheckpointSpec.Preset(preset), 17);
        int[] ids = Tokens(7, 2);
        var star = SpecDecoder.Run(w, ids);
        var r = SpecFrozenMap.Jacobian(w, ids, new SpecTarget(w.Spec.Layers));
        Assert.True(RelErr(r.Output, star.FinalRow(ids.Length - 1).ToArray()) <= 1e-14);
        Assert.True(RelErr(Reconstruct(r), r.Output) <= 1e-13);
        if (w.Spec.HasBias) Assert.True(r.Offset.Any(x => Math.Abs(x) > 1e-3), "biases must give an offset");
        else Assert.All(r.Offset, x => Assert.Equal(0.0, x));
        // Affine: F̃(2X*) = 2y* − c.
        var sum = Reconstruct(r with { Input = r.Input.Select(x => 2 * x).ToArray() });
        Assert.True(RelErr(sum, r.Output.Select((y, k) => 2 * y - r.Offset[k]).ToArray()) <= 1e-13);
        // Intermediate taps at X* equal the spec decoder's own states (layer key, no final norm).
        var mid = SpecFrozenMap.Jacobian(w, ids, new SpecTarget(1, FinalNorm: false));
        Assert.True(RelErr(mid.Output, star.LayerOutputs[0].AsSpan((ids.Length - 1) * w.Spec.Hidden, w.Spec.Hidden).ToArray()) <= 1e-14);
        var lw = SpecFrozenMap.Jacobian(w, ids, new SpecTarget(w.Spec.Layers, Layerwise: true));
        Assert.True(RelErr(lw.Output, r.Output) <= 1e-14);
        Assert.True(RelErr(Reconstruct(lw), lw.Output) <= 1e-13);
    }

    /// <summary>Phi's reference freezing (u, σ(g) frozen; g linear) gives another J with the same reconstruction.</summary>
    [Fact]
    public void Phi_reference_freezing_is_another_exact_linearization()
    {
        using var tmp = new ScratchFolder("frozenphi");
        var w = RandomCheckpoint.Write(tmp.Path, RandomCheckpointSpec.Preset("tiny-phi3"), 5);
        int[] ids = Tokens(8, 4);
        var ours = SpecFrozenMap.Jacobian(w, ids, new SpecTarget(2));
        var reference = SpecFrozenMap.Jacobian(w, ids, new SpecTarget(2, Reference: true));
        Assert.True(RelErr(reference.Output, ours.Output) <= 1e-14);
        Assert.True(RelErr(Reconstruct(reference), reference.Output) <= 1e-13);
        Assert.True(RelErr(reference.J, ours.J) > 1e-3);
    }

    public static TheoryData<string, string[]> EngineCases => new()
    {
        { "tiny-phi3", [] },
        { "tiny-phi3@5", [] },                      // 5 tokens ≤ N0: short factors
        { "tiny-phi4-mini@6", ["--layer", "2", "--key", "attn"] },
        { "tiny-phi3", ["--layer", "1", "--key", "mlp"] },
        { "tiny-phi3", ["--detach", "reference"] },
        { "tiny-phi3", ["--detach", "reference", "--layer", "2", "--key", "mlp", "--mode", "layerwise"] },
        { "tiny-phi4-mini", [] },
        { "tiny-phi4-mini", ["--layer", "1", "--key", "attn", "--no-final-norm"] },
        { "tiny-olmo2", [] },
        { "tiny-olmo2", ["--layer", "1", "--key", "attn"] },
        { "tiny-olmo2", ["--layer", "2", "--key", "mlp", "--mode", "layerwise"] },
        { "tiny-olmo2", ["--detach", "reference", "--layer", "1", "--key", "attn"] },
        { "tiny-olmo2", ["--detach", "reference", "--layer", "2", "--key", "mlp", "--no-final-norm"] },
        { "tiny-olmo2-bias", ["--layer", "2", "--key", "attn"] },
        { "tiny-mistral", [] },
        { "tiny-mistral", ["--layer", "2", "--key", "attn", "--mode", "layerwise"] },
        { "tiny-ministral", [] },
        { "tiny-ministral", ["--layer", "2", "--key", "layer", "--no-final-norm"] },
        { "tiny-qwen2", [] },
        { "tiny-qwen2", ["--layer", "1", "--key", "attn"] },
        { "tiny-qwen2", ["--layer", "2", "--key", "mlp", "--mode", "layerwise", "--no-final-norm"] },
        { "tiny-llama-bias", [] },
        { "tiny-llama-bias", ["--layer", "1", "--key", "mlp"] },
        { "tiny-llama-bias", ["--layer", "2", "--key", "attn", "--mode", "layerwise"] },
        { "tiny-gemma3", ["--detach", "reference", "--layer", "2", "--key", "attn"] },
    };

    [Theory]
    [MemberData(nameof(EngineCases))]
    public void Engine_jacobian_and_offset_match_the_reference(string preset, string[] options)
    {
        using var tmp = new ScratchFolder("frozeneng");
        int at = preset.IndexOf('@');
        int n = at < 0 ? 8 : int.Parse(preset[(at + 1)..]);
        if (at >= 0) preset = preset[..at];
        var spec = preset == "tiny-olmo2-bias" ? RandomCheckpointSpec.Preset("tiny-olmo2") with { AttentionBias = true } : RandomCheckpointSpec.Preset(preset);
        var w = RandomCheckpoint.Write(tmp.Sub("m"), spec, 29);
        int[] ids = Tokens(n, preset.Length);
        string Opt(string name, string def) { int i = Array.IndexOf(options, name); return i >= 0 ? options[i + 1] : def; }
        var target = new SpecTarget(int.Parse(Opt("--layer", w.Spec.Layers.ToString())), Opt("--key", "layer"),
            Opt("--mode", "cumulative") == "layerwise", !options.Contains("--no-final-norm"), Opt("--detach", "ours") == "reference");
        // Eight input dimensions at every position (one frozen pass per column): a wrong term shows in any column.
        int[] dims = [0, 1, 7, 18, 29, 33, 46, w.Spec.Hidden - 1];
        var reference = SpecFrozenMap.Jacobian(w, ids, target, dims);

        string outDir = Path.Combine(tmp.Path, "out");
        var r = CliRunner.Run(["jacobian", "--model", w.Folder, "--token-ids", string.Join(",", ids), "--method", "full",
            "--json", "--out", outDir, .. options]);
        Assert.True(r.ExitCode == 0, r.Stderr);
        using var doc = JsonDocument.Parse(r.Stdout);
        var rec = doc.RootElement.GetProperty("reconstruction");
        Assert.True(rec.GetProperty("relative_error").GetDouble() <= 1e-13);

        var (js, J) = Npy.Read(Path.Combine(outDir, "jacobian.npy"));
        var (_, x) = Npy.Read(Path.Combine(outDir, "embeddings.npy"));
        var (_, y) = Npy.Read(Path.Combine(outDir, "output.npy"));
        Assert.Equal([(long)w.Spec.Hidden, ids.Length, w.Spec.Hidden], js);
        var errors = new List<string>();
        void Check(string what, double[] a, double[] b, double tol = 1e-12)
        {
            double e = RelErr(a, b);
            if (!(e <= tol)) errors.Add($"{what}: rel err {e:E3}");
        }
        Check("input X", x, reference.Input);
        Check("output y", y, reference.Output);
        var keep = Enumerable.Range(0, J.Length).Where(i => !double.IsNaN(reference.J[i])).ToArray();
        Assert.Equal(w.Spec.Hidden * ids.Length * dims.Length, keep.Length);
        Check("J (sampled columns)", keep.Select(i => J[i]).ToArray(), keep.Select(i => reference.J[i]).ToArray());
        string offsetFile = Path.Combine(outDir, "offset.npy");
        double cNorm = Math.Sqrt(reference.Offset.Sum(v => v * v));
        if (File.Exists(offsetFile)) Check("offset c", Npy.Read(offsetFile).data, reference.Offset, cNorm == 0 ? 1e-14 : 1e-12);
        else if (cNorm != 0) errors.Add("offset.npy missing although the map is affine");
        if (rec.TryGetProperty("offset_norm", out var on)) Check("offset_norm", [on.GetDouble()], [cNorm], cNorm == 0 ? 1e-14 : 1e-12);
        Assert.True(errors.Count == 0, $"{preset} {string.Join(" ", options)}: " + string.Join("; ", errors));
    }

    /// <summary>
    /// `analyze` attributes the predicted logit to tokens plus a bias entry: contribution_i = w_tok·(Jᵢxᵢ),
    /// bias = w_tok·c, their sum = the logit — each equal to the reference's (w_tok the LM-head row).
    /// </summary>
    [Theory]
    [InlineData("tiny-qwen2")]
    [InlineData("tiny-llama-bias")]
    [InlineData("tiny-phi3")]
    public void Analyze_attribution_has_the_reference_contributions_and_bias(string preset)
    {
        using var tmp = new ScratchFolder("frozenattr");
        var w = RandomCheckpoint.Write(tmp.Path, RandomCheckpointSpec.Preset(preset), 31);
        int[] ids = Tokens(7, 6);
        int n = ids.Length, d = w.Spec.Hidden;
        var reference = SpecFrozenMap.Jacobian(w, ids, new SpecTarget(w.Spec.Layers));
        var star = SpecDecoder.Run(w, ids);
        var r = CliRunner.Run("analyze", "--model", w.Folder, "--token-ids", string.Join(",", ids), "--json", "--no-ordinary",
            "--layers", w.Spec.Layers.ToString(), "--method", "full");
        Assert.True(r.ExitCode == 0, r.Stderr);
        using var doc = JsonDocument.Parse(r.Stdout);
        var a = doc.RootElement.GetProperty("attribution")[0];
        int tok = a.GetProperty("token_id").GetInt32();
        double[] lm = (w.Spec.Tie ? w.Values("model.embed_tokens.weight") : w.Values("lm_head.weight")).AsSpan(tok * d, d).ToArray();
        var expected = new double[n];
        for (int i = 0; i < n; i++)
            for (int k = 0; k < d; k++)
            {
                double jx = 0;
                for (int j = 0; j < d; j++) jx += reference.J[(k * n + i) * d + j] * reference.Input[i * d + j];
                expected[i] += lm[k] * jx;
            }
        double bias = lm.Select((x, k) => x * reference.Offset[k]).Sum();
        double logit = star.LogitsRow(n - 1)[tok];
        double scale = Math.Abs(logit) + expected.Sum(Math.Abs);
        double[] got = a.GetProperty("contributions").EnumerateArray().Select(x => x.GetDouble()).ToArray();
        for (int i = 0; i < n; i++) Assert.True(Math.Abs(got[i] - expected[i]) <= 1e-12 * scale, $"token {i}: {got[i]:R} vs {expected[i]:R}");
        Assert.True(Math.Abs(a.GetProperty("bias").GetDouble() - bias) <= 1e-12 * scale, $"bias {a.GetProperty("bias").GetDouble():R} vs {bias:R}");
        Assert.True(Math.Abs(a.GetProperty("logit").GetDouble() - logit) <= 1e-12 * scale);
        if (!w.Spec.HasBias) Assert.Equal(0.0, bias);
        else Assert.True(Math.Abs(bias) > 1e-6);
    }
}
