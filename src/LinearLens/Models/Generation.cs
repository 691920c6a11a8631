using System.Numerics;
using LinearLens.Numerics;

namespace LinearLens.Models;

/// <summary>Greedy continuation of a prompt: the new ids and, per step, the log-probability of the chosen id.</summary>
public sealed record Generation(int[] PromptIds, int[] NewIds, double[] LogProbs, bool StoppedAtEos);

public static class Generator
{
    /// <summary>
    /// Greedy decoding with a KV cache: the prompt runs once, then each new token runs alone against the cache.
    /// Ties go to the lowest id (as torch.argmax). Stops after maxNewTokens or at an end-of-sequence id.
    /// Steering plugs in here: <paramref name="beforeRun"/> sees (and may change) the input embeddings of every chunk
    /// of rows with its start position before it runs, <paramref name="hook"/> may shift the residual stream after
    /// any layer, and <paramref name="onLogits"/> sees each step's next-token logits.
    /// </summary>
    public static Generation Greedy<T>(Transformer<T> model, ReadOnlySpan<int> prompt, int maxNewTokens,
        bool stopAtEos = true, ResidualHook<T>? hook = null, Action<T[], int, int>? beforeRun = null, Action<T[]>? onLogits = null)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        if (maxNewTokens < 0) throw new LinearLensException($"--max-new-tokens must be ≥ 0 (got {maxNewTokens})");
        model.Validate(prompt, maxNewTokens);
        var cache = new KvCache<T>(model.Config, prompt.Length + maxNewTokens);
        // longrope (Phi-3.5, Phi-4-mini): past original_max_position_embeddings every position uses the long factors, so a
        // generation that crosses that length drops its cache and recomputes the whole sequence, as HF's Phi3ForCausalLM does
        var switchLengths = model.Config.Rope.Where(r => r.Type == "longrope").Select(r => (int)r.OriginalMaxPositions).ToHashSet();
        var all = new List<int>(prompt.ToArray());
        var eos = new HashSet<int>(model.Config.EosTokenIds);
        var newIds = new List<int>(maxNewTokens);
        var logProbs = new List<double>(maxNewTokens);
        T[] Step(ReadOnlySpan<int> chunk)
        {
            var x = model.Embed(chunk);
            beforeRun?.Invoke(x, chunk.Length, cache.Length);
            return model.Run(x, chunk.Length, cache, null, hook);
        }
        var y = Step(prompt);
        int rows = prompt.Length;
        bool stopped = false;
        while (newIds.Count < maxNewTokens)
        {
            var logits = model.Logits(y, rows, rows - 1);
            onLogits?.Invoke(logits);
            int next = ArgMax<T>(logits);
            newIds.Add(next);
            logProbs.Add(LogSoftmaxAt<T>(logits, next));
            if (stopAtEos && eos.Contains(next)) { stopped = true; break; }
            if (newIds.Count == maxNewTokens) break;
            all.Add(next);
            if (switchLengths.Contains(cache.Length))
            {
                cache.Length = 0;
                y = Step(all.ToArray());
                rows = all.Count;
                continue;
            }
            y = Step([next]);
            rows = 1;
        }
        return new Generation(prompt.ToArray(), newIds.ToArray(), logProbs.ToArray(), stopped);
    }

    public static int ArgMax<T>(ReadOnlySpan<T> v) where T : IFloatingPointIeee754<T>
    {
        int best = 0;
        for (int i = 1; i < v.Length; i++) if (v[i] > v[best]) best = i;
        return best;
    }

    /// <summary>log softmax(v)[i], computed in double.</summary>
    public static double LogSoftmaxAt<T>(ReadOnlySpan<T> v, int i) where T : IFloatingPointIeee754<T> =>
        double.CreateChecked(v[i]) - LogSumExp(v);

    /// <summary>log Σ exp(v), computed in double with the maximum factored out.</summary>
    public static double LogSumExp<T>(ReadOnlySpan<T> v) where T : IFloatingPointIeee754<T>
    {
        double max = double.NegativeInfinity;
        foreach (var x in v) max = Math.Max(max, double.CreateChecked(x));
        double sum = 0;
        foreach (var x in v) sum += Math.Exp(double.CreateChecked(x) - max);
        return max + Math.Log(sum);
    }
}
