using System.Numerics;
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace LibvirtStorage.Images.Native;

/// <summary>
/// O_DIRECT support: the alignment the file system wants, and bounce buffering for requests that do
/// not meet it. The data path of aligned requests never comes here.
/// </summary>
internal sealed partial class ImageFile
{
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
