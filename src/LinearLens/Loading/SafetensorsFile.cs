using System.IO.MemoryMappedFiles;
using System.Text.Json;
using LinearLens.Numerics;

namespace LinearLens.Loading;

/// <summary>A tensor inside a memory-mapped safetensors file: its dtype, shape and data pointer.</summary>
public readonly unsafe struct StoredTensor(string name, DType type, long[] shape, byte* data, string file)
{
    public string Name { get; init; } = name;
    public DType Type { get; } = type;
    public long[] Shape { get; } = shape;
    public byte* Data { get; } = data;
    public string File { get; } = file;

    public long Count => Shape.Aggregate(1L, (a, b) => a * b);   // fits: the header check bounds it by the file size

    /// <summary>The tensor as a row-major matrix: [rows, cols] for 2-D, [1, n] for 1-D.</summary>
    public MatrixView AsMatrix() => Shape.Length switch
    {
        _ when Shape.Any(s => s > int.MaxValue) => throw new LinearLensException($"tensor '{Name}' in {File} has shape [{string.Join(", ", Shape)}], a dimension beyond 2³¹ − 1 that LinearLens cannot index"),
        1 => new MatrixView(Data, Type, 1, (int)Shape[0]),
        2 => new MatrixView(Data, Type, (int)Shape[0], (int)Shape[1]),
        _ => throw new LinearLensException($"tensor '{Name}' in {File} has {Shape.Length} dimensions where a matrix was expected"),
    };

    public double this[long i] => DTypes.Read(Data, Type, i);
}

/// <summary>
/// One .safetensors file, memory-mapped read-only. The header is validated completely (size, JSON, dtypes,
/// shapes, offsets inside the file and consistent with the shape) before any tensor pointer is handed out.
/// </summary>
public sealed unsafe class SafetensorsFile : IDisposable
{
    readonly MemoryMappedFile _map;
    readonly MemoryMappedViewAccessor _view;
    readonly byte* _base;
    public string Path { get; }
    public IReadOnlyDictionary<string, StoredTensor> Tensors { get; }

    SafetensorsFile(string path, MemoryMappedFile map, MemoryMappedViewAccessor view, byte* basePtr, Dictionary<string, StoredTensor> tensors)
    {
        Path = path; _map = map; _view = view; _base = basePtr; Tensors = tensors;
    }

    public static SafetensorsFile Open(string path)
    {
        if (!System.IO.File.Exists(path))
            throw new LinearLensException($"safetensors file not found: {path} (check the model folder)");
        long length;
        ulong headerLen;
        byte[] header;
        using (var fs = System.IO.File.OpenRead(path))
        {
            // The open file's length, not FileInfo's: in a Hugging Face cache the path is a symlink into blobs/.
            length = fs.Length;
            if (length < 8)
                throw new LinearLensException($"{path} is {length} bytes, too short for a safetensors file (truncated download? fetch it again)");
            Span<byte> lenBytes = stackalloc byte[8];
            fs.ReadExactly(lenBytes);
            headerLen = BitConverter.ToUInt64(lenBytes);
            if (headerLen == 0 || headerLen > 100_000_000 || 8 + (long)headerLen > length)
                throw new LinearLensException($"{path}: header length {headerLen} does not fit a file of {length} bytes (truncated or not a safetensors file; fetch it again)");
            header = new byte[headerLen];
            fs.ReadExactly(header);
        }
        long dataStart = 8 + (long)headerLen, dataLen = length - dataStart;
        var entries = ParseHeader(path, header, dataLen);

        var map = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        var view = map.CreateViewAccessor(0, length, MemoryMappedFileAccess.Read);
        byte* basePtr = null;
        view.SafeMemoryMappedViewHandle.AcquirePointer(ref basePtr);
        basePtr += view.PointerOffset;
        var tensors = new Dictionary<string, StoredTensor>();
        foreach (var (name, type, shape, begin) in entries)
            tensors[name] = new StoredTensor(name, type, shape, basePtr + dataStart + begin, path);
        return new SafetensorsFile(path, map, view, basePtr, tensors);
    }

    /// <summary>
    /// The header's tensors, every value checked for its JSON type and range, and the format's rule that the
    /// tensors cover the data section exactly (sorted by offset, each starts where the previous ends, the last
    /// ends at the end of the file: no holes, no overlaps).
    /// </summary>
    static List<(string, DType, long[], long)> ParseHeader(string path, byte[] header, long dataLen)
    {
        var doc = JsonFile.Parse(header, $"{path} (header)");
        var result = new List<(string, DType, long[], long)>();
        var spans = new List<(long begin, long end, string name)>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        using (doc)
        {
            foreach (var prop in doc.RootElement.EnumerateObject())
            {
                if (!seen.Add(prop.Name))
                    throw new LinearLensException($"{path}: the header names '{prop.Name}' twice; the file is corrupt");
                var e = prop.Value;
                if (prop.Name == "__metadata__")
                {
                    if (e.ValueKind != JsonValueKind.Object)
                        throw new LinearLensException($"{path}: __metadata__ is {JsonFile.Describe(e)} where an object of strings was expected; the file is corrupt");
                    continue;
                }
                string where = $"{path}: tensor '{prop.Name}'";
                if (prop.Name.Length == 0) throw new LinearLensException($"{path}: a tensor has an empty name; the file is corrupt");
                if (e.ValueKind != JsonValueKind.Object)
                    throw new LinearLensException($"{where} is {JsonFile.Describe(e)} where an object with dtype, shape and data_offsets was expected; the file is corrupt");
                if (!e.TryGetProperty("dtype", out var dt) || !e.TryGetProperty("shape", out var sh) || !e.TryGetProperty("data_offsets", out var off))
                    throw new LinearLensException($"{where} lacks dtype, shape or data_offsets; the file is corrupt");
                if (dt.ValueKind != JsonValueKind.String)
                    throw new LinearLensException($"{where}: dtype is {JsonFile.Describe(dt)} where a string such as \"BF16\" was expected; the file is corrupt");
                DType type = dt.GetString() switch
                {
                    "F64" => DType.F64, "F32" => DType.F32, "BF16" => DType.BF16, "F16" => DType.F16,
                    var s => throw new LinearLensException($"{where} has dtype {s}; LinearLens reads F64, F32, BF16 and F16 (convert the checkpoint)"),
                };
                var shape = Integers(sh, $"{where}: shape", "a list of non-negative integers");
                var offs = Integers(off, $"{where}: data_offsets", "[begin, end], two non-negative integers");
                if (offs.Length != 2 || offs[1] < offs[0] || offs[1] > dataLen)
                    throw new LinearLensException($"{where}: data offsets [{string.Join(", ", offs)}] lie outside the {dataLen}-byte data section (truncated file? fetch it again)");
                long bytes = ByteCount(shape, type.Size())
                    ?? throw new LinearLensException($"{where}: shape [{string.Join(", ", shape)}] has more elements than any file can hold; the file is corrupt");
                if (offs[1] - offs[0] != bytes)
                    throw new LinearLensException($"{where}: {offs[1] - offs[0]} bytes stored for shape [{string.Join(", ", shape)}] of {type.Name()} ({bytes} expected); the file is corrupt");
                result.Add((prop.Name, type, shape, offs[0]));
                spans.Add((offs[0], offs[1], prop.Name));
            }
        }
        // Zero-sized tensors sort before the tensor that starts at the same offset.
        spans.Sort((a, b) => a.begin != b.begin ? a.begin.CompareTo(b.begin) : a.end.CompareTo(b.end));
        long cursor = 0;
        string previous = "the start of the data section";
        foreach (var (begin, end, name) in spans)
        {
            if (begin < cursor)
                throw new LinearLensException($"{path}: tensor '{name}' (bytes {begin}…{end}) overlaps {previous} (ends at {cursor}); the file is corrupt");
            if (begin > cursor)
                throw new LinearLensException($"{path}: {begin - cursor} bytes between {previous} and tensor '{name}' belong to no tensor; the file is corrupt");
            cursor = end;
            previous = $"tensor '{name}'";
        }
        if (cursor != dataLen)
            throw new LinearLensException($"{path}: the data section is {dataLen} bytes but the tensors cover {cursor}; the file is corrupt or has trailing bytes (fetch it again)");
        return result;
    }

    /// <summary>A JSON array of non-negative integers that fit in a long.</summary>
    static long[] Integers(JsonElement e, string what, string expected)
    {
        if (e.ValueKind != JsonValueKind.Array)
            throw new LinearLensException($"{what} is {JsonFile.Describe(e)} where {expected} was expected; the file is corrupt");
        var values = new long[e.GetArrayLength()];
        int i = 0;
        foreach (var x in e.EnumerateArray())
        {
            if (x.ValueKind != JsonValueKind.Number || !x.TryGetInt64(out long v) || v < 0)
                throw new LinearLensException($"{what}[{i}] is {JsonFile.Describe(x)} where a non-negative integer below 2⁶³ was expected; the file is corrupt");
            values[i++] = v;
        }
        return values;
    }

    /// <summary>count·elementSize in bytes, or null when it overflows a long.</summary>
    static long? ByteCount(long[] shape, long elementSize)
    {
        long n = elementSize;
        foreach (long s in shape)
        {
            if (s != 0 && n > long.MaxValue / s) return shape.Contains(0) ? 0 : null;
            n *= s;
        }
        return n;
    }

    public void Dispose()
    {
        _view.SafeMemoryMappedViewHandle.ReleasePointer();
        _view.Dispose();
        _map.Dispose();
    }
}
