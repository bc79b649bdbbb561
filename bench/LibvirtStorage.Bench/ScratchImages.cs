using System.Globalization;

namespace LibvirtStorage.Bench;

/// <summary>
/// The images the I/O rows run on, all made by qemu-img so neither side formats its own input:
/// an empty qcow2, a fully allocated qcow2 (preallocation=full) and a qcow2 overlay over a raw file full of data.
/// </summary>
internal sealed class ScratchImages
{
    private const byte BaseFill = 90;
    private readonly QemuImg _qemu;
    private readonly string _dir;
    private readonly long _size;
    private bool _allocatedMade;
    private bool _baseMade;

    public ScratchImages(QemuImg qemu, string dir, long size)
    {
        _qemu = qemu;
        _dir = dir;
        _size = size;
        Directory.CreateDirectory(dir);
    }

    public string FreshPath => Path.Combine(_dir, "fresh.qcow2");

    public string AllocatedPath => Path.Combine(_dir, "allocated.qcow2");

    public string BasePath => Path.Combine(_dir, "base.raw");

    public string OverlayPath => Path.Combine(_dir, "overlay.qcow2");

    /// <summary>Returns the path of an image of <paramref name="kind"/>, recreated when <paramref name="recreate"/> (or missing).</summary>
    public string Prepare(ImageKind kind, bool recreate)
    {
        switch (kind)
        {
            case ImageKind.Fresh:
                if (recreate || !File.Exists(FreshPath))
                {
                    CreateQcow2(FreshPath, _size, []);
                }

                return FreshPath;
            case ImageKind.Allocated:
                if (!_allocatedMade)
                {
                    CreateQcow2(AllocatedPath, _size, ["-o", "preallocation=full"]);
                    _allocatedMade = true;
                }

                return AllocatedPath;
            default:
                EnsureBase();
                if (recreate || !File.Exists(OverlayPath))
                {
                    CreateOverlay(OverlayPath, BasePath);
                }

                return OverlayPath;
        }
    }

    /// <summary>Creates a raw file of <paramref name="size"/> bytes holding data everywhere (one qemu-img bench write pass).</summary>
    public void CreateRawWithData(string path, long size, byte fill = BaseFill) => CreateWithData(path, "raw", size, fill);

    /// <summary>
    /// Creates an image of <paramref name="format"/> (qcow2: 64 KiB clusters, qemu-img's default) whose every byte is
    /// <paramref name="fill"/>: one sequential O_DIRECT qemu-img bench write pass of 1 MiB requests.
    /// </summary>
    public void CreateWithData(string path, string format, long size, byte fill)
    {
        File.Delete(path);
        _qemu.Run(["create", "-q", "-f", format, path, Text(size)], out _);
        Fill(path, format, size, fill);
    }

    /// <summary>Writes <paramref name="fill"/> over the whole guest-visible size (allocating every cluster of a qcow2).</summary>
    public void Fill(string path, string format, long size, byte fill)
    {
        const int chunk = 1 << 20;
        _qemu.Run(
            ["bench", "-q", "-f", format, "-w", "-t", "none", "-s", Text(chunk), "-c", Text(size / chunk), $"--pattern={fill}", path],
            out _);
    }

    /// <summary>Creates an empty qcow2 overlay over a backing file (its name is recorded relative, like lvstord's layers).</summary>
    public void CreateOverlay(string path, string backingPath, string backingFormat = "raw")
    {
        File.Delete(path);
        _qemu.Run(["create", "-q", "-f", "qcow2", "-b", Path.GetFileName(backingPath), "-F", backingFormat, path], out _);
    }

    /// <summary>Writes a quarter of the overlay (64 KiB in every 256 KiB) so it holds data of its own.</summary>
    public void WriteQuarter(string path, long size)
    {
        const int request = 65536;
        const int step = 4 * request;
        _qemu.Run(
            ["bench", "-q", "-f", "qcow2", "-w", "-t", "none", "-s", Text(request), "-S", Text(step), "-c", Text(size / step), "--pattern=165", path],
            out _);
    }

    private void EnsureBase()
    {
        if (!_baseMade)
        {
            CreateRawWithData(BasePath, _size);
            _baseMade = true;
        }
    }

    private void CreateQcow2(string path, long size, string[] extra)
    {
        File.Delete(path);
        var args = new List<string> { "create", "-q", "-f", "qcow2" };
        args.AddRange(extra);
        args.Add(path);
        args.Add(Text(size));
        _qemu.Run(args, out _);
    }

    private static string Text(long value) => value.ToString(CultureInfo.InvariantCulture);
}

/// <summary>The three images of the I/O matrix.</summary>
internal enum ImageKind
{
    /// <summary>An empty qcow2: reads return zeroes, writes allocate.</summary>
    Fresh,
    /// <summary>A qcow2 created with preallocation=full: every cluster mapped and written.</summary>
    Allocated,
    /// <summary>An empty qcow2 over a raw backing file full of data: reads go to the backing, writes copy on write.</summary>
    Overlay,
}
