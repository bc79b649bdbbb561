using System.ComponentModel;
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace LibvirtStorage.Vhost.Memory;

/// <summary>
/// The shared inflight-tracking buffer of VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD (vhost-user.rst "Inflight I/O
/// tracking", split virtqueues): one <c>QueueRegionSplit</c> per queue, back to back. The front-end keeps the fd
/// across a back-end restart, so what a dead back-end wrote here tells the next one which heads to resubmit.
/// </summary>
/// <remarks>
/// Layout (native endian, as QEMU and libvhost-user lay it out): per queue a 16-byte header {u64 features, u16
/// version, u16 desc_num, u16 last_batch_head, u16 used_idx} followed by desc_num 16-byte entries {u8 inflight, u8
/// padding[5], u16 next, u64 counter}. A queue's region is <see cref="QueueStride"/> bytes: libvhost-user's
/// <c>ALIGN_UP(16 · n + 2, 64)</c>, kept identical so an area sized by either back-end fits the other (the slack
/// always holds the 16-byte header). The front-end can write the area at any time: every value read from it is
/// copied once and validated by the caller; offsets come only from the validated queue count and size.
/// </remarks>
internal sealed class InflightArea : IDisposable
{
    /// <summary>The version a back-end writes into a fresh (all-zero) queue region.</summary>
    public const ushort CurrentVersion = 1;

    internal const int HeaderSize = 16;
    internal const int EntrySize = 16;
    private const ulong Alignment = 64;

    private readonly MmapRegion _mapping;

    private InflightArea(MmapRegion mapping, ushort queueCount, ushort queueSize)
    {
        _mapping = mapping;
        QueueCount = queueCount;
        QueueSize = queueSize;
    }

    /// <summary>Queues described (num_queues of SET_INFLIGHT_FD).</summary>
    public ushort QueueCount { get; }

    /// <summary>Entries per queue (queue_size of SET_INFLIGHT_FD): the largest vring size this area can track.</summary>
    public ushort QueueSize { get; }

    /// <summary>Bytes of one queue's region.</summary>
    public static ulong QueueStride(ushort queueSize) => (((ulong)EntrySize * queueSize) + 2 + Alignment - 1) & ~(Alignment - 1);

    /// <summary>Bytes of an area for <paramref name="queueCount"/> queues of <paramref name="queueSize"/> entries.</summary>
    public static ulong AreaSize(ushort queueCount, ushort queueSize) => queueCount * QueueStride(queueSize);

    /// <summary>
    /// GET_INFLIGHT_FD: a new memfd of <see cref="AreaSize"/> bytes (zero, so every queue region reads as
    /// "uninitialised"), sealed against growing, shrinking and further sealing so that no one can truncate it under
    /// a mapping (SIGBUS). Throws <see cref="IOException"/> when the kernel refuses.
    /// </summary>
    public static SafeFileHandle CreateFile(ushort queueCount, ushort queueSize)
    {
        int raw = LibC.MemfdCreate("lvstor-vhost-inflight", LibC.MfdCloexec | LibC.MfdAllowSealing);
        if (raw < 0)
            throw Failure("memfd_create");
        var fd = new SafeFileHandle(raw, ownsHandle: true);
        try
        {
            RandomAccess.SetLength(fd, (long)AreaSize(queueCount, queueSize));
            if (LibC.Fcntl(raw, LibC.FAddSeals, LibC.SealGrow | LibC.SealShrink | LibC.SealSeal) != 0)
                throw Failure("F_ADD_SEALS");
            return fd;
        }
        catch
        {
            fd.Dispose();
            throw;
        }
    }

    /// <summary>
    /// SET_INFLIGHT_FD: maps <paramref name="mmapSize"/> bytes at <paramref name="mmapOffset"/> of
    /// <paramref name="fd"/> after checking that the range lies inside the file, that the file cannot shrink (it
    /// must carry F_SEAL_SHRINK, as the areas GET_INFLIGHT_FD hands out do), and that it holds
    /// <paramref name="queueCount"/> regions of <paramref name="queueSize"/> entries. Returns null or why not.
    /// </summary>
    public static string? TryMap(SafeFileHandle fd, ulong mmapSize, ulong mmapOffset, ushort queueCount, ushort queueSize, out InflightArea? area)
    {
        area = null;
        if (queueCount == 0 || queueSize == 0 || queueSize > 32768)
            return $"{queueCount} queues of {queueSize} entries: need at least one queue of 1..32768 entries";
        if (mmapOffset % 8 != 0)
            return $"offset {mmapOffset} is not 8-byte aligned (the counters are 64-bit fields)";
        ulong needed = AreaSize(queueCount, queueSize);
        if (mmapSize < needed)
            return $"{mmapSize} bytes cannot hold {queueCount} queues of {queueSize} entries ({needed} bytes)";
        try
        {
            long length = RandomAccess.GetLength(fd);
            if (length < 0 || mmapOffset > (ulong)length || mmapSize > (ulong)length - mmapOffset)
                return $"{mmapSize} bytes at offset {mmapOffset} are outside the {length}-byte file";
            if (!MemorySeals.IsShrinkSealed(fd, out string? why))
                return $"the inflight area is not sealed against shrinking: {why}; truncating it would crash the back-end";
            area = new InflightArea(MmapRegion.Map(fd, mmapOffset, needed), queueCount, queueSize);
            return null;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
        {
            return $"cannot map the inflight area: {ex.Message}";
        }
    }

    /// <summary>Test hook: wraps an already-mapped range (the caller guarantees its size).</summary>
    internal static InflightArea FromMapping(MmapRegion mapping, ushort queueCount, ushort queueSize)
    {
        if (mapping.Size < AreaSize(queueCount, queueSize))
            throw new ArgumentOutOfRangeException(nameof(mapping), "the mapping is smaller than the area");
        return new InflightArea(mapping, queueCount, queueSize);
    }

    /// <summary>
    /// The region of queue <paramref name="index"/> (&lt; <see cref="QueueCount"/>). It stays valid until this
    /// area is disposed; the dispatcher replaces or disposes an area only while every queue is stopped.
    /// </summary>
    public InflightQueue Queue(int index)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual((uint)index, (uint)QueueCount, nameof(index));
        return new InflightQueue(_mapping.Pointer + (nint)((ulong)index * QueueStride(QueueSize)), QueueSize);
    }

    /// <inheritdoc/>
    public void Dispose() => _mapping.Dispose();

    private static IOException Failure(string call)
    {
        int errno = Marshal.GetLastPInvokeError();
        return new IOException($"{call} failed: {new Win32Exception(errno).Message}", errno);
    }
}
