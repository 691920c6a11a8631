using System.Text;
using LinearLens.Numerics;

namespace LinearLens.Loading;

/// <summary>One tensor to write: name, stored type, dims in ggml order (Dims[0] = ne0, a matrix's input dimension).</summary>
public sealed record GgufTensorEntry(string Name, DType Type, long[] Dims)
{
    public long Bytes => Type.RowBytes(Dims[0]) * Dims.Skip(1).Aggregate(1L, (a, b) => a * b);
}

/// <summary>
/// Writes GGUF files (v3 unless asked otherwise) the way llama.cpp's gguf-py writes them: header, key/values in the
/// given order, tensor infos with offsets padded to general.alignment (default 32), the header padded to the
/// alignment, then each tensor's bytes padded to it. Metadata values are typed by their .NET type (string, bool,
/// byte, sbyte, ushort, short, uint, int, ulong, long, float, double, or a <see cref="GgufArray"/> / typed array).
/// The file is written under a temporary name and renamed when complete.
/// </summary>
public static class GgufWriter
{
    public static void Write(string path, IEnumerable<KeyValuePair<string, object>> metadata, IReadOnlyList<GgufTensorEntry> tensors,
        Action<GgufTensorEntry, Stream> writeData, uint version = 3)
    {
        var meta = metadata.ToList();
        if (meta.GroupBy(kv => kv.Key).FirstOrDefault(g => g.Count() > 1) is { } dup)
            throw new ArgumentException($"metadata key '{dup.Key}' given twice");
        long alignment = meta.FirstOrDefault(kv => kv.Key == "general.alignment").Value is uint a ? a : GgufFile.DefaultAlignment;
        if (alignment == 0) throw new ArgumentException("general.alignment 0 cannot be written (nothing aligns to 0)");
        string tmp = $"{path}.tmp-{Environment.ProcessId}";
        try
        {
            using (var fs = new FileStream(tmp, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20))
            {
                var w = new BinaryWriter(fs, Encoding.UTF8, leaveOpen: true);
                w.Write(0x46554747u);   // "GGUF"
                w.Write(version);
                w.Write((ulong)tensors.Count);
                w.Write((ulong)meta.Count);
                foreach (var (key, value) in meta)
                {
                    WriteString(w, key);
                    WriteValue(w, key, value);
                }
                long offset = 0;
                foreach (var t in tensors)
                {
                    WriteString(w, t.Name);
                    w.Write((uint)t.Dims.Length);
                    foreach (long d in t.Dims) w.Write((ulong)d);
                    w.Write(GgmlTypeId(t.Type));
                    w.Write((ulong)offset);
                    offset += Pad(t.Bytes, alignment);
                }
                w.Flush();
                PadTo(fs, alignment);
                foreach (var t in tensors)
                {
                    long start = fs.Position;
                    writeData(t, fs);
                    if (fs.Position - start != t.Bytes)
                        throw new InvalidOperationException($"tensor '{t.Name}': {fs.Position - start} bytes written, {t.Bytes} expected");
                    PadTo(fs, alignment);
                }
            }
            File.Move(tmp, path, overwrite: true);
        }
        finally { if (File.Exists(tmp)) File.Delete(tmp); }
    }

    static long Pad(long n, long alignment) => (n + alignment - 1) / alignment * alignment;

    static void PadTo(Stream s, long alignment)
    {
        long pad = Pad(s.Position, alignment) - s.Position;
        for (long i = 0; i < pad; i++) s.WriteByte(0);
    }

    static void WriteString(BinaryWriter w, string s)
    {
        var bytes = Encoding.UTF8.GetBytes(s);
        w.Write((ulong)bytes.Length);
        w.Write(bytes);
    }

    static GgufType TypeOf(object v, string key) => v switch
    {
        byte => GgufType.U8, sbyte => GgufType.I8, ushort => GgufType.U16, short => GgufType.I16,
        uint => GgufType.U32, int => GgufType.I32, float => GgufType.F32, bool => GgufType.Bool,
        string => GgufType.String, GgufArray or Array => GgufType.Array, ulong => GgufType.U64, long => GgufType.I64, double => GgufType.F64,
        _ => throw new ArgumentException($"metadata '{key}': {v.GetType().Name} is not a GGUF value type"),
    };

    static void WriteValue(BinaryWriter w, string key, object v)
    {
        var type = TypeOf(v, key);
        w.Write((uint)type);
        if (type != GgufType.Array) { WriteScalar(w, v); return; }
        var arr = v as GgufArray ?? new GgufArray(ElementTypeOf((Array)v, key), (Array)v);
        w.Write((uint)arr.ElementType);
        w.Write((ulong)arr.Values.Length);
        foreach (var x in arr.Values) WriteScalar(w, x!);
    }

    static GgufType ElementTypeOf(Array a, string key) => a.GetType().GetElementType() switch
    {
        var t when t == typeof(string) => GgufType.String, var t when t == typeof(float) => GgufType.F32,
        var t when t == typeof(int) => GgufType.I32, var t when t == typeof(uint) => GgufType.U32,
        var t when t == typeof(bool) => GgufType.Bool, var t when t == typeof(double) => GgufType.F64,
        var t when t == typeof(long) => GgufType.I64, var t when t == typeof(ulong) => GgufType.U64,
        var t when t == typeof(byte) => GgufType.U8, var t when t == typeof(sbyte) => GgufType.I8,
        var t when t == typeof(short) => GgufType.I16, var t when t == typeof(ushort) => GgufType.U16,
        var t => throw new ArgumentException($"metadata '{key}': arrays of {t!.Name} are not a GGUF type"),
    };

    static void WriteScalar(BinaryWriter w, object v)
    {
        switch (v)
        {
            case byte x: w.Write(x); break;
            case sbyte x: w.Write(x); break;
            case ushort x: w.Write(x); break;
            case short x: w.Write(x); break;
            case uint x: w.Write(x); break;
            case int x: w.Write(x); break;
            case float x: w.Write(x); break;
            case bool x: w.Write((byte)(x ? 1 : 0)); break;
            case string x: WriteString(w, x); break;
            case ulong x: w.Write(x); break;
            case long x: w.Write(x); break;
            case double x: w.Write(x); break;
            default: throw new ArgumentException($"{v.GetType().Name} is not a GGUF scalar");
        }
    }

    /// <summary>ggml's type id of a stored type (ggml.h's enum ggml_type).</summary>
    public static uint GgmlTypeId(DType t) => t switch
    {
        DType.F32 => 0, DType.F16 => 1, DType.Q4_0 => 2, DType.Q4_1 => 3, DType.Q5_0 => 6, DType.Q5_1 => 7, DType.Q8_0 => 8,
        DType.Q2_K => 10, DType.Q3_K => 11, DType.Q4_K => 12, DType.Q5_K => 13, DType.Q6_K => 14,
        DType.IQ4_NL => 20, DType.IQ4_XS => 23, DType.F64 => 28, DType.BF16 => 30,
        _ => throw new ArgumentOutOfRangeException(nameof(t)),
    };
}
