using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace LibvirtStorage.Images.Native;

/// <summary>
/// One open image file: positional I/O that loops over short transfers, durability calls and hole
/// management. Reads past the end of the file return zeroes, as they do for a qcow2 image that has not
/// yet been extended to a cluster it has allocated.
/// </summary>
internal sealed partial class ImageFile : IDisposable
{
    /// <summary>Alignment assumed for O_DIRECT when the kernel cannot tell (statx STATX_DIOALIGN, Linux 6.1+).</summary>
    private const int FallbackDirectAlignment = 4096;

    private readonly Lock _readModifyWriteLock = new();
    private readonly Lock _bufferedLock = new();
    private SafeFileHandle? _buffered;

    private ImageFile(string path, SafeFileHandle handle, bool writable, bool direct)
    {
        Path = path;
        Handle = handle;
        Writable = writable;
        Direct = direct;
        (OffsetAlignment, MemoryAlignment) = direct ? ProbeDirectAlignment(handle) : (1, 1);
    }

    public string Path { get; }

    public SafeFileHandle Handle { get; }

    public bool Writable { get; }

    public bool Direct { get; }

    public int Fd => (int)Handle.DangerousGetHandle();

    /// <summary>Alignment O_DIRECT needs for file offsets and lengths (1 without O_DIRECT).</summary>
    public int OffsetAlignment { get; }

    /// <summary>Alignment O_DIRECT needs for memory buffers (1 without O_DIRECT).</summary>
    public int MemoryAlignment { get; }

    public static ImageFile Open(string path, bool writable, bool direct)
    {
        int flags = (writable ? Libc.O_RDWR : Libc.O_RDONLY) | Libc.O_CLOEXEC | (direct ? Libc.O_DIRECT : 0);
        int fd = Libc.open(path, flags, 0);
        if (fd < 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            if (direct && errno == Libc.EINVAL)
            {
                throw new ImageException(ErrorKind.InvalidArgument, "the file system does not support O_DIRECT (cache=none)", path);
            }

            throw new ImageException(errno == 2 ? ErrorKind.InvalidArgument : ErrorKind.Io, $"cannot open: {Libc.StrError(errno)}", path);
        }

        var handle = new SafeFileHandle(fd, ownsHandle: true);
        return new ImageFile(path, handle, writable, direct);
    }

    /// <summary>Creates (or truncates) a file for a new image.</summary>
    public static ImageFile Create(string path, bool direct)
    {
        using (File.Open(path, FileMode.Create, FileAccess.ReadWrite, FileShare.ReadWrite))
        {
        }

        return Open(path, writable: true, direct);
    }

    public long Length => RandomAccess.GetLength(Handle);

    /// <summary>Reads exactly buffer.Length bytes; the part past end of file reads as zeroes.</summary>
    public void Read(Span<byte> buffer, long offset)
    {
        if (Direct && !IsAligned(buffer, offset))
        {
            ReadBounced(buffer, offset);
            return;
        }

        try
        {
            ReadFully(buffer, offset);
        }
        catch (IOException e)
        {
            throw new ImageException(ErrorKind.Io, $"read of {buffer.Length} bytes at {offset} failed: {e.Message}", Path, offset, e);
        }
    }

    public void Write(ReadOnlySpan<byte> buffer, long offset)
    {
        if (Direct && !IsAligned(buffer, offset))
        {
            WriteBounced(buffer, offset);
            return;
        }

        try
        {
            RandomAccess.Write(Handle, buffer, offset);
        }
        catch (IOException e)
        {
            throw new ImageException(ErrorKind.Io, $"write of {buffer.Length} bytes at {offset} failed: {e.Message}", Path, offset, e);
        }
    }

    /// <summary>fdatasync: everything written so far is on stable storage.</summary>
    public void Sync()
    {
        if (Libc.fdatasync(Fd) != 0)
        {
            ThrowHelper.Io(Path, 0, Marshal.GetLastPInvokeError(), "fdatasync");
        }
    }

    public void SetLength(long length)
    {
        try
        {
            RandomAccess.SetLength(Handle, length);
        }
        catch (IOException e)
        {
            throw new ImageException(ErrorKind.Io, $"truncate to {length} failed: {e.Message}", Path, length, e);
        }
    }

    /// <summary>Reserves blocks for the range (posix_fallocate semantics, size may grow).</summary>
    public void Allocate(long offset, long length)
    {
        if (length <= 0)
        {
            return;
        }

        if (Libc.fallocate(Fd, 0, offset, length) != 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            if (errno != Libc.EOPNOTSUPP)
            {
                ThrowHelper.Io(Path, offset, errno, "fallocate");
            }

            WriteZeroesSlow(offset, length);
        }
    }

    /// <summary>Deallocates the range, which then reads as zeroes. Returns false when the file system cannot.</summary>
    public bool PunchHole(long offset, long length)
    {
        if (length <= 0)
        {
            return true;
        }

        return Libc.fallocate(Fd, Libc.FALLOC_FL_PUNCH_HOLE | Libc.FALLOC_FL_KEEP_SIZE, offset, length) == 0;
    }

    /// <summary>Makes the range read as zeroes, unmapping it when <paramref name="unmap"/> and possible.</summary>
    public void WriteZeroes(long offset, long length, bool unmap)
    {
        if (length <= 0)
        {
            return;
        }

        if (unmap && offset + length <= Length && PunchHole(offset, length))
        {
            return;
        }

        int mode = offset + length <= Length ? Libc.FALLOC_FL_ZERO_RANGE | Libc.FALLOC_FL_KEEP_SIZE : Libc.FALLOC_FL_ZERO_RANGE;
        if (Libc.fallocate(Fd, mode, offset, length) == 0)
        {
            return;
        }

        WriteZeroesSlow(offset, length);
    }

    /// <summary>Writes real zero bytes over the range (QEMU's preallocation=full), never leaving holes or unwritten extents.</summary>
    public void FillZeroes(long offset, long length) => WriteZeroesSlow(offset, length);

    /// <summary>Next offset at or after <paramref name="offset"/> holding data, or -1 past the last data.</summary>
    public long SeekData(long offset)
    {
        long r = Libc.lseek(Fd, offset, Libc.SEEK_DATA);
        return r < 0 ? -1 : r;
    }

    /// <summary>Next hole at or after <paramref name="offset"/> (end of file counts as a hole).</summary>
    public long SeekHole(long offset)
    {
        long r = Libc.lseek(Fd, offset, Libc.SEEK_HOLE);
        return r < 0 ? Length : r;
    }

    public void Dispose()
    {
        _buffered?.Dispose();
        Handle.Dispose();
    }

    private unsafe void WriteZeroesSlow(long offset, long length)
    {
        const int Chunk = 1 << 20;
        // An aligned buffer, so O_DIRECT writes of it need no bounce when the range is aligned.
        void* zeroes = NativeMemory.AlignedAlloc(Chunk, FallbackDirectAlignment);
        try
        {
            // SAFETY: zeroes is a fresh allocation of Chunk bytes, freed below.
            var span = new Span<byte>(zeroes, Chunk);
            span.Clear();
            while (length > 0)
            {
                int n = (int)Math.Min(length, Chunk);
                Write(span[..n], offset);
                offset += n;
                length -= n;
            }
        }
        finally
        {
            NativeMemory.AlignedFree(zeroes);
        }
    }
}
