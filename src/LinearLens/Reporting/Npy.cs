using System.Numerics;
using System.Text;

namespace LinearLens.Reporting;

/// <summary>NumPy .npy files (format version 1.0, little-endian float64, C order) for numpy.load.</summary>
public static class Npy
{
    public static void Write<T>(string path, T[] data, params long[] shape) where T : IFloatingPointIeee754<T>
    {
        long count = shape.Aggregate(1L, (a, b) => a * b);
        if (count != data.Length) throw new ArgumentException($"{data.Length} values for shape ({string.Join(", ", shape)})");
        string dims = shape.Length == 1 ? $"{shape[0]}," : string.Join(", ", shape);
        string dict = $"{{'descr': '<f8', 'fortran_order': False, 'shape': ({dims}), }}";
        int unpadded = 10 + dict.Length + 1;
        string header = dict + new string(' ', (64 - unpadded % 64) % 64) + "\n";
        var values = data;
        AtomicFile.Write(path, fs =>
        {
            fs.Write([0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', 1, 0]);
            fs.Write(BitConverter.GetBytes((ushort)header.Length));
            fs.Write(Encoding.ASCII.GetBytes(header));
            var buf = new byte[8 * 8192];
            for (int i = 0; i < values.Length; i += 8192)
            {
                int m = Math.Min(8192, values.Length - i);
                for (int j = 0; j < m; j++) BitConverter.TryWriteBytes(buf.AsSpan(8 * j), double.CreateChecked(values[i + j]));
                fs.Write(buf, 0, 8 * m);
            }
        });
    }

    /// <summary>Reads a float64 .npy written by <see cref="Write{T}"/> (or numpy): its shape and values.</summary>
    public static (long[] shape, double[] data) Read(string path)
    {
        var bytes = File.ReadAllBytes(path);
        if (bytes.Length < 10 || bytes[0] != 0x93 || Encoding.ASCII.GetString(bytes, 1, 5) != "NUMPY")
            throw new LinearLensException($"{path} is not a .npy file");
        int headerLen = BitConverter.ToUInt16(bytes, 8);
        string header = Encoding.ASCII.GetString(bytes, 10, headerLen);
        if (!header.Contains("'<f8'")) throw new LinearLensException($"{path}: only little-endian float64 .npy files are read");
        int a = header.IndexOf("'shape': (") + 10, b = header.IndexOf(')', a);
        var shape = header[a..b].Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(long.Parse).ToArray();
        var data = new double[(bytes.Length - 10 - headerLen) / 8];
        Buffer.BlockCopy(bytes, 10 + headerLen, data, 0, data.Length * 8);
        return (shape, data);
    }
}
