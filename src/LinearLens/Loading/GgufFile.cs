using System.IO.MemoryMappedFiles;
using System.Text;
using LinearLens.Numerics;

namespace LinearLens.Loading;

/// <summary>GGUF metadata value types (gguf.cpp's enum gguf_type).</summary>
public enum GgufType : uint { U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, Bool = 7, String = 8, Array = 9, U64 = 10, I64 = 11, F64 = 12 }

/// <summary>A metadata array: its element type and the values (string[], float[], int[], …; never nested).</summary>
public sealed record GgufArray(GgufType ElementType, Array Values);

/// <summary>One tensor's header entry. Dims are in ggml order: Dims[0] (ne0) is the fastest, a matrix's input dimension.</summary>
public sealed record GgufTensorInfo(string Name, DType Type, long[] Dims, long Offset, long Bytes)
{
    /// <summary>The shape in row-major (Hugging Face) order: ggml's [ne0, ne1] is a ne1 × ne0 matrix.</summary>
    public long[] Shape => Dims.Reverse().ToArray();
    public long Rows => Dims.Skip(1).Aggregate(1L, (a, b) => a * b);
}

/// <summary>
/// A GGUF v2/v3 file (llama.cpp's format), memory-mapped read-only. Every header value — magic, version, counts,
/// string and array lengths, value types, tensor dims, types and offsets, the alignment — is checked against the
/// file before it is used, so that a corrupt or truncated file fails with one line and never reads out of bounds.
/// Layout: "GGUF", u32 version, u64 tensor count, u64 key/value count, the key/values, the tensor infos, padding
/// to general.alignment (default 32), then the data section; tensor offsets are relative to its start.
/// </summary>
public sealed unsafe class GgufFile : IDisposable
{
    public const uint DefaultAlignment = 32;

    readonly MemoryMappedFile? _map;
    readonly MemoryMappedViewAccessor? _view;
    readonly byte* _base;
    public string Path { get; }
    public uint Version { get; }
    public long Length { get; }
    public long Alignment { get; }
    public long DataStart { get; }
    public IReadOnlyDictionary<string, object> Metadata { get; }
    public IReadOnlyList<GgufTensorInfo> Tensors { get; }
    readonly Dictionary<string, GgufTensorInfo> _byName;

    GgufFile(string path, MemoryMappedFile? map, MemoryMappedViewAccessor? view, byte* basePtr, long length, Header h)
    {
        Path = path; _map = map; _view = view; _base = basePtr; Length = length;
        Version = h.Version; Alignment = h.Alignment; DataStart = h.DataStart; Metadata = h.Metadata; Tensors = h.Tensors;
        _byName = h.Tensors.ToDictionary(t => t.Name);
    }

    public static GgufFile Open(string path)
    {
        if (!File.Exists(path)) throw new LinearLensException($"GGUF file not found: {path}");
        // The open file's length, not FileInfo's: that is the link's own when the path is a symlink (a Hugging Face cache
        // snapshot links every file into blobs/), and the header would be read against a length of a few dozen bytes.
        long length;
        using (var fs = File.OpenRead(path)) length = fs.Length;
        if (length < 24)
            throw new LinearLensException($"{path} is {length} bytes, too short for a GGUF file (truncated download? fetch it again)");
        var map = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        MemoryMappedViewAccessor? view = null;
        try
        {
            view = map.CreateViewAccessor(0, length, MemoryMappedFileAccess.Read);
            byte* basePtr = null;
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref basePtr);
            basePtr += view.PointerOffset;
            try { return new GgufFile(path, map, view, basePtr, length, ParseHeader(basePtr, length, path)); }
            catch (LinearLensException e) { view.SafeMemoryMappedViewHandle.ReleasePointer(); throw Clean(e); }
            catch { view.SafeMemoryMappedViewHandle.ReleasePointer(); throw; }
        }
        catch { view?.Dispose(); map.Dispose(); throw; }
    }

    /// <summary>
    /// The error with what the file supplied made printable: control characters escaped (a corrupt name must not
    /// break the one-line message) and an overlong message shortened in the middle.
    /// </summary>
    internal static LinearLensException Clean(LinearLensException e)
    {
        var sb = new StringBuilder(e.Message.Length);
        foreach (char c in e.Message) sb.Append(char.IsControl(c) ? $"\\x{(int)c:X2}" : c.ToString());
        string m = sb.ToString();
        if (m.Length > 600) m = m[..300] + " … " + m[^250..];
        return m == e.Message ? e : new LinearLensException(m);
    }

    public bool Contains(string name) => _byName.ContainsKey(name);
    public GgufTensorInfo? Find(string name) => _byName.GetValueOrDefault(name);

    /// <summary>Address of a tensor's first byte (valid while this file is open).</summary>
    public byte* DataOf(GgufTensorInfo t) => _base + DataStart + t.Offset;

    /// <summary>A tensor's stored bytes as a stream over the mapping (valid while this file is open).</summary>
    public UnmanagedMemoryStream OpenData(GgufTensorInfo t) => new(DataOf(t), t.Bytes);

    sealed record Header(uint Version, long Alignment, long DataStart, Dictionary<string, object> Metadata, List<GgufTensorInfo> Tensors);

    /// <summary>Parses and validates the header of a GGUF image of `length` bytes at `data`.</summary>
    static Header ParseHeader(byte* data, long length, string path)
    {
        var r = new Reader(data, length, path);
        uint magic = r.U32("magic");
        if (magic != 0x46554747) // "GGUF" little-endian
            throw new LinearLensException($"{path} does not start with the GGUF magic (found 0x{magic:X8}); not a GGUF file");
        uint version = r.U32("version");
        if (version is not (2 or 3))
            throw new LinearLensException($"{path}: GGUF version {version} is not supported (LinearLens reads versions 2 and 3; re-convert the model with a current llama.cpp)");
        ulong nTensors = r.U64("tensor count"), nKv = r.U64("key/value count");
        // Each key/value takes ≥ 13 bytes (key length, one key byte, type, one value byte), each tensor info ≥ 29.
        if (nKv > (ulong)(length / 13))
            throw new LinearLensException($"{path}: key/value count {nKv} cannot fit in a file of {length} bytes; the header is corrupt");
        if (nTensors > (ulong)(length / 29))
            throw new LinearLensException($"{path}: tensor count {nTensors} cannot fit in a file of {length} bytes; the header is corrupt");

        var meta = new Dictionary<string, object>();
        for (ulong i = 0; i < nKv; i++)
        {
            string key = r.String($"key of metadata entry {i}");
            if (key.Length == 0) throw new LinearLensException($"{path}: metadata entry {i} has an empty key; the header is corrupt");
            var type = r.Type($"type of '{key}'");
            object value = type == GgufType.Array ? r.Array(key) : r.Scalar(type, key);
            if (!meta.TryAdd(key, value)) throw new LinearLensException($"{path}: metadata key '{key}' appears twice; the header is corrupt");
        }

        long alignment = DefaultAlignment;
        if (meta.TryGetValue("general.alignment", out var al))
        {
            if (al is not uint a || a == 0 || (a & (a - 1)) != 0)
                throw new LinearLensException($"{path}: general.alignment = {Describe(al)} (it must be a u32 power of two)");
            alignment = a;
        }

        var tensors = new List<GgufTensorInfo>();
        var names = new HashSet<string>();
        for (ulong i = 0; i < nTensors; i++)
        {
            string name = r.String($"name of tensor {i}");
            if (name.Length == 0 || !names.Add(name))
                throw new LinearLensException($"{path}: tensor {i} has {(name.Length == 0 ? "an empty name" : $"the name '{name}' of an earlier tensor")}; the header is corrupt");
            uint nDims = r.U32($"dimension count of tensor '{name}'");
            if (nDims is < 1 or > 4)
                throw new LinearLensException($"{path}: tensor '{name}' has {nDims} dimensions (GGUF tensors have 1 to 4); the header is corrupt");
            var dims = new long[nDims];
            long count = 1;
            for (int d = 0; d < nDims; d++)
            {
                ulong ne = r.U64($"dimension {d} of tensor '{name}'");
                if (ne == 0 || ne > long.MaxValue || count > long.MaxValue / (long)ne)
                    throw new LinearLensException($"{path}: tensor '{name}' has dimension {d} = {ne} (dimensions must be positive and their product fit in 63 bits); the header is corrupt");
                dims[d] = (long)ne;
                count *= (long)ne;
            }
            uint typeId = r.U32($"type of tensor '{name}'");
            DType type = GgmlType(typeId, name, path);
            ulong offset = r.U64($"offset of tensor '{name}'");
            int be = type.BlockElements();
            if (dims[0] % be != 0)
                throw new LinearLensException($"{path}: tensor '{name}' of type {type.Name()} has rows of {dims[0]} elements, not a whole number of {be}-element blocks; the header is corrupt");
            long rows = count / dims[0];
            long rowBytes = type.RowBytes(dims[0]);
            if (rows > long.MaxValue / rowBytes)
                throw new LinearLensException($"{path}: tensor '{name}' is too large ({rows} rows of {rowBytes} bytes); the header is corrupt");
            if (offset > long.MaxValue || (long)offset % alignment != 0)
                throw new LinearLensException($"{path}: tensor '{name}' has data offset {offset}, not a multiple of the alignment {alignment}; the header is corrupt");
            tensors.Add(new GgufTensorInfo(name, type, dims, (long)offset, rows * rowBytes));
        }

        long headerEnd = r.Position;
        long dataStart = (headerEnd + alignment - 1) / alignment * alignment;
        long dataLen = Math.Max(0, length - dataStart);
        foreach (var t in tensors)
            if (t.Offset > dataLen || t.Bytes > dataLen - t.Offset)
                throw new LinearLensException($"{path}: tensor '{t.Name}' ([{string.Join(", ", t.Dims)}] {t.Type.Name()}, {t.Bytes} bytes at data offset {t.Offset}) reaches past the end of the file's {dataLen}-byte data section (truncated download? fetch it again)");
        var sorted = tensors.OrderBy(t => t.Offset).ToList();
        for (int i = 1; i < sorted.Count; i++)
            if (sorted[i - 1].Offset + sorted[i - 1].Bytes > sorted[i].Offset)
                throw new LinearLensException($"{path}: the data of tensors '{sorted[i - 1].Name}' and '{sorted[i].Name}' overlap; the header is corrupt");
        return new Header(version, alignment, dataStart, meta, tensors);
    }

    /// <summary>ggml type id → the stored type; the types LinearLens cannot decode are named in the error.</summary>
    static DType GgmlType(uint id, string tensor, string path) => id switch
    {
        0 => DType.F32, 1 => DType.F16, 2 => DType.Q4_0, 3 => DType.Q4_1, 6 => DType.Q5_0, 7 => DType.Q5_1, 8 => DType.Q8_0,
        10 => DType.Q2_K, 11 => DType.Q3_K, 12 => DType.Q4_K, 13 => DType.Q5_K, 14 => DType.Q6_K,
        20 => DType.IQ4_NL, 23 => DType.IQ4_XS, 28 => DType.F64, 30 => DType.BF16,
        _ => throw new LinearLensException($"{path}: tensor '{tensor}' has ggml type {GgmlTypeName(id)}, which LinearLens does not read (supported: F32, F16, BF16, F64, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS; re-quantize with one of them)"),
    };

    static string GgmlTypeName(uint id) => id switch
    {
        9 => "Q8_1", 15 => "Q8_K", 16 => "IQ2_XXS", 17 => "IQ2_XS", 18 => "IQ3_XXS", 19 => "IQ1_S", 21 => "IQ3_S", 22 => "IQ2_S",
        24 => "I8", 25 => "I16", 26 => "I32", 27 => "I64", 29 => "IQ1_M", 34 => "TQ1_0", 35 => "TQ2_0", 39 => "MXFP4",
        _ => $"{id} (unknown)",
    };

    static string Describe(object v) => v switch
    {
        GgufArray a => $"an {TypeName(a)}",
        string s => $"\"{s}\"",
        _ => $"{v} ({TypeName(v)})",
    };

    /// <summary>A metadata value's type as the GGUF spec names it (uint32, float32, string, array of 3 int32), for messages.</summary>
    public static string TypeName(object v) => v is GgufArray a ? $"array of {a.Values.Length} {TypeName(a.ElementType)}" : TypeName(v.GetType());

    public static string TypeName(GgufType t) => t switch
    {
        GgufType.U8 => "uint8", GgufType.I8 => "int8", GgufType.U16 => "uint16", GgufType.I16 => "int16", GgufType.U32 => "uint32",
        GgufType.I32 => "int32", GgufType.F32 => "float32", GgufType.Bool => "bool", GgufType.String => "string", GgufType.Array => "array",
        GgufType.U64 => "uint64", GgufType.I64 => "int64", GgufType.F64 => "float64", _ => $"type {(uint)t}",
    };

    /// <summary>The GGUF name of the .NET type a metadata value of that GGUF type is read as.</summary>
    public static string TypeName(Type t) => Type.GetTypeCode(t) switch
    {
        TypeCode.Byte => "uint8", TypeCode.SByte => "int8", TypeCode.UInt16 => "uint16", TypeCode.Int16 => "int16",
        TypeCode.UInt32 => "uint32", TypeCode.Int32 => "int32", TypeCode.Single => "float32", TypeCode.Boolean => "bool",
        TypeCode.String => "string", TypeCode.UInt64 => "uint64", TypeCode.Int64 => "int64", TypeCode.Double => "float64",
        _ => t.Name,
    };

    /// <summary>Bounds-checked little-endian reads from the mapped header.</summary>
    struct Reader(byte* data, long length, string path)
    {
        public long Position;

        void Need(long bytes, string what)
        {
            if (bytes < 0 || bytes > length - Position)
                throw new LinearLensException($"{path}: {what} ({bytes} bytes at byte {Position}) runs past the end of the {length}-byte file (truncated download or corrupt header; fetch it again)");
        }

        T Read<T>(string what) where T : unmanaged
        {
            Need(sizeof(T), what);
            T v = System.Runtime.CompilerServices.Unsafe.ReadUnaligned<T>(data + Position);
            Position += sizeof(T);
            return v;
        }

        public uint U32(string what) => Read<uint>(what);
        public ulong U64(string what) => Read<ulong>(what);

        public GgufType Type(string what)
        {
            uint t = U32(what);
            if (t > (uint)GgufType.F64) throw new LinearLensException($"{path}: {what} is {t}, not a GGUF value type (0–12); the header is corrupt");
            return (GgufType)t;
        }

        public string String(string what)
        {
            ulong n = U64($"length of the {what}");
            if (n > (ulong)(length - Position))
                throw new LinearLensException($"{path}: the {what} claims {n} bytes at byte {Position}, past the end of the {length}-byte file; the header is corrupt");
            if (n > int.MaxValue) throw new LinearLensException($"{path}: the {what} is {n} bytes long; the header is corrupt");
            var s = Encoding.UTF8.GetString(data + Position, (int)n);
            Position += (long)n;
            return s;
        }

        public object Scalar(GgufType t, string key) => t switch
        {
            GgufType.U8 => Read<byte>(key), GgufType.I8 => Read<sbyte>(key),
            GgufType.U16 => Read<ushort>(key), GgufType.I16 => Read<short>(key),
            GgufType.U32 => Read<uint>(key), GgufType.I32 => Read<int>(key),
            GgufType.F32 => Read<float>(key), GgufType.F64 => Read<double>(key),
            GgufType.U64 => Read<ulong>(key), GgufType.I64 => Read<long>(key),
            GgufType.Bool => Read<byte>(key) switch
            {
                0 => false, 1 => true,
                var b => throw new LinearLensException($"{path}: boolean '{key}' has the byte value {b} (0 or 1 expected); the header is corrupt"),
            },
            GgufType.String => String($"string value of '{key}'"),
            _ => throw new LinearLensException($"{path}: '{key}' has type {t} where a scalar was expected"),
        };

        public GgufArray Array(string key)
        {
            var et = Type($"element type of array '{key}'");
            if (et == GgufType.Array) throw new LinearLensException($"{path}: '{key}' is an array of arrays, which GGUF readers do not support; the header is corrupt");
            ulong n = U64($"length of array '{key}'");
            long minSize = et switch { GgufType.U8 or GgufType.I8 or GgufType.Bool => 1, GgufType.U16 or GgufType.I16 => 2,
                GgufType.U32 or GgufType.I32 or GgufType.F32 => 4, _ => 8 };   // a string takes ≥ 8 (its length)
            if (n > (ulong)((length - Position) / minSize))
                throw new LinearLensException($"{path}: array '{key}' claims {n} elements of {et}, more than the rest of the {length}-byte file can hold; the header is corrupt");
            int count = (int)n;
            switch (et)
            {
                case GgufType.String:
                {
                    var a = new string[count];
                    for (int i = 0; i < count; i++) a[i] = String($"element {i} of '{key}'");
                    return new GgufArray(et, a);
                }
                case GgufType.Bool:
                {
                    var a = new bool[count];
                    for (int i = 0; i < count; i++) a[i] = (bool)Scalar(GgufType.Bool, key);
                    return new GgufArray(et, a);
                }
                case GgufType.U8: return new GgufArray(et, Block<byte>(count, key));
                case GgufType.I8: return new GgufArray(et, Block<sbyte>(count, key));
                case GgufType.U16: return new GgufArray(et, Block<ushort>(count, key));
                case GgufType.I16: return new GgufArray(et, Block<short>(count, key));
                case GgufType.U32: return new GgufArray(et, Block<uint>(count, key));
                case GgufType.I32: return new GgufArray(et, Block<int>(count, key));
                case GgufType.F32: return new GgufArray(et, Block<float>(count, key));
                case GgufType.U64: return new GgufArray(et, Block<ulong>(count, key));
                case GgufType.I64: return new GgufArray(et, Block<long>(count, key));
                default: return new GgufArray(et, Block<double>(count, key));
            }
        }

        T[] Block<T>(int count, string key) where T : unmanaged
        {
            Need((long)count * sizeof(T), $"array '{key}'");
            var a = new T[count];
            new ReadOnlySpan<T>(data + Position, count).CopyTo(a);
            Position += (long)count * sizeof(T);
            return a;
        }
    }

    bool _disposed;

    public void Dispose()
    {
        if (_view is null || _disposed) return;
        _disposed = true;
        _view.SafeMemoryMappedViewHandle.ReleasePointer();
        _view.Dispose();
        _map!.Dispose();
    }
}
