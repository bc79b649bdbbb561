using System.Buffers;
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace LibvirtStorage.Images.Native;

/// <summary>
/// One open image file: positional I/O that loops over short transfers, durability calls and hole
/// management. Reads past the end of the file return zeroes, as they do for a qcow2 image that has not
/// yet been extended to a cluster it has allocated.
/// </summary>
internal sealed class ImageFile : IDisposable
{
    private const int DirectAlignment = 4096;

    private ImageFile(string path, SafeFileHandle handle, bool writable, bool direct)
    {
        Path = path;
        Handle = handle;
        Writable = writable;
        Direct = direct;
    }

    public string Path { get; }

    public SafeFileHandle Handle { get; }

    public bool Writable { get; }

    public bool Direct { get; }

    public int Fd => (int)Handle.DangerousGetHandle();

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

        while (!buffer.IsEmpty)
        {
            int n;
            try
            {
                n = RandomAccess.Read(Handle, buffer, offset);
            }
            catch (IOException e)
            {
                throw new ImageException(ErrorKind.Io, $"read of {buffer.Length} bytes at {offset} failed: {e.Message}", Path, offset, e);
            }

            if (n == 0)
            {
                buffer.Clear();
                return;
            }

            buffer = buffer[n..];
            offset += n;
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

    public void Dispose() => Handle.Dispose();

    private static bool IsAligned(ReadOnlySpan<byte> buffer, long offset)
    {
        unsafe
        {
            fixed (byte* p = buffer)
            {
                return ((ulong)offset | (uint)buffer.Length | (ulong)p) % 512 == 0;
            }
        }
    }

    private void WriteZeroesSlow(long offset, long length)
    {
        byte[] zeroes = ArrayPool<byte>.Shared.Rent(1 << 20);
        try
        {
            Array.Clear(zeroes);
            while (length > 0)
            {
                int n = (int)Math.Min(length, zeroes.Length);
                Write(zeroes.AsSpan(0, n), offset);
                offset += n;
                length -= n;
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(zeroes);
        }
    }

    // O_DIRECT needs sector-aligned offsets, lengths and buffers. Unaligned requests (rare: metadata
    // entries, sub-sector guest I/O) go through an aligned bounce buffer.
    private unsafe void ReadBounced(Span<byte> buffer, long offset)
    {
        long start = offset & ~(long)(DirectAlignment - 1);
        long end = (offset + buffer.Length + DirectAlignment - 1) & ~(long)(DirectAlignment - 1);
        nuint size = (nuint)(end - start);
        void* bounce = NativeMemory.AlignedAlloc(size, DirectAlignment);
        try
        {
            // SAFETY: bounce is a fresh allocation of exactly size bytes.
            var span = new Span<byte>(bounce, (int)size);
            ReadDirect(span, start);
            span.Slice((int)(offset - start), buffer.Length).CopyTo(buffer);
        }
        finally
        {
            NativeMemory.AlignedFree(bounce);
        }
    }

    private unsafe void WriteBounced(ReadOnlySpan<byte> buffer, long offset)
    {
        long start = offset & ~(long)(DirectAlignment - 1);
        long end = (offset + buffer.Length + DirectAlignment - 1) & ~(long)(DirectAlignment - 1);
        nuint size = (nuint)(end - start);
        void* bounce = NativeMemory.AlignedAlloc(size, DirectAlignment);
        try
        {
            // SAFETY: bounce is a fresh allocation of exactly size bytes.
            var span = new Span<byte>(bounce, (int)size);
            ReadDirect(span, start);
            buffer.CopyTo(span[(int)(offset - start)..]);
            RandomAccess.Write(Handle, span, start);
        }
        finally
        {
            NativeMemory.AlignedFree(bounce);
        }
    }

    private void ReadDirect(Span<byte> span, long offset)
    {
        while (!span.IsEmpty)
        {
            int n = RandomAccess.Read(Handle, span, offset);
            if (n == 0)
            {
                span.Clear();
                return;
            }

            span = span[n..];
            offset += n;
        }
    }
}
