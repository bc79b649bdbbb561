using System.Globalization;
using System.Text;

namespace LibvirtStorage.Images.Operations;

/// <summary>One run of the virtual disk with the same provenance (an element of <c>qemu-img map --output=json</c>).</summary>
/// <param name="Start">Guest offset of the run.</param>
/// <param name="Length">Bytes in the run.</param>
/// <param name="Depth">Layer that decides the run: 0 is the top image, 1 its backing file, and so on.</param>
/// <param name="Present">That layer allocates the run (false: unallocated everywhere, reads as zeroes).</param>
/// <param name="Zero">The run reads as zeroes.</param>
/// <param name="Data">The run is stored as data in that layer's file.</param>
/// <param name="Offset">Host offset of the data in that layer's file, when it is stored there uncompressed.</param>
/// <param name="Filename">That layer's file, when <paramref name="Offset"/> is known.</param>
public readonly record struct MapExtent(long Start, long Length, int Depth, bool Present, bool Zero, bool Data, long? Offset, string? Filename);

/// <summary>
/// The allocation map of a whole backing chain, as <c>qemu-img map</c> (QEMU 7.2) reports it: extents
/// from the top layer down, each naming the layer (depth) that decides its contents.
/// </summary>
/// <remarks>
/// Adjacent runs are merged exactly when qemu-img merges them: same depth, present, zero and data flags,
/// and either both without a host offset or with host offsets that continue each other in the same file.
/// The JSON rendering is byte for byte what qemu-img 7.2 prints.
/// </remarks>
public static class ImageMap
{
    /// <summary>QEMU probes at most 1 GiB per block-status query.</summary>
    private const long MaxQuery = 1L << 30;

    /// <summary>Computes the map of <paramref name="image"/> and its backing chain.</summary>
    /// <param name="image">The top of the chain, opened with its backing images.</param>
    /// <param name="start">First guest offset to map (qemu-img map --start-offset).</param>
    /// <param name="length">Bytes to map from <paramref name="start"/>, or null for the rest of the image (--max-length).</param>
    public static IReadOnlyList<MapExtent> Get(IBlockImage image, long start = 0, long? length = null)
    {
        ArgumentNullException.ThrowIfNull(image);
        long size = image.VirtualSize;
        long end = length is null ? size : Math.Min(size, start + length.Value);
        ArgumentOutOfRangeException.ThrowIfNegative(start);

        var result = new List<MapExtent>();
        MapExtent current = default;
        bool haveCurrent = false;
        long offset = start;
        while (offset < end)
        {
            ChainExtent e = ChainStatus.Get(image, offset, Math.Min(MaxQuery, end - offset));
            var next = new MapExtent(offset, e.Length, e.Depth, e.Present, e.Zero, e.Data, e.HostOffset, e.HostOffset is null ? null : e.Layer.Path);
            offset += e.Length;
            if (haveCurrent && Mergeable(current, next))
            {
                current = current with { Length = current.Length + next.Length };
                continue;
            }

            if (haveCurrent)
            {
                result.Add(current);
            }

            current = next;
            haveCurrent = true;
        }

        if (haveCurrent)
        {
            result.Add(current);
        }

        return result;
    }

    /// <summary>Renders the map as <c>qemu-img map --output=json</c> does (QEMU 7.2), with the final newline.</summary>
    public static string ToJson(IReadOnlyList<MapExtent> extents)
    {
        ArgumentNullException.ThrowIfNull(extents);
        var sb = new StringBuilder(64 + (extents.Count * 110));
        sb.Append('[');
        for (int i = 0; i < extents.Count; i++)
        {
            MapExtent e = extents[i];
            sb.Append(CultureInfo.InvariantCulture, $"{{ \"start\": {e.Start}, \"length\": {e.Length}, \"depth\": {e.Depth}, ");
            sb.Append("\"present\": ").Append(e.Present ? "true" : "false");
            sb.Append(", \"zero\": ").Append(e.Zero ? "true" : "false");
            sb.Append(", \"data\": ").Append(e.Data ? "true" : "false");
            if (e.Offset is long off)
            {
                sb.Append(CultureInfo.InvariantCulture, $", \"offset\": {off}");
            }

            sb.Append('}');
            if (i + 1 < extents.Count)
            {
                sb.Append(",\n");
            }
        }

        sb.Append("]\n");
        return sb.ToString();
    }

    /// <summary>
    /// Renders the map as <c>qemu-img map</c>'s human format: only runs stored as data, with their host
    /// offset and file. Throws when a data run has no host offset (compressed clusters), as qemu-img does.
    /// </summary>
    public static string ToHuman(IReadOnlyList<MapExtent> extents)
    {
        ArgumentNullException.ThrowIfNull(extents);
        var sb = new StringBuilder();
        sb.Append(CultureInfo.InvariantCulture, $"{"Offset",-16}{"Length",-16}{"Mapped to",-16}File\n");

        // Runs were merged as for JSON; the human format lists only the data runs that do not read as zero.
        foreach (MapExtent e in extents)
        {
            if (e.Data && e.Offset is null)
            {
                throw new ImageException(ErrorKind.UnsupportedFeature, "File contains external, encrypted or compressed clusters.", e.Filename);
            }

            if (e.Data && !e.Zero)
            {
                sb.Append(Hex(e.Start)).Append(Hex(e.Length)).Append(Hex(e.Offset!.Value)).Append(e.Filename).Append('\n');
            }
        }

        return sb.ToString();
    }

    private static string Hex(long value) =>
        (value == 0 ? "0" : "0x" + value.ToString("x", CultureInfo.InvariantCulture)).PadRight(16);

    private static bool Mergeable(in MapExtent current, in MapExtent next)
    {
        if (current.Length == 0)
        {
            return false;
        }

        if (current.Zero != next.Zero || current.Data != next.Data || current.Depth != next.Depth
            || current.Present != next.Present || (current.Offset is null) != (next.Offset is null))
        {
            return false;
        }

        if (current.Offset is long off)
        {
            return string.Equals(current.Filename, next.Filename, StringComparison.Ordinal) && off + current.Length == next.Offset;
        }

        return true;
    }
}
