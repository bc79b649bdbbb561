using System.IO.Compression;

namespace LibvirtStorage.Images.Qcow2;

/// <summary>Placeholder until the codec with QEMU-compatible window bits lands (helper branch).</summary>
internal static class Qcow2Compression
{
    public static int Decompress(CompressionType type, ReadOnlySpan<byte> source, Span<byte> destination)
    {
        if (type == CompressionType.Zstd)
        {
            using var z = new ZstdSharp.Decompressor();
            return z.Unwrap(source, destination);
        }

        using var input = new MemoryStream(source.ToArray());
        using var inflater = new DeflateStream(input, CompressionMode.Decompress);
        int total = 0;
        while (total < destination.Length)
        {
            int n = inflater.Read(destination[total..]);
            if (n == 0)
            {
                break;
            }

            total += n;
        }

        return total;
    }

    public static int Compress(CompressionType type, ReadOnlySpan<byte> source, Span<byte> destination)
    {
        _ = type;
        _ = source;
        _ = destination;
        return -1;
    }
}
