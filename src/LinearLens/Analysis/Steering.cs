using System.Runtime.CompilerServices;
using System.Collections.Immutable;
using System.Numerics;
using System.Numerics.Tensors;
using LinearLens.Linearization;
using LinearLens.Loading;
using LinearLens.Models;

namespace LinearLens.Analysis;

/// <summary>Where the steering vector is added, relative to the layer <c>l</c> whose output the concept operator describes.</summary>
public enum SteeringAlignment
{
    /// <summary>To the residual stream after l layers (the input of the (l+1)-th layer) — the stream J^c describes.</summary>
    Consistent,
    /// <summary>
    /// As the reference code does: to the residual stream after l−1 layers (the stream entering layer index l−1), one
    /// layer before the one J^c describes. For l = 1 that is the input embeddings.
    /// </summary>
    Reference,
}

/// <summary>
/// The concept operator J^c of a concept text c at layer l: the detached cumulative Jacobian of the final-normed
/// residual stream after l layers at c's last position with respect to c's input embeddings, J^c [d, T_c, d]
/// (element (k, i, j) = ∂y_k/∂x_{i,j}). Slice J^c_i is the d×d map of concept token i.
/// </summary>
public sealed class SteeringOperator<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    readonly T[]? j;                 // J^c [d, T_c, d] when formed
    readonly FrozenMap<T>? map;      // the concept's frozen map when matrix-free: aᵢ from batched JVPs
    readonly JacobianTarget target;
    readonly double[] offset;
    readonly int[] conceptIds;

    /// <summary>l: J^c describes the residual stream after this many layers (1 … num_layers).</summary>
    public int Layer { get; }
    public int Hidden { get; }
    public int NumLayers { get; }
    public ImmutableArray<int> ConceptIds => [.. conceptIds];
    /// <summary>T_c, the number of concept tokens.</summary>
    public int ConceptTokens => conceptIds.Length;
    /// <summary>‖Σᵢ J^cᵢ x^cᵢ + c − y‖/‖y‖ on the concept text: how exactly the operator reproduces the traced output.</summary>
    public double ReconstructionError { get; }
    /// <summary>Whether J^c is formed (d·T_c·d numbers) or applied matrix-free through the concept's frozen map.</summary>
    public bool IsFormed => j is not null;
    /// <summary>J^c in the [d, T_c, d] layout of <see cref="JacobianResult{T}.J"/> (a copy); only when formed.</summary>
    public T[] ToArray() => (T[])(j ?? throw new InvalidOperationException("this concept operator is matrix-free: J^c is never formed")).Clone();

    SteeringOperator(int layer, int hidden, int numLayers, int[] ids, T[]? jacobian, FrozenMap<T>? map, JacobianTarget target, double[] offset, double error)
    {
        Layer = layer; Hidden = hidden; NumLayers = numLayers; conceptIds = ids; j = jacobian; this.map = map; this.target = target;
        this.offset = offset; ReconstructionError = error;
    }

    /// <summary>The constant term c of the concept's affine frozen map (zero without biases); every injected aᵢ includes it.</summary>
    public ReadOnlySpan<double> Offset => offset;

    /// <summary>The default layer, ⌊2·num_layers/3⌋ (at least 1), as the reference code's lsplit.</summary>
    public static int DefaultLayer(int numLayers) => Math.Max(1, 2 * numLayers / 3);

    /// <summary>J^c is formed by default up to this size; beyond it (a 14B model's d·T_c·d) the operator stays matrix-free.</summary>
    public const long FormedBudgetBytes = 256L << 20;

    /// <summary>
    /// One traced forward pass over the concept, then either the detached Jacobian J^c of
    /// <c>new JacobianTarget(layer, Layer, Cumulative, FinalNorm: true)</c> (<paramref name="form"/> true, or null and J^c
    /// within <see cref="FormedBudgetBytes"/>), or nothing more: the frozen map itself, whose batched JVPs give every
    /// injected vector (results equal to the formed operator's to rounding).
    /// </summary>
    public static SteeringOperator<T> Build(Transformer<T> model, int[] conceptIds, int layer, Action<double>? progress = null,
        DetachPolicy detach = DetachPolicy.Ours, bool? form = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(conceptIds);
        if (conceptIds.Length == 0)
            throw new LinearLensException("the concept has no tokens (give a non-empty --concept or --concept-token-ids)");
        int L = model.Config.NumLayers, d = model.Hidden;
        var target = new JacobianTarget(layer, OutputKey.Layer, JacobianMode.Cumulative, FinalNorm: true);
        target.Validate(L);
        var run = model.Forward(conceptIds, trace: true, detach: detach);
        var frozen = new FrozenMap<T>(model, run.Trace!);
        var offset = TokenDecoder.ToDouble<T>(frozen.Offset(target));
        if (form ?? (long)d * conceptIds.Length * d * Unsafe.SizeOf<T>() <= FormedBudgetBytes)
        {
            var r = DetachedJacobian.Compute(frozen, target, progress);
            return new SteeringOperator<T>(layer, d, L, (int[])conceptIds.Clone(), r.J, null, target, offset, r.RelativeError);
        }
        double error = DetachedJacobian.Errors<T>(frozen.Reconstruct(target), frozen.Output(target)).relative;
        progress?.Invoke(1);
        return new SteeringOperator<T>(layer, d, L, (int[])conceptIds.Clone(), null, frozen, target, offset, error);
    }

    /// <summary>Where the steering vector is added for an alignment: after l layers (consistent) or l − 1 (reference).</summary>
    public int InjectAfterLayers(SteeringAlignment alignment) => alignment switch
    {
        SteeringAlignment.Consistent => Layer,
        SteeringAlignment.Reference => Layer - 1,
        _ => throw new ArgumentOutOfRangeException(nameof(alignment)),
    };

    /// <summary>dst += J^c_{position mod T_c} · embedding (the new text's token at absolute position `position`).</summary>
    public void AccumulateInto(int position, ReadOnlySpan<T> embedding, Span<double> dst)
    {
        int d = Hidden;
        if (embedding.Length != d || dst.Length != d) throw new ArgumentException($"vectors must have length d = {d}");
        var rows = new double[d];
        Apply(position, embedding, 1, rows);
        for (int k = 0; k < d; k++) dst[k] += rows[k];
    }

    /// <summary>
    /// J^c_{(startPos + r) mod T_c} · x_r for `rows` consecutive embeddings x [rows×d] → result [rows×d]: from the formed
    /// J^c, or as one batched JVP of the concept's frozen map (tangent r holds x_r at concept position (startPos+r) mod T_c).
    /// </summary>
    public void Apply(int startPos, ReadOnlySpan<T> x, int rows, Span<double> result)
    {
        int d = Hidden, n = conceptIds.Length;
        if (j is not null)
        {
            for (int r = 0; r < rows; r++)
            {
                int i = (startPos + r) % n;
                var e = x.Slice(r * d, d);
                for (int k = 0; k < d; k++)
                    result[r * d + k] = double.CreateChecked(TensorPrimitives.Dot(j.AsSpan((int)(((long)k * n + i) * d), d), e));
            }
            return;
        }
        var tangents = Numerics.Pinned.Array<T>((long)n * rows * d);
        for (int r = 0; r < rows; r++) x.Slice(r * d, d).CopyTo(tangents.AsSpan((((startPos + r) % n) * rows + r) * d, d));
        var outputs = new T[rows * d];
        map!.Jvp(target, tangents, rows, outputs);
        for (int i = 0; i < rows * d; i++) result[i] = double.CreateChecked(outputs[i]);
    }
}

/// <summary>
/// The running state of one steered sequence: the prefix sum Sᵢ = Σ_{k≤i} J^c_{k mod T_c} e_k over the absolute
/// positions seen so far, and the injection hᵢ ← hᵢ + (λ/2)·‖hᵢ‖·Sᵢ/‖Sᵢ‖ at the alignment's layer. Feed the
/// embeddings of each chunk of rows with <see cref="Prepare"/> before running them (positions must arrive in order,
/// as with a KV cache), then run the rows with <see cref="Hook"/> (after <see cref="InjectIntoEmbeddings"/> when the
/// injection point is the embeddings).
/// </summary>
public sealed class SteeringInjector<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    readonly SteeringOperator<T> op;
    readonly double[] sum;
    double[] pending = [];
    int pendingStart, pendingRows, nextPosition;
    readonly List<double> residualNorms = new(), injectionNorms = new();

    public double Lambda { get; }
    public SteeringAlignment Alignment { get; }
    /// <summary>The hook adds after this many layers; 0 means the input embeddings (reference alignment at l = 1).</summary>
    public int InjectAfterLayers { get; }
    /// <summary>‖hᵢ‖ before the addition, per position injected so far (absolute positions 0, 1, …).</summary>
    public IReadOnlyList<double> ResidualNorms => residualNorms;
    /// <summary>‖added vector‖ per position injected so far; (λ/2)·‖hᵢ‖ up to rounding (0 where Sᵢ = 0).</summary>
    public IReadOnlyList<double> InjectionNorms => injectionNorms;

    public SteeringInjector(SteeringOperator<T> op, double lambda, SteeringAlignment alignment)
    {
        ArgumentNullException.ThrowIfNull(op);
        Steering.CheckLambda(lambda);
        this.op = op; Lambda = lambda; Alignment = alignment;
        InjectAfterLayers = op.InjectAfterLayers(alignment);
        sum = new double[op.Hidden];
    }

    /// <summary>Registers the input embeddings x [rows×d] of positions startPos … startPos+rows−1 and computes their Sᵢ.</summary>
    public void Prepare(ReadOnlySpan<T> x, int rows, int startPos)
    {
        // a generation that recomputes its whole sequence (longrope crossing its original length) starts over at 0
        if (startPos == 0) { Array.Clear(sum); nextPosition = 0; }
        if (startPos != nextPosition)
            throw new InvalidOperationException($"steering positions must arrive in order: expected {nextPosition}, got {startPos}");
        int d = op.Hidden;
        if (pending.Length < rows * d) pending = new double[rows * d];
        op.Apply(startPos, x, rows, pending);   // each row's J^c_{p mod T_c} e_p, all rows in one product
        for (int r = 0; r < rows; r++)
        {
            var a = pending.AsSpan(r * d, d);
            TensorPrimitives.Add(sum, a, sum);
            sum.CopyTo(a);
            TensorPrimitives.Add(a, op.Offset, a);   // the affine form: aᵢ = Σ_{k≤i} J^c e_k + c
        }
        pendingStart = startPos; pendingRows = rows; nextPosition = startPos + rows;
    }

    /// <summary>When the injection point is the embeddings (after 0 layers), adds the vectors to x before the run.</summary>
    public void InjectIntoEmbeddings(T[] x, int rows, int startPos)
    {
        if (InjectAfterLayers == 0) Inject(x, rows, startPos);
    }

    /// <summary>The residual hook that adds the prepared vectors after <see cref="InjectAfterLayers"/> layers.</summary>
    public ResidualHook<T> Hook => (layersDone, h, rows, startPos) =>
    {
        if (layersDone == InjectAfterLayers) Inject(h, rows, startPos);
    };

    /// <summary>hᵢ += (λ/2)·‖hᵢ‖·Sᵢ/‖Sᵢ‖ for the prepared rows (in double, rounded once to T when added).</summary>
    public void Inject(T[] h, int rows, int startPos)
    {
        if (startPos != pendingStart || rows != pendingRows)
            throw new InvalidOperationException($"steering was prepared for positions {pendingStart}…{pendingStart + pendingRows - 1}, not {startPos}…{startPos + rows - 1}");
        int d = op.Hidden;
        for (int r = 0; r < rows; r++)
        {
            var row = h.AsSpan(r * d, d);
            var a = pending.AsSpan(r * d, d);
            double hn = 0, an = 0;
            for (int k = 0; k < d; k++) { double v = double.CreateChecked(row[k]); hn += v * v; an += a[k] * a[k]; }
            hn = Math.Sqrt(hn); an = Math.Sqrt(an);
            residualNorms.Add(hn);
            if (an == 0 || Lambda == 0) { injectionNorms.Add(0); continue; }
            double scale = Lambda / 2 * hn / an, added = 0;
            for (int k = 0; k < d; k++)
            {
                T before = row[k];
                row[k] = before + T.CreateChecked(scale * a[k]);
                double diff = double.CreateChecked(row[k]) - double.CreateChecked(before);
                added += diff * diff;
            }
            injectionNorms.Add(Math.Sqrt(added));
        }
    }
}

/// <summary>
/// One steered greedy continuation. <see cref="ConceptLogProbs"/>[s] is the concept score of generation step s:
/// the mean, over <see cref="ScoredConceptIds"/> (the concept's distinct ids other than BOS/EOS), of
/// log softmax(logits) at those ids in the next-token distribution from which new token s was chosen (step 0: the
/// distribution right after the prompt). <see cref="MeanConceptLogProb"/> averages it over the steps (NaN when no id
/// is scored). <see cref="ResidualNorms"/> / <see cref="InjectionNorms"/> hold ‖hᵢ‖ and ‖added‖ per absolute position
/// run (prompt, then every generated token but the last); both empty when λ = 0 (nothing is added).
/// </summary>
public sealed record SteeringResult(
    double Lambda,
    SteeringAlignment Alignment,
    int Layer,
    int InjectAfterLayers,
    ImmutableArray<int> PromptIds,
    ImmutableArray<int> NewIds,
    ImmutableArray<double> LogProbs,
    bool StoppedAtEos,
    ImmutableArray<int> ScoredConceptIds,
    ImmutableArray<double> ConceptLogProbs,
    double MeanConceptLogProb,
    ImmutableArray<double> ResidualNorms,
    ImmutableArray<double> InjectionNorms)
{
    /// <summary>Log-probability of the concept tokens in the first next-token distribution (after the prompt).</summary>
    public double FirstConceptLogProb => ConceptLogProbs.IsEmpty ? double.NaN : ConceptLogProbs[0];
    /// <summary>How many generated tokens are among the scored concept ids.</summary>
    public int ConceptTokenHits => NewIds.Count(ScoredConceptIds.Contains);
}

/// <summary>Steering with detached Jacobians (reference-implementation.md §1.14) on top of the KV-cached forward pass.</summary>
public static class Steering
{
    internal static void CheckLambda(double lambda)
    {
        if (!double.IsFinite(lambda) || lambda < 0)
            throw new LinearLensException($"--lambda {lambda.ToString(System.Globalization.CultureInfo.InvariantCulture)} is not allowed; the steering strength λ must be a finite number ≥ 0");
    }

    /// <summary>The concept ids the score averages over: distinct, in order of appearance, without BOS and EOS ids.</summary>
    public static ImmutableArray<int> ScoredConceptIds(ModelConfig config, ReadOnlySpan<int> conceptIds)
    {
        var special = new HashSet<int>(config.EosTokenIds);
        if (config.BosTokenId is int bos) special.Add(bos);
        var seen = new HashSet<int>();
        var result = ImmutableArray.CreateBuilder<int>();
        foreach (int id in conceptIds)
            if (!special.Contains(id) && seen.Add(id)) result.Add(id);
        return result.ToImmutable();
    }

    /// <summary>
    /// Greedy decoding with a KV cache in which, at every position i (prompt and generated tokens alike), the residual
    /// stream after <see cref="SteeringOperator{T}.InjectAfterLayers"/> layers is shifted by (λ/2)·‖hᵢ‖·aᵢ/‖aᵢ‖ with
    /// aᵢ = Σ_{k≤i} J^c_{k mod T_c} e_k. Decoding is <see cref="Generator.Greedy{T}"/> with the injector plugged in
    /// (ties to the lowest id, stop at EOS unless told otherwise); with λ = 0 nothing is added and the ids are Greedy's.
    /// </summary>
    public static SteeringResult Generate<T>(Transformer<T> model, SteeringOperator<T> op, int[] ids, double lambda,
        int maxNewTokens, SteeringAlignment alignment = SteeringAlignment.Consistent, bool stopAtEos = true)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(op);
        ArgumentNullException.ThrowIfNull(ids);
        CheckLambda(lambda);
        if (op.Hidden != model.Hidden || op.NumLayers != model.Config.NumLayers)
            throw new LinearLensException($"the steering operator was built for another model (d = {op.Hidden}, {op.NumLayers} layers; this model has d = {model.Hidden}, {model.Config.NumLayers} layers)");
        var scored = ScoredConceptIds(model.Config, op.ConceptIds.AsSpan());
        var injector = lambda == 0 ? null : new SteeringInjector<T>(op, lambda, alignment);
        var conceptLp = new List<double>(Math.Max(0, maxNewTokens));
        var g = Generator.Greedy(model, ids, maxNewTokens, stopAtEos,
            hook: injector?.Hook,
            beforeRun: injector is null ? null : (x, rows, start) =>
            {
                injector.Prepare(x, rows, start);
                injector.InjectIntoEmbeddings(x, rows, start);
            },
            onLogits: logits => conceptLp.Add(MeanLogSoftmax<T>(logits, scored.AsSpan())));
        double mean = conceptLp.Count == 0 || scored.IsEmpty ? double.NaN : conceptLp.Average();
        return new SteeringResult(lambda, alignment, op.Layer, op.InjectAfterLayers(alignment), [.. ids], [.. g.NewIds], [.. g.LogProbs],
            g.StoppedAtEos, scored, [.. conceptLp], mean,
            injector is null ? [] : [.. injector.ResidualNorms], injector is null ? [] : [.. injector.InjectionNorms]);
    }

    /// <summary><see cref="Generate{T}"/> for each λ in turn (the operator is built once).</summary>
    public static IReadOnlyList<SteeringResult> Sweep<T>(Transformer<T> model, SteeringOperator<T> op, int[] ids,
        IEnumerable<double> lambdas, int maxNewTokens, SteeringAlignment alignment = SteeringAlignment.Consistent, bool stopAtEos = true)
        where T : unmanaged, IFloatingPointIeee754<T> =>
        lambdas.Select(l => Generate(model, op, ids, l, maxNewTokens, alignment, stopAtEos)).ToList();

    /// <summary>Mean over <paramref name="ids"/> of log softmax(v)[id], in double; NaN for no ids.</summary>
    public static double MeanLogSoftmax<T>(ReadOnlySpan<T> v, ReadOnlySpan<int> ids) where T : IFloatingPointIeee754<T>
    {
        if (ids.IsEmpty) return double.NaN;
        double lse = Generator.LogSumExp(v), total = 0;
        foreach (int id in ids) total += double.CreateChecked(v[id]) - lse;
        return total / ids.Length;
    }
}
