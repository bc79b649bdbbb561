namespace LibvirtStorage.Images;

/// <summary>How to open an image and its backing chain.</summary>
public sealed record ImageOpenOptions
{
    /// <summary>Open for reading only. Backing images are always opened read-only.</summary>
    public bool ReadOnly { get; init; }

    /// <summary>The format, or null to probe it from the file's contents.</summary>
    public ImageFormat? Format { get; init; }

    /// <summary>Use O_DIRECT (QEMU's cache=none) for data and metadata I/O.</summary>
    public bool Direct { get; init; }

    /// <summary>Open the backing chain (false: reads of unallocated ranges return zeroes).</summary>
    public bool OpenBacking { get; init; } = true;

    /// <summary>Take QEMU-compatible OFD locks on the file so QEMU and lvstord exclude each other.</summary>
    public bool Lock { get; init; } = true;

    /// <summary>
    /// Bytes of L2 tables to cache, or null for enough to cover the whole image up to 64 GiB at 64 KiB
    /// clusters (8 MiB), or the whole image if it is smaller.
    /// </summary>
    public long? L2CacheBytes { get; init; }

    /// <summary>Bytes of refcount blocks to cache, or null for a quarter of the L2 cache (at least 4 blocks).</summary>
    public long? RefcountCacheBytes { get; init; }

    /// <summary>Deepest backing chain accepted; deeper (or looping) chains are refused.</summary>
    public int MaxChainDepth { get; init; } = 256;

    /// <summary>Options used for backing images: read-only, same caching and locking.</summary>
    internal ImageOpenOptions ForBacking() => this with { ReadOnly = true, Format = null };
}
