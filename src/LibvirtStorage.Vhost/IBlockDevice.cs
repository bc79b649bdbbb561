namespace LibvirtStorage.Vhost;

/// <summary>
/// The block device a virtio-blk export serves: the seam between this assembly and the image engine (the service
/// adapts the engine's <c>IBlockImage</c> to it; this project never references the Images project).
/// </summary>
/// <remarks>
/// <para>
/// Called synchronously from one queue worker at a time per queue; with several queues, from several workers at
/// once, so an implementation must be thread-safe across calls. Spans point straight into guest memory (zero copy)
/// and are valid only for the duration of the call: never keep them.
/// </para>
/// <para>
/// Offsets and lengths are in bytes. The handler checks every request against <see cref="Capacity"/> and
/// <see cref="LogicalBlockSize"/> before calling, but one request may arrive as several calls with smaller, not
/// block-aligned pieces (a guest buffer can cross a memory-region boundary anywhere), so <see cref="Read"/> and
/// <see cref="Write"/> must accept any in-range offset and length. A failure is an exception of any type: the
/// handler catches it and completes the request with VIRTIO_BLK_S_IOERR.
/// </para>
/// </remarks>
public interface IBlockDevice
{
    /// <summary>Size in bytes; may grow while the export runs (live resize). Only whole 512-byte sectors are exposed.</summary>
    long Capacity { get; }

    /// <summary>Logical block size in bytes: a power of two, at least 512. Requests must be aligned to it.</summary>
    int LogicalBlockSize { get; }

    /// <summary>Whether the device refuses writes (the export offers VIRTIO_BLK_F_RO).</summary>
    bool IsReadOnly { get; }

    /// <summary>
    /// The device ID string returned by VIRTIO_BLK_T_GET_ID: ASCII, at most 20 characters (longer is cut at 20,
    /// other characters are sent as '?').
    /// </summary>
    string Serial { get; }

    /// <summary>Reads <paramref name="destination"/>.Length bytes at <paramref name="offset"/>.</summary>
    /// <param name="offset">Byte offset on the device.</param>
    /// <param name="destination">Guest memory to fill.</param>
    void Read(long offset, Span<byte> destination);

    /// <summary>Writes <paramref name="source"/> at <paramref name="offset"/>.</summary>
    /// <param name="offset">Byte offset on the device.</param>
    /// <param name="source">Guest memory to write.</param>
    void Write(long offset, ReadOnlySpan<byte> source);

    /// <summary>Makes every completed write durable (VIRTIO_BLK_T_FLUSH).</summary>
    void Flush();

    /// <summary>Deallocates a range if it can; later reads of it may return anything (VIRTIO_BLK_T_DISCARD).</summary>
    /// <param name="offset">Byte offset, block-aligned.</param>
    /// <param name="length">Length in bytes, a multiple of the block size.</param>
    void Discard(long offset, long length);

    /// <summary>Makes a range read as zeroes (VIRTIO_BLK_T_WRITE_ZEROES), deallocating it if allowed and possible.</summary>
    /// <param name="offset">Byte offset, block-aligned.</param>
    /// <param name="length">Length in bytes, a multiple of the block size.</param>
    /// <param name="unmap">Whether the guest allows deallocation (VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP).</param>
    void WriteZeroes(long offset, long length, bool unmap);
}
