using System.Buffers.Binary;
using System.Text;
using LibvirtStorage.Images.Qcow2;

namespace LibvirtStorage.Images.Operations;

/// <summary>One internal snapshot of a qcow2 image, as <c>qemu-img info</c> lists it.</summary>
/// <param name="Id">The snapshot's unique id string.</param>
/// <param name="Name">Its name (tag).</param>
/// <param name="DateSec">Creation time, seconds since the epoch.</param>
/// <param name="DateNsec">Nanoseconds part of the creation time.</param>
/// <param name="VmClockNsec">Guest clock at the snapshot, in nanoseconds.</param>
/// <param name="VmStateSize">Bytes of saved VM state.</param>
/// <param name="Icount">Guest instruction count, when recorded.</param>
public sealed record SnapshotInfo(string Id, string Name, long DateSec, int DateNsec, long VmClockNsec, long VmStateSize, long? Icount);

/// <summary>Reads the snapshot table (qcow2.txt "Snapshot table") for <see cref="ImageInfo"/>; read-only, bounded.</summary>
internal static class SnapshotTable
{
    private const int EntryHeader = 40;

    /// <summary>QEMU's QCOW_MAX_SNAPSHOT_EXTRA_DATA.</summary>
    private const int MaxExtraData = 1024;

    public static IReadOnlyList<SnapshotInfo> Read(Qcow2Image image)
    {
        Qcow2Header header = image.Header;
        int count = (int)header.NbSnapshots;
        if (count == 0)
        {
            return [];
        }

        using var file = File.OpenHandle(image.Path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        long length = RandomAccess.GetLength(file);
        long offset = (long)Math.Min(header.SnapshotsOffset, long.MaxValue);
        var list = new List<SnapshotInfo>(count);
        byte[] fixedPart = new byte[EntryHeader];
        for (int i = 0; i < count; i++)
        {
            ReadExactly(file, fixedPart, offset, length, image.Path);
            ReadOnlySpan<byte> e = fixedPart;
            int idSize = BinaryPrimitives.ReadUInt16BigEndian(e[12..]);
            int nameSize = BinaryPrimitives.ReadUInt16BigEndian(e[14..]);
            int extraSize = (int)Math.Min(BinaryPrimitives.ReadUInt32BigEndian(e[36..]), int.MaxValue);
            if (extraSize > MaxExtraData)
            {
                throw new ImageException(ErrorKind.InvalidFormat, $"snapshot {i} has {extraSize} bytes of extra data (at most {MaxExtraData})", image.Path);
            }

            byte[] rest = new byte[extraSize + idSize + nameSize];
            ReadExactly(file, rest, offset + EntryHeader, length, image.Path);
            long vmState = BinaryPrimitives.ReadUInt32BigEndian(e[32..]);
            long? icount = null;
            if (extraSize >= 8)
            {
                vmState = (long)BinaryPrimitives.ReadUInt64BigEndian(rest);
            }

            if (extraSize >= 24)
            {
                ulong raw = BinaryPrimitives.ReadUInt64BigEndian(rest.AsSpan(16));
                icount = raw == ulong.MaxValue ? null : (long)raw;
            }

            list.Add(new SnapshotInfo(
                Encoding.UTF8.GetString(rest, extraSize, idSize),
                Encoding.UTF8.GetString(rest, extraSize + idSize, nameSize),
                BinaryPrimitives.ReadUInt32BigEndian(e[16..]),
                (int)BinaryPrimitives.ReadUInt32BigEndian(e[20..]),
                (long)BinaryPrimitives.ReadUInt64BigEndian(e[24..]),
                vmState,
                icount));
            offset += (EntryHeader + rest.Length + 7) / 8 * 8;
        }

        return list;
    }

    private static void ReadExactly(Microsoft.Win32.SafeHandles.SafeFileHandle file, byte[] buffer, long offset, long length, string path)
    {
        if (offset < 0 || offset > length - buffer.Length)
        {
            throw new ImageException(ErrorKind.InvalidFormat, $"snapshot table entry at offset {offset} is outside the file", path, offset);
        }

        int done = 0;
        while (done < buffer.Length)
        {
            int n = RandomAccess.Read(file, buffer.AsSpan(done), offset + done);
            if (n == 0)
            {
                throw new ImageException(ErrorKind.InvalidFormat, $"snapshot table entry at offset {offset} is truncated", path, offset);
            }

            done += n;
        }
    }
}
