namespace LibvirtStorage.Images.Qcow2;

/// <summary>A qcow2 image (QEMU docs/interop/qcow2.txt).</summary>
public sealed partial class Qcow2Image : IBlockImage
{
    private Qcow2Image()
    {
        throw new NotImplementedException("work in progress");
    }

    /// <inheritdoc/>
    public string Path => throw new NotImplementedException();

    /// <inheritdoc/>
    public ImageFormat Format => ImageFormat.Qcow2;

    /// <inheritdoc/>
    public long VirtualSize => throw new NotImplementedException();

    /// <inheritdoc/>
    public bool IsReadOnly => throw new NotImplementedException();

    /// <inheritdoc/>
    public int ClusterSize => throw new NotImplementedException();

    /// <inheritdoc/>
    public IBlockImage? Backing => throw new NotImplementedException();

    /// <summary>2 (compat 0.10) or 3 (compat 1.1).</summary>
    public int Version => throw new NotImplementedException();

    /// <summary>Width of a refcount entry.</summary>
    public int RefcountBits => throw new NotImplementedException();

    /// <summary>Extended L2 entries (subclusters).</summary>
    public bool ExtendedL2 => throw new NotImplementedException();

    /// <summary>Compression type in the header.</summary>
    public CompressionType CompressionType => throw new NotImplementedException();

    /// <summary>lazy_refcounts compatible feature.</summary>
    public bool LazyRefcounts => throw new NotImplementedException();

    /// <summary>Corrupt bit in the header.</summary>
    public bool IsCorrupt => throw new NotImplementedException();

    /// <summary>Dirty bit in the header (as found at open).</summary>
    public bool IsDirty => throw new NotImplementedException();

    /// <summary>The backing file name as recorded in the header.</summary>
    public string? BackingFileName => throw new NotImplementedException();

    /// <summary>The backing format as recorded in the header extension.</summary>
    public ImageFormat? BackingFormat => throw new NotImplementedException();

    /// <summary>Internal snapshots in the image.</summary>
    public int SnapshotCount => throw new NotImplementedException();

    /// <summary>Rewrites the backing file reference (unsafe rebase: no data is copied).</summary>
    public void SetBackingFile(string? backingFile, ImageFormat? backingFormat) => throw new NotImplementedException();

    /// <summary>Writes one whole cluster compressed (offset cluster-aligned; data one cluster, or less for the last).</summary>
    public void WriteCompressed(long offset, ReadOnlySpan<byte> data) => throw new NotImplementedException();

    /// <summary>Checks refcounts against references, repairing as asked.</summary>
    public ImageCheckResult Check(CheckRepair repair) => throw new NotImplementedException();

    internal static Qcow2Image Open(string path, ImageOpenOptions options, Func<string, ImageFormat?, IBlockImage> openBacking) => throw new NotImplementedException();

    /// <inheritdoc/>
    public void Read(long offset, Span<byte> destination) => throw new NotImplementedException();

    /// <inheritdoc/>
    public void Write(long offset, ReadOnlySpan<byte> source) => throw new NotImplementedException();

    /// <inheritdoc/>
    public void WriteZeroes(long offset, long length, bool unmap) => throw new NotImplementedException();

    /// <inheritdoc/>
    public void Discard(long offset, long length) => throw new NotImplementedException();

    /// <inheritdoc/>
    public void Flush() => throw new NotImplementedException();

    /// <inheritdoc/>
    public void Resize(long newSize) => throw new NotImplementedException();

    /// <inheritdoc/>
    public BlockStatus GetBlockStatus(long offset, long length) => throw new NotImplementedException();

    /// <inheritdoc/>
    public void Dispose() => throw new NotImplementedException();
}
