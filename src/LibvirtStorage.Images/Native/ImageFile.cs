using System.Numerics;
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

    private bool IsAligned(ReadOnlySpan<byte> buffer, long offset)
    {
        unsafe
        {
            fixed (byte* p = buffer)
            {
                // SAFETY: the pointer is only compared, never dereferenced.
                return (((ulong)offset | (uint)buffer.Length) & (ulong)(OffsetAlignment - 1)) == 0
                    && ((ulong)p & (ulong)(MemoryAlignment - 1)) == 0;
            }
        }
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

    // O_DIRECT needs aligned offsets, lengths and buffers. Unaligned requests (rare: metadata entries,
    // sub-sector guest I/O, managed buffers) go through an aligned bounce buffer.
    private unsafe void ReadBounced(Span<byte> buffer, long offset)
    {
        long start = AlignDown(offset);
        long end = AlignUp(offset + buffer.Length);
        void* bounce = AllocateAligned(end - start);
        try
        {
            // SAFETY: bounce is a fresh allocation of exactly end - start bytes, freed below.
            var span = new Span<byte>(bounce, (int)(end - start));
            ReadFully(span, start);
            span.Slice((int)(offset - start), buffer.Length).CopyTo(buffer);
        }
        catch (IOException e)
        {
            throw new ImageException(ErrorKind.Io, $"read of {buffer.Length} bytes at {offset} failed: {e.Message}", Path, offset, e);
        }
        finally
        {
            NativeMemory.AlignedFree(bounce);
        }
    }

    private unsafe void WriteBounced(ReadOnlySpan<byte> buffer, long offset)
    {
        long start = AlignDown(offset);
        long end = AlignUp(offset + buffer.Length);
        bool partialHead = start != offset;
        bool partialTail = end != offset + buffer.Length;
        void* bounce = AllocateAligned(end - start);
        try
        {
            // SAFETY: bounce is a fresh allocation of exactly end - start bytes, freed below.
            var span = new Span<byte>(bounce, (int)(end - start));
            if (!partialHead && !partialTail)
            {
                // Only the memory is unaligned: no other bytes are touched, so no read-modify-write.
                buffer.CopyTo(span);
                RandomAccess.Write(Handle, span, start);
                return;
            }

            // Read-modify-write of the partial blocks at either end. Two of these on the same block
            // must not interleave (each would write back the other's old bytes), so they take turns.
            lock (_readModifyWriteLock)
            {
                int block = OffsetAlignment;
                if (partialHead)
                {
                    ReadFully(span[..block], start);
                }

                if (partialTail && (end - block > start || !partialHead))
                {
                    ReadFully(span[^block..], end - block);
                }

                buffer.CopyTo(span[(int)(offset - start)..]);

                // Never make the file longer than the write itself: the padding of the last block
                // past end of file goes nowhere. The aligned part is written directly, and the short
                // remainder through the page cache (the kernel keeps both views coherent).
                long limit = Math.Max(Length, offset + buffer.Length);
                if (limit >= end)
                {
                    RandomAccess.Write(Handle, span, start);
                    return;
                }

                int direct = (int)(AlignDown(limit) - start);
                if (direct > 0)
                {
                    RandomAccess.Write(Handle, span[..direct], start);
                }

                RandomAccess.Write(BufferedHandle(), span[direct..(int)(limit - start)], start + direct);
            }
        }
        catch (IOException e)
        {
            throw new ImageException(ErrorKind.Io, $"write of {buffer.Length} bytes at {offset} failed: {e.Message}", Path, offset, e);
        }
        finally
        {
            NativeMemory.AlignedFree(bounce);
        }
    }

    /// <summary>
    /// Reads span fully; what lies past end of file reads as zeroes. With O_DIRECT a transfer that stops
    /// at an unaligned position can only have stopped at end of file, so the rest is zeroes too (asking
    /// again from an unaligned position would fail with EINVAL).
    /// </summary>
    private void ReadFully(Span<byte> span, long offset)
    {
        while (!span.IsEmpty)
        {
            int n = RandomAccess.Read(Handle, span, offset);
            span = span[n..];
            offset += n;
            if (n == 0 || (Direct && !span.IsEmpty && !IsAligned(span, offset)))
            {
                span.Clear();
                return;
            }
        }
    }

    /// <summary>A second descriptor on the same file without O_DIRECT, for the unaligned tail of a file.</summary>
    private SafeFileHandle BufferedHandle()
    {
        lock (_bufferedLock)
        {
            if (_buffered is null)
            {
                // /proc/self/fd reopens this very file even if it was renamed or unlinked.
                int fd = Libc.open($"/proc/self/fd/{Fd}", Libc.O_RDWR | Libc.O_CLOEXEC, 0);
                if (fd < 0)
                {
                    ThrowHelper.Io(Path, 0, Marshal.GetLastPInvokeError(), "reopen without O_DIRECT");
                }

                _buffered = new SafeFileHandle(fd, ownsHandle: true);
            }

            return _buffered;
        }
    }

    private long AlignDown(long value) => value & ~(long)(OffsetAlignment - 1);

    private long AlignUp(long value) => (value + OffsetAlignment - 1) & ~(long)(OffsetAlignment - 1);

    private unsafe void* AllocateAligned(long size) =>
        NativeMemory.AlignedAlloc((nuint)size, (nuint)Math.Max(OffsetAlignment, MemoryAlignment));

    private static unsafe (int Offset, int Memory) ProbeDirectAlignment(SafeFileHandle handle)
    {
        StatxBuffer stx = default;
        // SAFETY: stx is a local of the full 256-byte struct statx size; the kernel writes within it.
        if (Libc.statx((int)handle.DangerousGetHandle(), string.Empty, Libc.AT_EMPTY_PATH, Libc.STATX_DIOALIGN, &stx) == 0
            && (stx.Mask & Libc.STATX_DIOALIGN) != 0
            && stx.DioOffsetAlign != 0
            && stx.DioMemAlign != 0
            && BitOperations.IsPow2(stx.DioOffsetAlign)
            && BitOperations.IsPow2(stx.DioMemAlign))
        {
            return ((int)stx.DioOffsetAlign, (int)stx.DioMemAlign);
        }

        return (FallbackDirectAlignment, FallbackDirectAlignment);
    }
}
