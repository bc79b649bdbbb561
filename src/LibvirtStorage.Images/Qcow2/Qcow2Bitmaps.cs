using System.Buffers.Binary;
using System.Text;
using LibvirtStorage.Images.Native;

namespace LibvirtStorage.Images.Qcow2;

/// <summary>One entry of the bitmap directory (qcow2.txt "Bitmap directory").</summary>
/// <param name="Position">Where the entry starts inside the directory.</param>
/// <param name="TableOffset">The bitmap table's offset in the file.</param>
/// <param name="TableSize">Entries in the bitmap table.</param>
/// <param name="Flags">Bit 0 in_use, bit 1 auto.</param>
/// <param name="GranularityBits">log2 of the guest bytes one bit covers.</param>
/// <param name="Name">The bitmap's name.</param>
internal readonly record struct Qcow2BitmapEntry(int Position, ulong TableOffset, uint TableSize, uint Flags, int GranularityBits, string Name)
{
    public const uint InUse = 1;
    public const uint Auto = 2;
}

/// <summary>
/// The persistent-bitmap directory: located through the bitmaps header extension, read whole (bounded
/// by QEMU's 64 MiB limit) and parsed with every length checked. The engine does not maintain bitmaps;
/// it keeps them referenced (check), flags them in_use when it writes the image, and lists them (info).
/// </summary>
internal sealed class Qcow2Bitmaps
{
    private const int EntryHeader = 24;

    /// <summary>QEMU's QCOW2_MAX_BITMAP_DIRECTORY_SIZE.</summary>
    private const long MaxDirectoryBytes = 64L << 20;

    private Qcow2Bitmaps(long offset, byte[] directory, IReadOnlyList<Qcow2BitmapEntry> entries)
    {
        Offset = offset;
        Directory = directory;
        Entries = entries;
    }

    /// <summary>Where the directory lives in the file.</summary>
    public long Offset { get; }

    /// <summary>The directory as read.</summary>
    public byte[] Directory { get; }

    public IReadOnlyList<Qcow2BitmapEntry> Entries { get; }

    /// <summary>
    /// Reads the directory, or returns null when the image has none (no extension, or its autoclear bit is
    /// clear, in which case QEMU ignores it too). Throws <see cref="ImageException"/> (InvalidFormat) when
    /// the directory is outside the file or malformed.
    /// </summary>
    public static Qcow2Bitmaps? Read(ImageFile file, Qcow2Header header)
    {
        if ((header.AutoclearFeatures & Qcow2Header.AutoclearBitmaps) == 0)
        {
            return null;
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
        long length = file.Length;
        if (size == 0 || size > MaxDirectoryBytes || offset == 0 || offset > (ulong)length || size > (ulong)length - offset)
        {
            throw new ImageException(ErrorKind.InvalidFormat, $"bitmap directory ({size} bytes at {offset}) is outside the file or too large", file.Path);
        }

        var directory = new byte[size];
        file.Read(directory, (long)offset);
        var entries = new List<Qcow2BitmapEntry>((int)Math.Min(count, 65535));
        int at = 0;
        for (uint i = 0; i < count; i++)
        {
            if (at > directory.Length - EntryHeader)
            {
                throw new ImageException(ErrorKind.InvalidFormat, $"bitmap directory entry {i} is outside the directory", file.Path);
            }

            ReadOnlySpan<byte> e = directory.AsSpan(at);
            int granularityBits = e[17];
            int nameSize = BinaryPrimitives.ReadUInt16BigEndian(e[18..]);
            long extraSize = BinaryPrimitives.ReadUInt32BigEndian(e[20..]);
            long end = EntryHeader + extraSize + nameSize;
            if (granularityBits > 63 || end > e.Length)
            {
                throw new ImageException(ErrorKind.InvalidFormat, $"bitmap directory entry {i} is malformed", file.Path);
            }

            entries.Add(new Qcow2BitmapEntry(
                at,
                BinaryPrimitives.ReadUInt64BigEndian(e),
                BinaryPrimitives.ReadUInt32BigEndian(e[8..]),
                BinaryPrimitives.ReadUInt32BigEndian(e[12..]),
                granularityBits,
                Encoding.UTF8.GetString(e.Slice((int)(EntryHeader + extraSize), nameSize))));
            at += (int)((end + 7) / 8 * 8);
        }

        return new Qcow2Bitmaps((long)offset, directory, entries);
    }

    /// <summary>Sets in_use on every bitmap and writes the directory back in place (then syncs).</summary>
    public void MarkAllInUse(ImageFile file)
    {
        foreach (Qcow2BitmapEntry e in Entries)
        {
            BinaryPrimitives.WriteUInt32BigEndian(Directory.AsSpan(e.Position + 12), e.Flags | Qcow2BitmapEntry.InUse);
        }

        file.Write(Directory, Offset);
        file.Sync();
    }
}
