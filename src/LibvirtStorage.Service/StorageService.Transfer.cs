using System.Buffers;
using LibvirtStorage.Images;
using LibvirtStorage.Service.Native;
using LibvirtStorage.Service.State;
using Microsoft.Win32.SafeHandles;

namespace LibvirtStorage.Service;

public sealed partial class StorageService
{
    private const int TransferChunk = 1 << 20;
    private const long WipeChunk = 64L << 20;
    private const int ZeroBlock = 64 << 10;

    /// <summary>
    /// Copies the volume's guest-visible data into <paramref name="destination"/> (virsh vol-download). A
    /// regular file is truncated and written sparse: only data extents (found from the engine's block status,
    /// through the whole chain) are written, and all-zero chunks inside them are skipped too. A pipe or socket
    /// receives every byte in order.
    /// </summary>
    /// <param name="poolName">The pool.</param>
    /// <param name="volumeName">The volume.</param>
    /// <param name="destination">Open for writing; byte 0 of a regular file receives volume byte <paramref name="offset"/>.</param>
    /// <param name="offset">First byte of the volume to copy.</param>
    /// <param name="length">Bytes to copy; null for everything from <paramref name="offset"/> to the end.</param>
    /// <param name="progress">Receives progress from 0 to 1.</param>
    /// <param name="cancellationToken">Stops the copy between chunks.</param>
    public Task<TransferResult> DownloadAsync(string poolName, string volumeName, SafeFileHandle destination, long offset = 0, long? length = null,
        IProgress<OperationProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(destination);
        (PoolState pool, VolumeState volume, OperationScope scope) = BeginTransfer(poolName, volumeName, "download", writes: false);
        return Task.Run(() =>
        {
            using (scope)
            {
                using IDisposable quiesced = QuiesceForReading(pool, volume);
                return ThrowHelper.Translate($"cannot download volume '{volumeName}'", () =>
                {
                    using IBlockImage image = ImageOpener.Open(pool.FullPath(volume.File), new ImageOpenOptions { ReadOnly = true, Format = volume.Format });
                    long count = CheckRange(image, volumeName, offset, length);
                    return Download(image, destination, offset, count, new Reporter(progress, "download", volumeName, count), cancellationToken);
                });
            }
        }, CancellationToken.None);
    }

    /// <summary>
    /// Writes the bytes read from <paramref name="source"/> into the volume at <paramref name="offset"/>
    /// (virsh vol-upload), through the engine. All-zero chunks become zero ranges, so the image stays sparse; the
    /// holes of a sparse regular file (SEEK_DATA/SEEK_HOLE) become zero ranges without being read. Stops at the end
    /// of the source or after <paramref name="length"/> bytes.
    /// </summary>
    /// <param name="poolName">The pool.</param>
    /// <param name="volumeName">The volume.</param>
    /// <param name="source">Open for reading; a regular file is read from its byte 0, a pipe from where it stands.</param>
    /// <param name="offset">Where in the volume the first byte goes.</param>
    /// <param name="length">Most bytes to write; null for up to the end of the volume.</param>
    /// <param name="progress">Receives progress from 0 to 1.</param>
    /// <param name="cancellationToken">Stops between chunks; what was written stays written.</param>
    /// <param name="ready">
    /// Optional: for a <paramref name="source"/> file that its writer is still filling (the libvirt module's sparse
    /// stream). The volume is claimed at once, but the source is read only after one byte arrives on
    /// <paramref name="ready"/>; its end without a byte means the writer gave up: the upload ends
    /// <see cref="StorageErrorKind.Cancelled"/> and writes nothing.
    /// </param>
    public Task<TransferResult> UploadAsync(string poolName, string volumeName, SafeFileHandle source, long offset = 0, long? length = null,
        IProgress<OperationProgress>? progress = null, CancellationToken cancellationToken = default, SafeFileHandle? ready = null)
    {
        ArgumentNullException.ThrowIfNull(source);
        (PoolState pool, VolumeState volume, OperationScope scope) = BeginTransfer(poolName, volumeName, "upload", writes: true);
        return Task.Run(() =>
        {
            using (scope)
            {
                using IDisposable quiesced = QuiesceUnused(pool, volume, "upload to");
                return ThrowHelper.Translate($"cannot upload to volume '{volumeName}'", () =>
                {
                    if (ready is not null)
                    {
                        WaitUntilReady(ready, volumeName);
                    }

                    using IBlockImage image = ImageOpener.Open(pool.FullPath(volume.File), new ImageOpenOptions { Format = volume.Format });
                    long count = CheckRange(image, volumeName, offset, length);
                    TransferResult result = Upload(image, source, offset, count, new Reporter(progress, "upload", volumeName, count), cancellationToken);
                    image.Flush();
                    return result;
                });
            }
        }, CancellationToken.None);
    }

    /// <summary>Makes the whole volume read as zeroes (virsh vol-wipe), releasing its space where the format allows.</summary>
    public Task WipeAsync(string poolName, string volumeName, IProgress<OperationProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        (PoolState pool, VolumeState volume, OperationScope scope) = BeginTransfer(poolName, volumeName, "wipe", writes: true);
        return Task.Run(() =>
        {
            using (scope)
            {
                using IDisposable quiesced = QuiesceUnused(pool, volume, "wipe");
                ThrowHelper.Translate($"cannot wipe volume '{volumeName}'", () =>
                {
                    using IBlockImage image = ImageOpener.Open(pool.FullPath(volume.File), new ImageOpenOptions { Format = volume.Format });
                    var reporter = new Reporter(progress, "wipe", volumeName, image.VirtualSize);
                    for (long position = 0; position < image.VirtualSize; position += WipeChunk)
                    {
                        cancellationToken.ThrowIfCancellationRequested();
                        long n = Math.Min(WipeChunk, image.VirtualSize - position);
                        image.WriteZeroes(position, n, unmap: true);
                        reporter.Advance(n);
                    }

                    image.Flush();
                    reporter.Done();
                });
            }
        }, CancellationToken.None);
    }

    private (PoolState, VolumeState, OperationScope) BeginTransfer(string poolName, string volumeName, string operation, bool writes)
    {
        PoolState pool = null!;
        VolumeState volume = null!;
        OperationScope scope = Begin(operation, (state, s) =>
        {
            pool = RequireActivePool(state, poolName);
            volume = RequireVolume(pool, volumeName);
            if (writes)
            {
                RefuseIfReadOnly(pool, volume, operation);
                RefuseIfGuest(pool, volume, operation);
            }

            s.AddVolume(pool, volume);
        });
        return (pool, volume, scope);
    }

    private static long CheckRange(IBlockImage image, string volumeName, long offset, long? length)
    {
        long size = image.VirtualSize;
        if (offset < 0 || offset > size || length < 0 || (length is { } l && l > size - offset))
        {
            ThrowHelper.Invalid($"range at offset {offset} length {length} is outside volume '{volumeName}' ({size} bytes)");
        }

        return length ?? size - offset;
    }

    private static TransferResult Download(IBlockImage image, SafeFileHandle destination, long offset, long count, Reporter reporter, CancellationToken cancellationToken)
    {
        bool seekable = FileDescriptors.IsSeekable(destination);
        bool sparse = seekable && TryResetLength(destination, count);

        byte[] buffer = ArrayPool<byte>.Shared.Rent(TransferChunk);
        long data = 0, skipped = 0;
        try
        {
            for (long done = 0; done < count;)
            {
                cancellationToken.ThrowIfCancellationRequested();
                (long run, bool zero) = ChainExtent(image, offset + done, Math.Min(count - done, TransferChunk));
                int n = (int)run;
                Span<byte> chunk = buffer.AsSpan(0, n);
                if (zero)
                {
                    chunk.Clear();
                }
                else
                {
                    image.Read(offset + done, chunk);
                }

                if (!sparse)
                {
                    Write(destination, seekable, chunk, done);
                    data += zero ? 0 : n;
                    skipped += zero ? n : 0;
                }
                else if (!zero)
                {
                    // Inside a data extent, all-zero blocks stay holes too (a raw file full of written zeroes).
                    for (int block = 0; block < n; block += ZeroBlock)
                    {
                        ReadOnlySpan<byte> part = chunk.Slice(block, Math.Min(ZeroBlock, n - block));
                        if (part.ContainsAnyExcept((byte)0))
                        {
                            RandomAccess.Write(destination, part, done + block);
                            data += part.Length;
                        }
                        else
                        {
                            skipped += part.Length;
                        }
                    }
                }
                else
                {
                    skipped += n;
                }

                done += n;
                reporter.Advance(n);
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }

        reporter.Done();
        return new TransferResult(count, data, skipped);
    }

    private static TransferResult Upload(IBlockImage image, SafeFileHandle source, long offset, long count, Reporter reporter, CancellationToken cancellationToken)
    {
        bool seekable = FileDescriptors.IsSeekable(source);
        byte[] buffer = ArrayPool<byte>.Shared.Rent(TransferChunk);
        long done = 0, data = 0, zeroes = 0;
        try
        {
            while (done < count)
            {
                cancellationToken.ThrowIfCancellationRequested();
                int wanted = (int)Math.Min(TransferChunk, count - done);
                if (seekable)
                {
                    // A hole of a sparse source file becomes zeroes in the volume without being read.
                    long? dataAt = FileExtents.NextData(source, done);
                    long hole = Math.Min(dataAt ?? Math.Max(done, RandomAccess.GetLength(source)), count) - done;
                    if (hole > 0)
                    {
                        ZeroRange(image, offset + done, hole, cancellationToken);
                        done += hole;
                        zeroes += hole;
                        reporter.Advance(hole);
                        continue;
                    }

                    if (dataAt is null)
                    {
                        break; // The end of the file.
                    }

                    wanted = (int)Math.Min(wanted, FileExtents.NextHole(source, done) - done);
                }

                int filled = 0;
                while (filled < wanted)
                {
                    // Regular files are read from their byte 0; pipes and sockets from where they stand.
                    Span<byte> free = buffer.AsSpan(filled, wanted - filled);
                    int n = seekable ? RandomAccess.Read(source, free, done + filled) : FileDescriptors.Read(source, free);
                    if (n == 0)
                    {
                        break;
                    }

                    filled += n;
                }

                if (filled == 0)
                {
                    break;
                }

                long written = WriteDetectingZeroes(image, offset + done, buffer.AsSpan(0, filled));
                data += written;
                zeroes += filled - written;

                done += filled;
                reporter.Advance(filled);
                if (filled < wanted)
                {
                    break;
                }
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }

        reporter.Done();
        return new TransferResult(done, data, zeroes);
    }

    /// <summary>Blocks until the writer of a staged source says it is complete (one byte), or throws Cancelled when it gives up (end of file).</summary>
    private static void WaitUntilReady(SafeFileHandle ready, string volumeName)
    {
        Span<byte> signal = stackalloc byte[1];
        if (FileDescriptors.Read(ready, signal) == 0)
        {
            throw new StorageServiceException(StorageErrorKind.Cancelled,
                $"upload to volume '{volumeName}' was given up by its writer before its data was complete: nothing was written");
        }
    }

    /// <summary>Makes a range of the volume read as zeroes, releasing its space where the format allows, in chunks that can be cancelled.</summary>
    private static void ZeroRange(IBlockImage image, long offset, long length, CancellationToken cancellationToken)
    {
        for (long done = 0; done < length;)
        {
            cancellationToken.ThrowIfCancellationRequested();
            long n = Math.Min(WipeChunk, length - done);
            image.WriteZeroes(offset + done, n, unmap: true);
            done += n;
        }
    }

    private static void Write(SafeFileHandle destination, bool seekable, ReadOnlySpan<byte> chunk, long position)
    {
        if (seekable)
        {
            RandomAccess.Write(destination, chunk, position);
        }
        else
        {
            FileDescriptors.WriteAll(destination, chunk);
        }
    }

    /// <summary>
    /// Writes <paramref name="chunk"/> in runs of <see cref="ZeroBlock"/>-byte blocks: all-zero runs become
    /// zero ranges (so the image stays sparse), the rest is written as data. Returns the data bytes written.
    /// </summary>
    private static long WriteDetectingZeroes(IBlockImage image, long offset, ReadOnlySpan<byte> chunk)
    {
        long data = 0;
        int start = 0;
        while (start < chunk.Length)
        {
            bool zero = IsZeroBlock(chunk, start);
            int end = start;
            while (end < chunk.Length && IsZeroBlock(chunk, end) == zero)
            {
                end = Math.Min(chunk.Length, end + ZeroBlock);
            }

            if (zero)
            {
                image.WriteZeroes(offset + start, end - start, unmap: true);
            }
            else
            {
                image.Write(offset + start, chunk[start..end]);
                data += end - start;
            }

            start = end;
        }

        return data;

        static bool IsZeroBlock(ReadOnlySpan<byte> chunk, int at) =>
            !chunk.Slice(at, Math.Min(ZeroBlock, chunk.Length - at)).ContainsAnyExcept((byte)0);
    }

    /// <summary>
    /// How many bytes from <paramref name="offset"/> share one state through the whole chain, and whether they
    /// read as zeroes: the first layer that allocates a run decides it; a layer without backing, or whose
    /// backing ends before the run, reads as zeroes there.
    /// </summary>
    internal static (long Length, bool Zero) ChainExtent(IBlockImage top, long offset, long length)
    {
        IBlockImage? layer = top;
        while (layer is not null)
        {
            BlockStatus status = layer.GetBlockStatus(offset, length);
            if (status.Length <= 0)
            {
                return (length, false); // No answer: treat as data so nothing is lost.
            }

            length = status.Length;
            if (status.Allocated)
            {
                return (length, status.Zero && !status.Data);
            }

            IBlockImage? backing = layer.Backing;
            if (backing is null || offset >= backing.VirtualSize)
            {
                return (length, true);
            }

            length = Math.Min(length, backing.VirtualSize - offset);
            layer = backing;
        }

        return (length, true);
    }

    /// <summary>
    /// Empties a regular file and sets its length, so the holes a sparse download skips read as zeroes.
    /// False when the handle cannot be truncated (a block device): then every byte is written.
    /// </summary>
    private static bool TryResetLength(SafeFileHandle handle, long length)
    {
        try
        {
            RandomAccess.SetLength(handle, 0);
            RandomAccess.SetLength(handle, length);
            return true;
        }
        catch (IOException)
        {
            return false;
        }
    }

    /// <summary>Turns byte counts into <see cref="OperationProgress"/> reports, at most about a hundred per operation.</summary>
    private sealed class Reporter(IProgress<OperationProgress>? target, string operation, string volume, long total)
    {
        private long _done;
        private long _lastReported = -1;

        public void Advance(long bytes)
        {
            _done += bytes;
            if (target is not null && total > 0 && (_done - _lastReported) * 100 >= total)
            {
                _lastReported = _done;
                target.Report(new OperationProgress(operation, volume, Math.Min(1.0, (double)_done / total)));
            }
        }

        public void Done() => target?.Report(new OperationProgress(operation, volume, 1.0));
    }
}
