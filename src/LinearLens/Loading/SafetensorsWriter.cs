using System.Text;
using System.Text.Json;
using LinearLens.Numerics;

namespace LinearLens.Loading;

/// <summary>Name, dtype and shape of a tensor to be written; its data comes separately (bytes or a callback).</summary>
public sealed record TensorHeader(string Name, DType DType, long[] Shape)
{
    public long Count => Shape.Aggregate(1L, (a, b) => checked(a * b));
    public long ByteSize => checked(Count * DType.Size());
}

/// <summary>
/// Writes safetensors files: an 8-byte little-endian header length, a JSON header
/// (<c>__metadata__</c> = {"format":"pt"}, then every tensor's dtype, shape and data_offsets) padded with spaces to
/// a multiple of 8 bytes, then the raw little-endian tensor data. Tensors are laid out as the safetensors library
/// lays them out: by dtype, widest first (F64, F32, BF16, F16), then by name (ordinal).
/// Sharded checkpoints follow the Hugging Face layout: <c>model-0000i-of-0000N.safetensors</c> plus
/// <c>model.safetensors.index.json</c> = {"metadata":{"total_size":…},"weight_map":{name:file}}.
/// The callback overloads stream each tensor's data to disk, so a large checkpoint never has to be in memory at once.
/// </summary>
public static class SafetensorsWriter
{
    public const string IndexFileName = "model.safetensors.index.json";

    public static string ShardFileName(int index, int count) => $"model-{index + 1:D5}-of-{count:D5}.safetensors";

    /// <summary>Writes one safetensors file from in-memory tensors (data is the raw little-endian storage).</summary>
    public static void Write(string path, IEnumerable<(string name, DType dtype, long[] shape, byte[] data)> tensors)
    {
        var list = tensors.ToList();
        var byName = CheckData(list);
        Write(path, list.Select(t => new TensorHeader(t.name, t.dtype, t.shape)).ToList(),
            (h, s) => s.Write(byName[h.Name]));
    }

    /// <summary>
    /// Writes one safetensors file, calling <paramref name="writeData"/> once per tensor (in file order) to write
    /// exactly <see cref="TensorHeader.ByteSize"/> bytes of that tensor's data to the stream.
    /// </summary>
    public static void Write(string path, IReadOnlyList<TensorHeader> tensors, Action<TensorHeader, Stream> writeData)
    {
        var ordered = FileOrder(tensors);
        byte[] header = BuildHeader(ordered);
        AtomicFile.Write(path, fs =>
        {
            Span<byte> len = stackalloc byte[8];
            BitConverter.TryWriteBytes(len, (ulong)header.Length);
            if (!BitConverter.IsLittleEndian) len.Reverse();
            fs.Write(len);
            fs.Write(header);
            foreach (var t in ordered)
            {
                long before = fs.Position;
                writeData(t, fs);
                long written = fs.Position - before;
                if (written != t.ByteSize)
                    throw new InvalidOperationException($"tensor '{t.Name}': {written} bytes written, {t.ByteSize} expected for {t.DType.Name()} {ShapeText(t.Shape)}");
            }
        });
    }

    /// <summary>
    /// Writes <paramref name="shards"/> files <c>model-0000i-of-0000N.safetensors</c> and the index into
    /// <paramref name="folder"/>. Returns the shard file names.
    /// </summary>
    public static string[] WriteSharded(string folder, IEnumerable<(string name, DType dtype, long[] shape, byte[] data)> tensors, int shards)
    {
        var list = tensors.ToList();
        var byName = CheckData(list);
        return WriteSharded(folder, list.Select(t => new TensorHeader(t.name, t.dtype, t.shape)).ToList(),
            (h, s) => s.Write(byName[h.Name]), shards);
    }

    /// <summary>Sharded variant of the streaming <see cref="Write(string, IReadOnlyList{TensorHeader}, Action{TensorHeader, Stream})"/>.</summary>
    public static string[] WriteSharded(string folder, IReadOnlyList<TensorHeader> tensors, Action<TensorHeader, Stream> writeData, int shards)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(shards, 1);
        if (tensors.Count < shards)
            throw new ArgumentException($"{tensors.Count} tensors cannot fill {shards} shards");
        CheckNames(tensors);
        Directory.CreateDirectory(folder);
        var assignment = AssignShards(tensors, shards);
        var names = new string[shards];
        var weightMap = new SortedDictionary<string, string>(StringComparer.Ordinal);
        for (int k = 0; k < shards; k++)
        {
            names[k] = ShardFileName(k, shards);
            var part = assignment[k];
            foreach (var t in part) weightMap[t.Name] = names[k];
            Write(Path.Combine(folder, names[k]), part, writeData);
        }
        long total = tensors.Sum(t => t.ByteSize);
        // the index last: a reader finds it only when every shard it names is complete
        AtomicFile.Write(Path.Combine(folder, IndexFileName), fs =>
        {
            using var w = new Utf8JsonWriter(fs, new JsonWriterOptions { Indented = true });
            w.WriteStartObject();
            w.WriteStartObject("metadata");
            w.WriteNumber("total_size", total);
            w.WriteEndObject();
            w.WriteStartObject("weight_map");
            foreach (var (name, file) in weightMap) w.WriteString(name, file);
            w.WriteEndObject();
            w.WriteEndObject();
        });
        return names;
    }

    /// <summary>
    /// Splits tensors (sorted by name, as Hugging Face's state-dict order roughly is) into <paramref name="shards"/>
    /// contiguous, non-empty groups of roughly equal byte size.
    /// </summary>
    static List<TensorHeader>[] AssignShards(IReadOnlyList<TensorHeader> tensors, int shards)
    {
        var sorted = tensors.OrderBy(t => t.Name, StringComparer.Ordinal).ToList();
        long total = sorted.Sum(t => t.ByteSize);
        double target = (double)total / shards;
        var groups = Enumerable.Range(0, shards).Select(_ => new List<TensorHeader>()).ToArray();
        int shard = 0; long acc = 0;
        for (int i = 0; i < sorted.Count; i++)
        {
            int remainingAfterThis = sorted.Count - i;           // tensors i..end still to place
            int shardsAfterCurrent = shards - 1 - shard;
            bool mustMove = groups[shard].Count > 0 && remainingAfterThis <= shardsAfterCurrent;
            bool wantMove = groups[shard].Count > 0 && shardsAfterCurrent > 0 && acc >= target * (shard + 1);
            if (mustMove || wantMove) shard++;
            groups[shard].Add(sorted[i]);
            acc += sorted[i].ByteSize;
        }
        return groups;
    }

    /// <summary>Safetensors' layout order: dtype descending in its enum order (F64 &gt; F32 &gt; BF16 &gt; F16), then name.</summary>
    static List<TensorHeader> FileOrder(IReadOnlyList<TensorHeader> tensors)
    {
        CheckNames(tensors);
        return tensors.OrderByDescending(t => Rank(t.DType)).ThenBy(t => t.Name, StringComparer.Ordinal).ToList();
    }

    static int Rank(DType t) => t switch { DType.F16 => 0, DType.BF16 => 1, DType.F32 => 2, _ => 3 };

    static byte[] BuildHeader(List<TensorHeader> ordered)
    {
        var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms))
        {
            w.WriteStartObject();
            w.WriteStartObject("__metadata__");
            w.WriteString("format", "pt");
            w.WriteEndObject();
            long offset = 0;
            foreach (var t in ordered)
            {
                w.WriteStartObject(t.Name);
                w.WriteString("dtype", t.DType.Name());
                w.WriteStartArray("shape");
                foreach (var s in t.Shape) w.WriteNumberValue(s);
                w.WriteEndArray();
                w.WriteStartArray("data_offsets");
                w.WriteNumberValue(offset);
                w.WriteNumberValue(offset + t.ByteSize);
                w.WriteEndArray();
                w.WriteEndObject();
                offset += t.ByteSize;
            }
            w.WriteEndObject();
        }
        int n = (int)ms.Length, padded = (n + 7) / 8 * 8;
        var header = new byte[padded];
        ms.GetBuffer().AsSpan(0, n).CopyTo(header);
        header.AsSpan(n).Fill((byte)' ');
        return header;
    }

    static void CheckNames(IReadOnlyList<TensorHeader> tensors)
    {
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var t in tensors)
        {
            if (string.IsNullOrEmpty(t.Name) || t.Name == "__metadata__")
                throw new ArgumentException($"invalid tensor name '{t.Name}'");
            if (!seen.Add(t.Name)) throw new ArgumentException($"duplicate tensor name '{t.Name}'");
            if (t.Shape.Any(s => s < 0)) throw new ArgumentException($"tensor '{t.Name}' has a negative dimension {ShapeText(t.Shape)}");
        }
    }

    static Dictionary<string, byte[]> CheckData(List<(string name, DType dtype, long[] shape, byte[] data)> list)
    {
        var byName = new Dictionary<string, byte[]>(StringComparer.Ordinal);
        foreach (var t in list)
        {
            long expected = new TensorHeader(t.name, t.dtype, t.shape).ByteSize;
            if (t.data.LongLength != expected)
                throw new ArgumentException($"tensor '{t.name}': {t.data.LongLength} data bytes, {expected} expected for {t.dtype.Name()} {ShapeText(t.shape)}");
            if (!byName.TryAdd(t.name, t.data)) throw new ArgumentException($"duplicate tensor name '{t.name}'");
        }
        return byName;
    }

    static string ShapeText(long[] shape) => "[" + string.Join(", ", shape) + "]";

    /// <summary>Encodes doubles as raw little-endian storage of <paramref name="dtype"/> (round to nearest even; BF16 via float32).</summary>
    public static byte[] Encode(ReadOnlySpan<double> values, DType dtype)
    {
        var bytes = new byte[checked(values.Length * dtype.Size())];
        Encode(values, dtype, bytes);
        return bytes;
    }

    /// <summary>Encodes into <paramref name="dest"/> (length values.Length·size).</summary>
    public static void Encode(ReadOnlySpan<double> values, DType dtype, Span<byte> dest)
    {
        if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("big-endian hosts are not supported");
        switch (dtype)
        {
            case DType.F64:
                System.Runtime.InteropServices.MemoryMarshal.AsBytes(values).CopyTo(dest);
                break;
            case DType.F32:
            {
                var f = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(dest);
                for (int i = 0; i < values.Length; i++) f[i] = (float)values[i];
                break;
            }
            case DType.BF16:
            {
                var u = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ushort>(dest);
                for (int i = 0; i < values.Length; i++) u[i] = DTypes.FloatToBf16((float)values[i]);
                break;
            }
            default:
            {
                var u = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ushort>(dest);
                for (int i = 0; i < values.Length; i++) u[i] = BitConverter.HalfToUInt16Bits((Half)values[i]);
                break;
            }
        }
    }
}
