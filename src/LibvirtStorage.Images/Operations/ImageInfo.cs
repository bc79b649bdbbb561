using LibvirtStorage.Images.Native;
using LibvirtStorage.Images.Qcow2;

namespace LibvirtStorage.Images.Operations;

/// <summary>The qcow2 part of <see cref="ImageInfo"/> (qemu-img info's "format-specific" data).</summary>
/// <param name="Compat">"0.10" (version 2) or "1.1" (version 3).</param>
/// <param name="CompressionType">"zlib" or "zstd".</param>
/// <param name="LazyRefcounts">lazy_refcounts compatible feature (version 3 only).</param>
/// <param name="RefcountBits">Width of a refcount entry.</param>
/// <param name="Corrupt">Corrupt bit (version 3 only).</param>
/// <param name="ExtendedL2">Extended L2 entries (version 3 only).</param>
/// <param name="Bitmaps">Persistent dirty bitmaps, or null when the image has none.</param>
public sealed record Qcow2InfoData(string Compat, string CompressionType, bool? LazyRefcounts, int RefcountBits, bool? Corrupt, bool? ExtendedL2,
    IReadOnlyList<BitmapInfo>? Bitmaps = null);

/// <summary>
/// The facts <c>qemu-img info</c> reports about one image file, with renderings as qemu-img's JSON
/// (same keys) and human text.
/// </summary>
public sealed record ImageInfo
{
    /// <summary>The file name as given (qemu-img's "filename").</summary>
    public required string Filename { get; init; }

    /// <summary>"raw" or "qcow2".</summary>
    public required string Format { get; init; }

    /// <summary>Size of the virtual disk in bytes.</summary>
    public required long VirtualSize { get; init; }

    /// <summary>Bytes allocated to the file on the host (st_blocks * 512).</summary>
    public required long ActualSize { get; init; }

    /// <summary>The image was not cleanly closed (qcow2 dirty bit).</summary>
    public bool DirtyFlag { get; init; }

    /// <summary>Cluster size, for formats that have clusters.</summary>
    public int? ClusterSize { get; init; }

    /// <summary>The backing file as recorded in the image.</summary>
    public string? BackingFilename { get; init; }

    /// <summary>The backing file resolved against the image's folder, as QEMU opens it.</summary>
    public string? FullBackingFilename { get; init; }

    /// <summary>The backing format as recorded in the image.</summary>
    public string? BackingFilenameFormat { get; init; }

    /// <summary>Internal snapshots (qcow2), in table order.</summary>
    public IReadOnlyList<SnapshotInfo> Snapshots { get; init; } = [];

    /// <summary>qcow2 facts, or null for raw.</summary>
    public Qcow2InfoData? Qcow2 { get; init; }

    /// <summary>Opens <paramref name="path"/> read-only (without its backing chain) and describes it.</summary>
    /// <param name="path">The image file.</param>
    /// <param name="format">The format, or null to probe it.</param>
    /// <param name="forceShare">Do not take locks (qemu-img -U), so images in use can be inspected.</param>
    public static ImageInfo Get(string path, ImageFormat? format = null, bool forceShare = false)
    {
        var options = new ImageOpenOptions { ReadOnly = true, Format = format, OpenBacking = false, Lock = !forceShare };
        using IBlockImage image = ImageOpener.Open(path, options);
        return Describe(image, path);
    }

    /// <summary>Describes every image of the chain from <paramref name="path"/> down (qemu-img info --backing-chain).</summary>
    public static IReadOnlyList<ImageInfo> GetChain(string path, ImageFormat? format = null, bool forceShare = false)
    {
        var options = new ImageOpenOptions { ReadOnly = true, Format = format, Lock = !forceShare };
        using IBlockImage top = ImageOpener.Open(path, options);
        var list = new List<ImageInfo>();
        string name = path;
        for (IBlockImage? image = top; image is not null; image = image.Backing)
        {
            ImageInfo info = Describe(image, name);
            list.Add(info);
            name = info.FullBackingFilename ?? image.Backing?.Path ?? string.Empty;
        }

        return list;
    }

    /// <summary>Describes an open image; <paramref name="displayName"/> is reported as its filename.</summary>
    public static ImageInfo Describe(IBlockImage image, string displayName)
    {
        ArgumentNullException.ThrowIfNull(image);
        var info = new ImageInfo
        {
            Filename = displayName,
            Format = image.Format.ToName(),
            VirtualSize = image.VirtualSize,
            ActualSize = FileStat.AllocatedBytes(image.Path),
        };

        if (image is not Qcow2Image q)
        {
            return info;
        }

        bool v3 = q.Version >= 3;
        string? backing = q.BackingFileName;
        return info with
        {
            DirtyFlag = q.IsDirty,
            ClusterSize = q.ClusterSize,
            BackingFilename = backing,
            FullBackingFilename = backing is null ? null : FullBackingName(displayName, backing),
            BackingFilenameFormat = q.BackingFormat?.ToName(),
            Snapshots = SnapshotTable.Read(q),
            Qcow2 = new Qcow2InfoData(
                v3 ? "1.1" : "0.10",
                q.CompressionType == CompressionType.Zstd ? "zstd" : "zlib",
                v3 ? q.LazyRefcounts : null,
                q.RefcountBits,
                v3 ? q.IsCorrupt : null,
                v3 ? q.ExtendedL2 : null,
                BitmapDirectory.Read(q)),
        };
    }

    /// <summary>Renders as <c>qemu-img info --output=json</c> does, with its keys and 4-space indentation.</summary>
    public string ToJson() => ImageInfoJson.Serialize(this);

    /// <summary>Renders a chain as <c>qemu-img info --backing-chain --output=json</c> does (a JSON array).</summary>
    public static string ToJson(IReadOnlyList<ImageInfo> chain) => ImageInfoJson.Serialize(chain);

    /// <summary>Renders as <c>qemu-img info</c>'s human text.</summary>
    public string ToHuman() => ImageInfoText.Format(this);

    /// <summary>
    /// QEMU's path_combine: a relative backing name is taken relative to the folder part of the
    /// overlay's name as given (so "top.qcow2" with "base.raw" gives "base.raw").
    /// </summary>
    internal static string FullBackingName(string overlayName, string backingName)
    {
        if (backingName.StartsWith('/') || backingName.Contains("://", StringComparison.Ordinal))
        {
            return backingName;
        }

        int slash = overlayName.LastIndexOf('/');
        return slash < 0 ? backingName : string.Concat(overlayName.AsSpan(0, slash + 1), backingName);
    }
}
