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

    public long Count => Shape.Aggregate(1L, (a, b) => a * b);

    /// <summary>The tensor as a row-major matrix: [rows, cols] for 2-D, [1, n] for 1-D.</summary>
    public MatrixView AsMatrix() => Shape.Length switch
    {
        1 => new MatrixView(Data, Type, 1, checked((int)Shape[0])),
        2 => new MatrixView(Data, Type, checked((int)Shape[0]), checked((int)Shape[1])),
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

    static List<(string, DType, long[], long)> ParseHeader(string path, byte[] header, long dataLen)
    {
        JsonDocument doc;
        try { doc = JsonDocument.Parse(header); }
        catch (JsonException e) { throw new LinearLensException($"{path}: header is not valid JSON ({e.Message}); the file is corrupt, fetch it again"); }
        var result = new List<(string, DType, long[], long)>();
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw new LinearLensException($"{path}: header is not a JSON object; the file is corrupt");
            foreach (var prop in doc.RootElement.EnumerateObject())
            {
                if (prop.Name == "__metadata__") continue;
                var e = prop.Value;
                string where = $"{path}: tensor '{prop.Name}'";
                if (e.ValueKind != JsonValueKind.Object || !e.TryGetProperty("dtype", out var dt) || !e.TryGetProperty("shape", out var sh) || !e.TryGetProperty("data_offsets", out var off))
                    throw new LinearLensException($"{where} lacks dtype, shape or data_offsets; the file is corrupt");
                DType type = dt.GetString() switch
                {
                    "F64" => DType.F64, "F32" => DType.F32, "BF16" => DType.BF16, "F16" => DType.F16,
                    var s => throw new LinearLensException($"{where} has dtype {s}; LinearLens reads F64, F32, BF16 and F16 (convert the checkpoint)"),
                };
                var shape = sh.EnumerateArray().Select(x => x.GetInt64()).ToArray();
                if (shape.Any(s => s < 0)) throw new LinearLensException($"{where} has a negative dimension");
                var offs = off.EnumerateArray().Select(x => x.GetInt64()).ToArray();
                if (offs.Length != 2 || offs[0] < 0 || offs[1] < offs[0] || offs[1] > dataLen)
                    throw new LinearLensException($"{where}: data offsets [{string.Join(", ", offs)}] lie outside the {dataLen}-byte data section (truncated file? fetch it again)");
                long count = shape.Aggregate(1L, (a, b) => checked(a * b));
                if (offs[1] - offs[0] != count * type.Size())
                    throw new LinearLensException($"{where}: {offs[1] - offs[0]} bytes stored for shape [{string.Join(", ", shape)}] of {type.Name()} ({count * type.Size()} expected); the file is corrupt");
                result.Add((prop.Name, type, shape, offs[0]));
            }
        }
        return result;
    }

    public void Dispose()
    {
        _view.SafeMemoryMappedViewHandle.ReleasePointer();
        _view.Dispose();
        _map.Dispose();
    }
}
