using LibvirtStorage.Images.Native;

namespace LibvirtStorage.Images.Raw;

/// <summary>
/// A raw image: the file is the disk. Holes read as zeroes; discard punches holes. Like QEMU, the
/// virtual size is the file size rounded up to whole 512-byte sectors (the tail reads as zeroes).
/// </summary>
internal sealed class RawImage : IBlockImage
{
    private const long SectorSize = 512;

    private readonly ImageFile _file;
    private readonly IDisposable? _lock;
    private long _size;

    private RawImage(ImageFile file, IDisposable? fileLock)
    {
        _file = file;
        _lock = fileLock;
        _size = (file.Length + SectorSize - 1) & ~(SectorSize - 1);
    }

    public string Path => _file.Path;

    public ImageFormat Format => ImageFormat.Raw;

    public long VirtualSize => Volatile.Read(ref _size);

    public bool IsReadOnly => !_file.Writable;

    public int ClusterSize => 4096;

    public IBlockImage? Backing => null;

    public static RawImage Open(string path, ImageOpenOptions options)
    {
        ImageFile file = ImageFile.Open(path, !options.ReadOnly, options.Direct);
        try
        {
            IDisposable? fileLock = options.Lock ? Locking.ImageLock.Acquire(file, writable: !options.ReadOnly) : null;
            return new RawImage(file, fileLock);
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    public static void Create(string path, long size, Preallocation preallocation)
    {
        using ImageFile file = ImageFile.Create(path, direct: false);
        file.SetLength(size);
        switch (preallocation)
        {
            case Preallocation.Falloc:
                file.Allocate(0, size);
                break;
            case Preallocation.Full:
                file.FillZeroes(0, size);
                break;
        }

        file.Sync();
    }

    public void Read(long offset, Span<byte> destination)
    {
        CheckRange(offset, destination.Length);
        _file.Read(destination, offset);
    }

    public void Write(long offset, ReadOnlySpan<byte> source)
    {
        CheckWritable();
        CheckRange(offset, source.Length);
        _file.Write(source, offset);
    }

    public void WriteZeroes(long offset, long length, bool unmap)
    {
        CheckWritable();
        CheckRange(offset, length);
        _file.WriteZeroes(offset, length, unmap);
    }

    public void Discard(long offset, long length)
    {
        CheckWritable();
        CheckRange(offset, length);
        _file.PunchHole(offset, length);
    }

    public void Flush()
    {
        if (!IsReadOnly)
        {
            _file.Sync();
        }
    }

    public void Resize(long newSize)
    {
        CheckWritable();
        if (newSize < 0)
        {
            throw new ImageException(ErrorKind.InvalidArgument, $"size {newSize} is negative", Path);
        }

        _file.SetLength(newSize);
        Volatile.Write(ref _size, newSize);
    }

    public BlockStatus GetBlockStatus(long offset, long length)
    {
        long size = VirtualSize;
        length = Math.Min(length, size - offset);
        if (length <= 0)
        {
            return new BlockStatus(0, true, true, false, null);
        }

        long data = _file.SeekData(offset);
        if (data < 0 || data >= offset + length)
        {
            return new BlockStatus(length, true, true, false, null);
        }

        if (data > offset)
        {
            return new BlockStatus(data - offset, true, true, false, null);
        }

        long hole = Math.Min(_file.SeekHole(offset), offset + length);
        return new BlockStatus(Math.Max(hole - offset, Math.Min(length, 1)), true, false, true, offset);
    }

    public void Dispose()
    {
        _lock?.Dispose();
        _file.Dispose();
    }

    private void CheckRange(long offset, long length)
    {
        long size = VirtualSize;
        if (offset < 0 || length < 0 || offset > size - length)
        {
            ThrowHelper.OutOfBounds(Path, offset, length, size);
        }
    }

    private void CheckWritable()
    {
        if (IsReadOnly)
        {
            ThrowHelper.ReadOnly(Path);
        }
    }
}
