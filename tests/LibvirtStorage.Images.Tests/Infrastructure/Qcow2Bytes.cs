using System.Buffers.Binary;
using System.Security.Cryptography;

namespace LibvirtStorage.Images.Tests.Infrastructure;

/// <summary>
/// Reads and patches raw qcow2 fields in a file (big-endian, qcow2.txt offsets), to build corrupt and
/// hostile images out of valid ones made by qemu-img.
/// </summary>
internal static class Qcow2Bytes
{
    public const int OffBackingFileOffset = 8;
    public const int OffBackingFileSize = 16;
    public const int OffClusterBits = 20;
    public const int OffSize = 24;
    public const int OffCryptMethod = 32;
    public const int OffL1Size = 36;
    public const int OffL1TableOffset = 40;
    public const int OffRefcountTableOffset = 48;
    public const int OffRefcountTableClusters = 56;
    public const int OffNbSnapshots = 60;
    public const int OffSnapshotsOffset = 64;
    public const int OffIncompatible = 72;
    public const int OffRefcountOrder = 96;
    public const int OffHeaderLength = 100;

    public const ulong EntryCopied = 1UL << 63;
    public const ulong EntryCompressed = 1UL << 62;
    public const ulong OffsetMask = 0x00ff_ffff_ffff_fe00UL;

    public static ulong U64(string path, long offset)
    {
        Span<byte> b = stackalloc byte[8];
        ReadAt(path, offset, b);
        return BinaryPrimitives.ReadUInt64BigEndian(b);
    }

    public static uint U32(string path, long offset)
    {
        Span<byte> b = stackalloc byte[4];
        ReadAt(path, offset, b);
        return BinaryPrimitives.ReadUInt32BigEndian(b);
    }

    public static void SetU64(string path, long offset, ulong value)
    {
        Span<byte> b = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64BigEndian(b, value);
        WriteAt(path, offset, b);
    }

    public static void SetU32(string path, long offset, uint value)
    {
        Span<byte> b = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(b, value);
        WriteAt(path, offset, b);
    }

    public static int ClusterSize(string path) => 1 << (int)U32(path, OffClusterBits);

    public static long L1Offset(string path) => (long)U64(path, OffL1TableOffset);

    public static long RefcountTableOffset(string path) => (long)U64(path, OffRefcountTableOffset);

    /// <summary>Offset of the L2 table that L1 entry <paramref name="index"/> points to (0 if none).</summary>
    public static long L2Offset(string path, int index = 0) => (long)(U64(path, L1Offset(path) + (8L * index)) & OffsetMask);

    /// <summary>File offset of the L2 entry for guest cluster <paramref name="index"/> of the first L2 table.</summary>
    public static long L2EntryOffset(string path, int index, bool extendedL2 = false) =>
        L2Offset(path) + ((extendedL2 ? 16L : 8L) * index);

    public static void ReadAt(string path, long offset, Span<byte> destination)
    {
        using var h = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        destination.Clear();
        _ = RandomAccess.Read(h, destination, offset);
    }

    public static void WriteAt(string path, long offset, ReadOnlySpan<byte> source)
    {
        using var h = File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite);
        RandomAccess.Write(h, source, offset);
    }

    public static void Truncate(string path, long length)
    {
        using var f = new FileStream(path, FileMode.Open, FileAccess.Write);
        f.SetLength(length);
    }

    public static byte[] Hash(string path) => SHA256.HashData(File.ReadAllBytes(path));

    /// <summary>
    /// The file's bytes with the header's corrupt bit (incompatible feature bit 1) cleared: the one
    /// change an engine may make to an image it found corrupt (QEMU's qcow2_signal_corruption).
    /// </summary>
    public static byte[] HashIgnoringCorruptBit(string path)
    {
        byte[] all = File.ReadAllBytes(path);
        if (all.Length > OffIncompatible + 8 && BinaryPrimitives.ReadUInt32BigEndian(all.AsSpan(4)) == 3)
        {
            all[OffIncompatible + 7] &= unchecked((byte)~0x02);
        }

        return SHA256.HashData(all);
    }
}
