using System.Buffers.Binary;
using System.Text;
using LibvirtStorage.Images.Qcow2;

namespace LibvirtStorage.Images.Operations;

/// <summary>One persistent dirty bitmap of a qcow2 image, as <c>qemu-img info</c> lists it.</summary>
/// <param name="Name">The bitmap's name.</param>
/// <param name="Granularity">Bytes of guest disk per bit.</param>
/// <param name="Flags">"in-use" and/or "auto", in that order.</param>
public sealed record BitmapInfo(string Name, long Granularity, IReadOnlyList<string> Flags);

/// <summary>Reads the bitmap directory (qcow2.txt "Bitmaps extension") for <see cref="ImageInfo"/>; read-only, bounded.</summary>
internal static class BitmapDirectory
{
    private const int EntryHeader = 24;

    /// <summary>QEMU's QCOW2_MAX_BITMAP_DIRECTORY_SIZE.</summary>
    private const long MaxDirectoryBytes = 64L << 20;

    public static IReadOnlyList<BitmapInfo>? Read(Qcow2Image image)
    {
        Qcow2Header header = image.Header;
        if ((header.AutoclearFeatures & Qcow2Header.AutoclearBitmaps) == 0)
        {
            return null; // QEMU ignores a bitmaps extension whose autoclear bit was cleared
        }

        byte[]? ext = null;
        foreach (Qcow2HeaderExtension e in header.Extensions)
        {
            if (e.Type == Qcow2Header.ExtBitmaps && e.Data.Length >= 24)
            {
                ext = e.Data;
            }
        }

        if (ext is null)
        {
            return null;
        }

        uint count = BinaryPrimitives.ReadUInt32BigEndian(ext);
        ulong size = BinaryPrimitives.ReadUInt64BigEndian(ext.AsSpan(8));
        ulong offset = BinaryPrimitives.ReadUInt64BigEndian(ext.AsSpan(16));
        using var file = File.OpenHandle(image.Path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        long length = RandomAccess.GetLength(file);
        if (size > MaxDirectoryBytes || offset > (ulong)length || size > (ulong)length - offset)
        {
            throw new ImageException(ErrorKind.InvalidFormat, $"bitmap directory ({size} bytes at {offset}) is outside the file or too large", image.Path);
        }

        byte[] dir = new byte[size];
        if (RandomAccess.Read(file, dir, (long)offset) != dir.Length)
        {
            throw new ImageException(ErrorKind.InvalidFormat, "bitmap directory is truncated", image.Path);
        }

        var list = new List<BitmapInfo>((int)Math.Min(count, 65535));
        int at = 0;
        for (uint i = 0; i < count; i++)
        {
            if (at > dir.Length - EntryHeader)
            {
                throw new ImageException(ErrorKind.InvalidFormat, $"bitmap directory entry {i} is outside the directory", image.Path);
            }

            ReadOnlySpan<byte> e = dir.AsSpan(at);
            uint flags = BinaryPrimitives.ReadUInt32BigEndian(e[12..]);
            int granularityBits = e[17];
            int nameSize = BinaryPrimitives.ReadUInt16BigEndian(e[18..]);
            long extraSize = BinaryPrimitives.ReadUInt32BigEndian(e[20..]);
            long end = EntryHeader + extraSize + nameSize;
            if (granularityBits > 63 || end > e.Length)
            {
                throw new ImageException(ErrorKind.InvalidFormat, $"bitmap directory entry {i} is malformed", image.Path);
            }

            var flagNames = new List<string>(2);
            if ((flags & 1) != 0)
            {
                flagNames.Add("in-use");
            }

            if ((flags & 2) != 0)
            {
                flagNames.Add("auto");
            }

            string name = Encoding.UTF8.GetString(e.Slice((int)(EntryHeader + extraSize), nameSize));
            list.Add(new BitmapInfo(name, 1L << granularityBits, flagNames));
            at += (int)((end + 7) / 8 * 8);
        }

        return list;
    }
}
