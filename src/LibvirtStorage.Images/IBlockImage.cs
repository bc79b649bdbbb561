namespace LibvirtStorage.Images;

/// <summary>
/// An open disk image: the seam the vhost-user back-end and the service use. Reads and writes take
/// caller memory (which may be guest memory) and copy nothing through managed buffers on the fast path.
/// </summary>
/// <remarks>
/// Implementations are safe for concurrent use by many threads: any number of reads, writes, discards
/// and flushes may be in flight at once. The data-plane calls are synchronous (the vhost worker threads
/// block in <c>pread</c>/<c>pwrite</c>); <see cref="ReadAsync"/> and <see cref="WriteAsync"/> exist for
/// control-plane callers and run the same code.
/// </remarks>
public interface IBlockImage : IDisposable
{
    /// <summary>The image file.</summary>
    string Path { get; }

    /// <summary>The on-disk format.</summary>
    ImageFormat Format { get; }

    /// <summary>Size of the virtual disk in bytes.</summary>
    long VirtualSize { get; }

    /// <summary>True when the image was opened read-only (or was found corrupt).</summary>
    bool IsReadOnly { get; }

    /// <summary>Allocation granularity in bytes (the qcow2 cluster size; 4 KiB for raw).</summary>
    int ClusterSize { get; }

    /// <summary>The backing image, or null at the base of a chain.</summary>
    IBlockImage? Backing { get; }

    /// <summary>Reads <paramref name="destination"/>.Length bytes at <paramref name="offset"/>, resolving the backing chain.</summary>
    void Read(long offset, Span<byte> destination);

    /// <summary>Writes <paramref name="source"/> at <paramref name="offset"/>, allocating and copying on write as needed.</summary>
    void Write(long offset, ReadOnlySpan<byte> source);

    /// <summary>Makes the range read as zeroes; with <paramref name="unmap"/> the space may be released.</summary>
    void WriteZeroes(long offset, long length, bool unmap);

    /// <summary>
    /// Releases the space behind the range. Afterwards the range reads as zeroes or as the backing
    /// image's data (like a SCSI UNMAP: contents are unspecified to the guest).
    /// </summary>
    void Discard(long offset, long length);

    /// <summary>Makes every completed write durable: data, then metadata, in crash-safe order.</summary>
    void Flush();

    /// <summary>Changes the virtual size. Shrinking is refused when the tail holds data.</summary>
    void Resize(long newSize);

    /// <summary>
    /// Describes this layer alone (not its backing) from <paramref name="offset"/>: how many bytes share
    /// one status, capped at <paramref name="length"/>.
    /// </summary>
    BlockStatus GetBlockStatus(long offset, long length);

    /// <summary>Asynchronous form of <see cref="Read"/> for control-plane callers.</summary>
    ValueTask ReadAsync(long offset, Memory<byte> destination, CancellationToken cancellationToken = default)
    {
        cancellationToken.ThrowIfCancellationRequested();
        Read(offset, destination.Span);
        return ValueTask.CompletedTask;
    }

    /// <summary>Asynchronous form of <see cref="Write"/> for control-plane callers.</summary>
    ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> source, CancellationToken cancellationToken = default)
    {
        cancellationToken.ThrowIfCancellationRequested();
        Write(offset, source.Span);
        return ValueTask.CompletedTask;
    }
}
