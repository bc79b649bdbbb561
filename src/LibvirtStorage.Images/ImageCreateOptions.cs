namespace LibvirtStorage.Images;

/// <summary>How space is reserved at creation (qemu-img create -o preallocation=...).</summary>
public enum Preallocation
{
    /// <summary>Nothing is allocated.</summary>
    Off,
    /// <summary>qcow2 metadata (L2 tables, refcounts) is written for the whole disk; the file stays sparse.</summary>
    Metadata,
    /// <summary>Metadata plus fallocate() of the data area.</summary>
    Falloc,
    /// <summary>Metadata plus zeroes written over the data area.</summary>
    Full,
}

/// <summary>Compression algorithm recorded in a qcow2 v3 header.</summary>
public enum CompressionType
{
    /// <summary>Raw deflate, the default and the only one in compat 0.10.</summary>
    Zlib = 0,
    /// <summary>Zstandard (incompatible feature bit 3).</summary>
    Zstd = 1,
}

/// <summary>Parameters of a new image (qemu-img create and its -o options).</summary>
public sealed record ImageCreateOptions
{
    /// <summary>Format of the new file.</summary>
    public ImageFormat Format { get; init; } = ImageFormat.Qcow2;

    /// <summary>Virtual size in bytes; null with a backing file means "the backing file's size".</summary>
    public long? Size { get; init; }

    /// <summary>qcow2 cluster size, a power of two from 512 B to 2 MiB.</summary>
    public int ClusterSize { get; init; } = 65536;

    /// <summary>qcow2 version: 2 (compat 0.10) or 3 (compat 1.1).</summary>
    public int Version { get; init; } = 3;

    /// <summary>Width of a refcount entry: 1, 2, 4, 8, 16, 32 or 64 (v3 only; v2 is always 16).</summary>
    public int RefcountBits { get; init; } = 16;

    /// <summary>Backing file as it will be recorded in the header (relative to the new image's folder, or absolute).</summary>
    public string? BackingFile { get; init; }

    /// <summary>Format of the backing file, recorded in the backing format header extension; null to probe it.</summary>
    public ImageFormat? BackingFormat { get; init; }

    /// <summary>Space reservation.</summary>
    public Preallocation Preallocation { get; init; } = Preallocation.Off;

    /// <summary>Use extended L2 entries with 32 subclusters per cluster (v3 only).</summary>
    public bool ExtendedL2 { get; init; }

    /// <summary>Compression type (v3 only for zstd).</summary>
    public CompressionType CompressionType { get; init; } = CompressionType.Zlib;

    /// <summary>Set the lazy_refcounts compatible feature (v3 only).</summary>
    public bool LazyRefcounts { get; init; }
}
