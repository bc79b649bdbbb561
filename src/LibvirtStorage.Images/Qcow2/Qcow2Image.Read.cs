using System.Runtime.CompilerServices;

namespace LibvirtStorage.Images.Qcow2;

/// <summary>What one guest subcluster (or cluster) maps to.</summary>
internal enum ClusterKind : byte
{
    /// <summary>Not allocated here: read the backing image (or zeroes).</summary>
    Unallocated,
    /// <summary>Reads as zeroes.</summary>
    Zero,
    /// <summary>Plain data at a host offset.</summary>
    Data,
    /// <summary>A compressed cluster.</summary>
    Compressed,
    /// <summary>Reads as zeroes, with a host cluster still allocated (QEMU's ZERO_ALLOC).</summary>
    ZeroAllocated,
    /// <summary>An unallocated subcluster of an allocated cluster (QEMU's UNALLOCATED_ALLOC).</summary>
    UnallocatedAllocated,
}

/// <summary>A run of guest bytes with one kind; for Data, contiguous in the file.</summary>
internal readonly record struct ClusterRun(ClusterKind Kind, long Length, long Host, ulong Entry);

public sealed partial class Qcow2Image
{
    [ThreadStatic]
    private static byte[]? t_compressed;

    [ThreadStatic]
    private static byte[]? t_decompressed;

    /// <inheritdoc/>
    public void Read(long offset, Span<byte> destination)
    {
        CheckRange(offset, destination.Length);
        while (!destination.IsEmpty)
        {
            ClusterRun run;
            lock (_meta)
            {
                run = MapLocked(offset, destination.Length);
                Interlocked.Increment(ref _ioInFlight);
            }

            Span<byte> part = destination[..(int)run.Length];
            try
            {
                switch (run.Kind)
                {
                    case ClusterKind.Data:
                        _file.Read(part, run.Host);
                        break;
                    case ClusterKind.Zero or ClusterKind.ZeroAllocated:
                        part.Clear();
                        break;
                    case ClusterKind.Unallocated or ClusterKind.UnallocatedAllocated:
                        ReadBacking(offset, part);
                        break;
                    default:
                        ReadCompressed(run.Entry, _layout.OffsetInCluster(offset), part);
                        break;
                }
            }
            finally
            {
                Interlocked.Decrement(ref _ioInFlight);
            }

            offset += run.Length;
            destination = destination[(int)run.Length..];
        }
    }

    /// <inheritdoc/>
    /// <remarks>
    /// Reports what QEMU's qcow2_co_block_status reports: host offsets for data and for clusters that stay
    /// allocated while reading as zeroes or as the backing file, and — for images that look
    /// metadata-preallocated — holes of the file under data clusters as zeroes.
    /// </remarks>
    public BlockStatus GetBlockStatus(long offset, long length)
    {
        CheckRange(offset, 0);
        length = Math.Min(length, VirtualSize - offset);
        if (length <= 0)
        {
            return new BlockStatus(0, false, false, false, null);
        }

        ClusterRun run;
        lock (_meta)
        {
            run = MapLocked(offset, length);
        }

        switch (run.Kind)
        {
            case ClusterKind.Data when IsMetadataPreallocated():
                return DataOverFileHoles(run);
            case ClusterKind.Data:
                return new BlockStatus(run.Length, true, false, true, run.Host);
            case ClusterKind.Zero:
                return new BlockStatus(run.Length, true, true, false, null);
            case ClusterKind.ZeroAllocated:
                return new BlockStatus(run.Length, true, true, false, run.Host);
            case ClusterKind.Compressed:
                return new BlockStatus(run.Length, true, false, true, null);
            case ClusterKind.UnallocatedAllocated:
                return new BlockStatus(run.Length, false, false, false, run.Host);
            default:
                return new BlockStatus(run.Length, false, false, false, null);
        }
    }

    /// <summary>A data run split at the file's holes; a hole reads as zeroes (QEMU's BDRV_BLOCK_RECURSE).</summary>
    private BlockStatus DataOverFileHoles(ClusterRun run)
    {
        long data = _file.SeekData(run.Host);
        if (data < 0 || data >= run.Host + run.Length)
        {
            return new BlockStatus(run.Length, true, true, true, run.Host);
        }

        if (data > run.Host)
        {
            return new BlockStatus(data - run.Host, true, true, true, run.Host);
        }

        long hole = Math.Min(_file.SeekHole(run.Host), run.Host + run.Length);
        return new BlockStatus(Math.Max(hole - run.Host, 1), true, false, true, run.Host);
    }

    /// <summary>
    /// QEMU's qcow2_detect_metadata_preallocation: more clusters carry a refcount than the file has
    /// blocks allocated (by a margin of 10%, at least 2). Computed once, on first use.
    /// </summary>
    private bool IsMetadataPreallocated()
    {
        if (_metadataPreallocated is { } known)
        {
            return known;
        }

        long allocatedClusters = Native.FileStat.AllocatedBytes(_file.Path) / _layout.ClusterSize;
        long threshold = Math.Max(allocatedClusters * 10 / 9, allocatedClusters + 2);
        long fileClusters = _file.Length / _layout.ClusterSize;
        bool result = false;
        lock (_meta)
        {
            for (long c = 0; c < fileClusters && !result; c++)
            {
                if (_refcounts.Get(c) > 0 && --threshold == 0)
                {
                    result = true;
                }
            }
        }

        _metadataPreallocated = result;
        return result;
    }

    /// <summary>
    /// Maps guest bytes from <paramref name="offset"/>: the longest run (up to <paramref name="maxLength"/>,
    /// within one L2 table) of one kind and, for data, contiguous in the file. Caller holds <c>_meta</c>.
    /// </summary>
    private ClusterRun MapLocked(long offset, long maxLength)
    {
        long l1Index = _layout.L1Index(offset);
        long tableEnd = (l1Index + 1) * _layout.BytesPerL2;
        long limit = Math.Min(offset + maxLength, tableEnd);
        ulong l2Offset = l1Index < _l1.Length ? _l1[l1Index] & Qcow2Layout.OffsetMask : 0;
        if (l2Offset == 0)
        {
            return new ClusterRun(ClusterKind.Unallocated, limit - offset, 0, 0);
        }

        byte[] table = GetL2Locked(l2Offset);
        ClusterKind kind = Classify(table, offset, out long host, out ulong entry);
        long unit = _layout.SubclusterSize;
        long pos = (offset | (unit - 1)) + 1;
        if (kind == ClusterKind.Compressed)
        {
            long clusterEnd = (offset | (long)(_layout.ClusterSize - 1)) + 1;
            return new ClusterRun(kind, Math.Min(clusterEnd, limit) - offset, 0, entry);
        }

        bool hasHost = kind is ClusterKind.Data or ClusterKind.ZeroAllocated or ClusterKind.UnallocatedAllocated;
        while (pos < limit)
        {
            ClusterKind next = Classify(table, pos, out long nextHost, out _);
            if (next != kind || (hasHost && nextHost != host + (pos - offset)))
            {
                break;
            }

            pos += unit;
        }

        return new ClusterRun(kind, Math.Min(pos, limit) - offset, host, entry);
    }

    /// <summary>Interprets the L2 entry (and subcluster bitmap) covering guest <paramref name="offset"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ClusterKind Classify(byte[] table, long offset, out long host, out ulong entry)
    {
        int index = _layout.L2Index(offset);
        host = 0;
        if (!_layout.ExtendedL2)
        {
            entry = Qcow2TableCache.ReadEntry(table, index);
            if ((entry & Qcow2Layout.FlagCompressed) != 0)
            {
                return ClusterKind.Compressed;
            }

            ulong off = entry & Qcow2Layout.OffsetMask;
            if ((entry & Qcow2Layout.FlagZero) != 0 && _layout.Version >= 3)
            {
                if (off == 0)
                {
                    return ClusterKind.Zero;
                }

                host = CheckDataOffset(off, offset) + _layout.OffsetInCluster(offset);
                return ClusterKind.ZeroAllocated;
            }

            if (off == 0)
            {
                return ClusterKind.Unallocated;
            }

            host = CheckDataOffset(off, offset) + _layout.OffsetInCluster(offset);
            return ClusterKind.Data;
        }

        entry = Qcow2TableCache.ReadEntry(table, index * 2);
        if ((entry & Qcow2Layout.FlagCompressed) != 0)
        {
            return ClusterKind.Compressed;
        }

        ulong bitmap = Qcow2TableCache.ReadEntry(table, (index * 2) + 1);
        int sub = (int)((offset >> _layout.SubclusterBits) & (Qcow2Layout.Subclusters - 1));
        bool allocated = ((bitmap >> sub) & 1) != 0;
        bool zero = ((bitmap >> (32 + sub)) & 1) != 0;
        ulong clusterOffset = entry & Qcow2Layout.OffsetMask;
        if (zero && allocated)
        {
            SignalCorruption(null, $"subcluster {sub} of guest offset 0x{offset:x} is both allocated and zero");
        }

        if (clusterOffset == 0)
        {
            if (allocated)
            {
                SignalCorruption(null, $"subcluster {sub} of guest offset 0x{offset:x} is allocated in an unallocated cluster");
            }

            return zero ? ClusterKind.Zero : ClusterKind.Unallocated;
        }

        host = CheckDataOffset(clusterOffset, offset) + _layout.OffsetInCluster(offset);
        return zero ? ClusterKind.ZeroAllocated : allocated ? ClusterKind.Data : ClusterKind.UnallocatedAllocated;
    }

    private long CheckDataOffset(ulong host, long guest)
    {
        if (!_layout.IsClusterAligned(host))
        {
            SignalCorruption((long)host, $"data cluster for guest offset 0x{guest:x} is not cluster aligned");
        }

        return (long)host;
    }

    /// <summary>An L2 table from the cache, validated before it is loaded. Caller holds <c>_meta</c>.</summary>
    private byte[] GetL2Locked(ulong offset)
    {
        // HighWater starts at the file's length and grows with every allocation: no fstat per request
        if (!_layout.IsClusterAligned(offset) || offset < (ulong)_layout.ClusterSize
            || offset >= (ulong)(_refcounts.HighWater << _layout.ClusterBits))
        {
            SignalCorruption((long)Math.Min(offset, long.MaxValue), $"L2 table offset 0x{offset:x} is unaligned, inside the header or past the end of the file");
        }

        return _l2Cache.Get((long)offset);
    }

    private void ReadBacking(long offset, Span<byte> destination)
    {
        IBlockImage? backing = _backing;
        long available = backing is null ? 0 : Math.Clamp(backing.VirtualSize - offset, 0, destination.Length);
        if (available > 0)
        {
            backing!.Read(offset, destination[..(int)available]);
        }

        destination[(int)available..].Clear();
    }

    private void ReadCompressed(ulong entry, int offsetInCluster, Span<byte> destination)
    {
        (long host, int size) = _layout.CompressedExtent(entry);
        if (host <= 0 || host + size > _file.Length + 512 || size > _layout.ClusterSize + 1024)
        {
            throw new ImageException(ErrorKind.Corrupt, $"compressed cluster at 0x{host:x} ({size} bytes) lies outside the file", Path, host);
        }

        byte[] compressed = t_compressed is { } c && c.Length >= size ? c : (t_compressed = new byte[Math.Max(size, _layout.ClusterSize + 1024)]);
        byte[] plain = t_decompressed is { } p && p.Length >= _layout.ClusterSize ? p : (t_decompressed = new byte[_layout.ClusterSize]);
        _file.Read(compressed.AsSpan(0, size), host);
        try
        {
            Qcow2Compression.Decompress(_header.CompressionType, compressed.AsSpan(0, size), plain.AsSpan(0, _layout.ClusterSize));
        }
        catch (ImageException e) when (e.Path is null)
        {
            throw new ImageException(e.Kind, $"compressed cluster at 0x{host:x} ({size} bytes): {e.Message}", Path, host, e);
        }
        plain.AsSpan(offsetInCluster, destination.Length).CopyTo(destination);
    }
}
