using LibvirtStorage.Images.Qcow2;
using LibvirtStorage.Images.Raw;

namespace LibvirtStorage.Images;

/// <summary>
/// The engine's front door: probes, opens (with the whole backing chain) and creates images.
/// </summary>
public static class ImageOpener
{
    /// <summary>Determines the format of an image file from its first bytes (qcow2 magic, else raw).</summary>
    public static ImageFormat Probe(string path)
    {
        Span<byte> magic = stackalloc byte[4];
        using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        int n = RandomAccess.Read(handle, magic, 0);
        return n == 4 && Qcow2Header.HasMagic(magic) ? ImageFormat.Qcow2 : ImageFormat.Raw;
    }

    /// <summary>Opens an image and its backing chain.</summary>
    /// <exception cref="ImageException">The image or a backing file is missing, malformed, unsupported, locked or looping.</exception>
    public static IBlockImage Open(string path, ImageOpenOptions? options = null)
    {
        options ??= new ImageOpenOptions();
        return OpenChained(path, options, new HashSet<string>(StringComparer.Ordinal), 0);
    }

    /// <summary>Creates a new image file, replacing any file at <paramref name="path"/>.</summary>
    public static void Create(string path, ImageCreateOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        long size = options.Size ?? BackingSize(path, options)
            ?? throw new ImageException(ErrorKind.InvalidArgument, "a size is required when there is no backing file", path);
        if (size < 0)
        {
            throw new ImageException(ErrorKind.InvalidArgument, $"size {size} is negative", path);
        }

        if (options.Format == ImageFormat.Raw)
        {
            if (options.BackingFile is not null)
            {
                throw new ImageException(ErrorKind.InvalidArgument, "raw images cannot have a backing file", path);
            }

            RawImage.Create(path, size, options.Preallocation);
            return;
        }

        Qcow2Creator.Create(path, options with { Size = size });
    }

    /// <summary>Resolves a backing file name recorded in <paramref name="overlayPath"/> the way QEMU does: relative to the overlay's folder.</summary>
    public static string ResolveBackingPath(string overlayPath, string backingName) =>
        System.IO.Path.IsPathRooted(backingName)
            ? backingName
            : System.IO.Path.Combine(System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(overlayPath)) ?? "/", backingName);

    private static long? BackingSize(string path, ImageCreateOptions options)
    {
        if (options.BackingFile is null)
        {
            return null;
        }

        string backing = ResolveBackingPath(path, options.BackingFile);
        using IBlockImage image = Open(backing, new ImageOpenOptions { ReadOnly = true, Format = options.BackingFormat, Lock = false });
        return image.VirtualSize;
    }

    private static IBlockImage OpenChained(string path, ImageOpenOptions options, HashSet<string> seen, int depth)
    {
        if (depth > options.MaxChainDepth)
        {
            throw new ImageException(ErrorKind.InvalidArgument, $"backing chain is deeper than {options.MaxChainDepth} images", path);
        }

        if (!File.Exists(path))
        {
            throw new ImageException(ErrorKind.InvalidArgument, depth == 0 ? "no such file" : "backing file does not exist", path);
        }

        string real = RealPath(path);
        if (!seen.Add(real))
        {
            throw new ImageException(ErrorKind.InvalidFormat, "backing chain loops: this file is its own backing file (directly or through others)", path);
        }

        ImageFormat format = options.Format ?? Probe(path);
        if (format == ImageFormat.Raw)
        {
            return RawImage.Open(path, options);
        }

        if (!options.OpenBacking)
        {
            return Qcow2Image.Open(path, options, openBacking: null);
        }

        return Qcow2Image.Open(path, options, (backingName, backingFormat) =>
        {
            string backingPath = ResolveBackingPath(path, backingName);
            return OpenChained(backingPath, options.ForBacking() with { Format = backingFormat }, seen, depth + 1);
        });
    }

    private static string RealPath(string path)
    {
        try
        {
            FileSystemInfo? target = new FileInfo(path).ResolveLinkTarget(returnFinalTarget: true);
            return System.IO.Path.GetFullPath(target?.FullName ?? path);
        }
        catch (IOException)
        {
            return System.IO.Path.GetFullPath(path);
        }
    }
}
