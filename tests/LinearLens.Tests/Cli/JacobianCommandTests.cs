using System.Text.Json;
using LinearLens.Reporting;
using LinearLens.Tests.Linearization;
using LinearLens.Tests.Support;

namespace LinearLens.Tests.Cli;

public class JacobianCommandTests
{
    [Fact]
    public void BiasedModelWritesTheOffsetAndTheFilesReconstructTheOutputWithIt()
    {
        using var tmp = new TempCheckpoint("tiny-qwen2");
        string outDir = Path.Combine(tmp.Folder, "out");
        var r = CliRunner.Run("jacobian", "--model", tmp.Folder, "--token-ids", "2,5,9,22,7,40", "--json", "--out", outDir);
        Assert.Equal(0, r.ExitCode);
        using var doc = JsonDocument.Parse(r.Stdout);
        var rec = doc.RootElement.GetProperty("reconstruction");
        Assert.True(rec.GetProperty("relative_error").GetDouble() < 1e-13);
        var (_, J) = Npy.Read(Path.Combine(outDir, "jacobian.npy"));
        var (_, x) = Npy.Read(Path.Combine(outDir, "embeddings.npy"));
        var (_, y) = Npy.Read(Path.Combine(outDir, "output.npy"));
        var (cs, c) = Npy.Read(Path.Combine(outDir, "offset.npy"));
        Assert.Equal([64L], cs);
        double cNorm = Math.Sqrt(c.Sum(v => v * v));
        Assert.Equal(cNorm, rec.GetProperty("offset_norm").GetDouble(), 1e-12);
        Assert.True(cNorm > 1e-3);
        // y = Σᵢ Jᵢxᵢ + c from the files alone, and not without c
        int n = 6, d = 64;
        double with = 0, without = 0, den = 0;
        for (int k = 0; k < d; k++)
        {
            double s = 0;
            for (int i = 0; i < n; i++) for (int j = 0; j < d; j++) s += J[((long)k * n + i) * d + j] * x[i * d + j];
            with += (s + c[k] - y[k]) * (s + c[k] - y[k]); without += (s - y[k]) * (s - y[k]); den += y[k] * y[k];
        }
        Assert.True(Math.Sqrt(with / den) < 1e-13);
        Assert.True(Math.Sqrt(without / den) > 1e-4);
        // matrix-free: one JVP plus the offset run
        var mf = CliRunner.Run("jacobian", "--model", tmp.Folder, "--token-ids", "2,5,9,22,7,40", "--json", "--method", "matrix-free", "--components", "2");
        Assert.Equal(0, mf.ExitCode);
        using var mdoc = JsonDocument.Parse(mf.Stdout);
        Assert.True(mdoc.RootElement.GetProperty("reconstruction").GetProperty("relative_error").GetDouble() < 1e-13);
    }

    [Fact]
    public void DetachReferenceIsAcceptedAndReported()
    {
        using var tmp = new TempCheckpoint("tiny-phi3");
        var r = CliRunner.Run("jacobian", "--model", tmp.Folder, "--token-ids", "2,5,9,22,7,40,3", "--json", "--detach", "reference");
        Assert.Equal(0, r.ExitCode);
        using var doc = JsonDocument.Parse(r.Stdout);
        Assert.Equal("reference", doc.RootElement.GetProperty("detach").GetString());
        Assert.True(doc.RootElement.GetProperty("reconstruction").GetProperty("relative_error").GetDouble() < 1e-13);
        var bad = CliRunner.Run("jacobian", "--model", tmp.Folder, "--token-ids", "2,5", "--detach", "paper");
        Assert.Equal(2, bad.ExitCode);
        Assert.Contains("--detach", bad.Stderr);
    }

    [Fact]
    public void JsonAndNpyFilesDescribeAnExactReconstruction()
    {
        using var tmp = new TempCheckpoint("tiny-gemma3");
        string outDir = Path.Combine(tmp.Folder, "out");
        var r = CliRunner.Run("jacobian", "--model", tmp.Folder, "--token-ids", "2,5,9,22,7", "--layer", "2", "--key", "mlp", "--json", "--out", outDir);
        Assert.Equal(0, r.ExitCode);
        using var doc = JsonDocument.Parse(r.Stdout);
        var o = doc.RootElement;
        Assert.Equal("2,5,9,22,7", string.Join(",", o.GetProperty("input_ids").EnumerateArray().Select(e => e.GetInt32())));
        Assert.Equal(5, o.GetProperty("tokens").GetArrayLength());
        Assert.InRange(o.GetProperty("predicted_id").GetInt32(), 0, 100);
        Assert.True(o.TryGetProperty("predicted_token", out _));
        Assert.Equal("64,5,64", string.Join(",", o.GetProperty("shape").EnumerateArray().Select(e => e.GetInt32())));
        Assert.True(o.GetProperty("reconstruction").GetProperty("relative_error").GetDouble() < 1e-13);
        Assert.True(o.GetProperty("reconstruction").GetProperty("max_abs_error").GetDouble() < 1e-12);
        Assert.True(o.GetProperty("seconds").GetDouble() >= 0);

        var (js, J) = Npy.Read(Path.Combine(outDir, "jacobian.npy"));
        var (xs, x) = Npy.Read(Path.Combine(outDir, "embeddings.npy"));
        var (ys, y) = Npy.Read(Path.Combine(outDir, "output.npy"));
        var (cs, c) = Npy.Read(Path.Combine(outDir, "contributions.npy"));
        Assert.Equal([64L, 5, 64], js);
        Assert.Equal([5L, 64], xs);
        Assert.Equal([64L], ys);
        Assert.Equal([5L, 64], cs);
        // Σᵢ Jᵢ xᵢ from the files alone reproduces the output.
        double num = 0, den = 0;
        for (int k = 0; k < 64; k++)
        {
            double s = 0, sc = 0;
            for (int i = 0; i < 5; i++)
            {
                sc += c[i * 64 + k];
                for (int j = 0; j < 64; j++) s += J[(k * 5 + i) * 64 + j] * x[i * 64 + j];
            }
            Assert.True(Math.Abs(s - sc) <= 1e-12 * Math.Max(1, Math.Abs(s)), $"row {k}: Σ Jᵢxᵢ {s} vs Σ cᵢ {sc}");   // not Equal(…, 12): it rounds, so 4e-16 apart can fail
            num += (s - y[k]) * (s - y[k]); den += y[k] * y[k];
        }
        Assert.True(Math.Sqrt(num / den) < 1e-13);
    }

    [Fact]
    public void NonlinearFlagGivesTheOrdinaryJacobianWhichDoesNotReconstruct()
    {
        using var tmp = new TempCheckpoint("tiny-llama");
        var r = CliRunner.Run("jacobian", "--model", tmp.Folder, "--token-ids", "1,5,9,22,7", "--nonlinear", "--json");
        Assert.Equal(0, r.ExitCode);
        using var doc = JsonDocument.Parse(r.Stdout);
        Assert.Equal("ordinary", doc.RootElement.GetProperty("jacobian").GetString());
        Assert.True(doc.RootElement.GetProperty("reconstruction").GetProperty("relative_error").GetDouble() > 1e-3);
    }

    [Theory]
    [InlineData("--layer", "0", "--layer 0 is outside")]
    [InlineData("--layer", "3", "--layer 3 is outside")]
    [InlineData("--key", "resid", "--key 'resid'")]
    [InlineData("--mode", "sideways", "--mode 'sideways'")]
    public void BadTargetOptionsAreOneLineErrors(string option, string value, string message)
    {
        using var tmp = new TempCheckpoint("tiny-llama");
        var r = CliRunner.Run("jacobian", "--model", tmp.Folder, "--token-ids", "1,5", option, value);
        Assert.Equal(2, r.ExitCode);
        Assert.Contains(message, r.Stderr);
        Assert.Single(r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
    }
}
