using System.Buffers.Binary;

namespace LibvirtStorage.Images.Qcow2;

public sealed partial class Qcow2Image
{
    /// <inheritdoc/>
    /// <remarks>
    /// The data sync runs outside the metadata lock, so a guest's flush does not stall the other queues;
    /// the lock is taken only when metadata is dirty (after allocations, discards or resizes).
    /// </remarks>
    public void Flush()
    {
        if (_readOnly)
        {
            if (_corrupt)
            {
                // writes acknowledged earlier cannot be made durable now: say so rather than succeed
                ThrowHelper.Corrupt(Path, null, "the image was found corrupt; earlier writes were not made durable");
            }

            return;
        }

        _file.Sync();
        lock (_meta)
        {
            if (_readOnly || !HasDirtyMetadataLocked())
            {
                return;
            }
        }

        FlushCore(closing: false);
    }

    private bool HasDirtyMetadataLocked() =>
        _l1Dirty || _deferredFrees.Count > 0 || _refcounts.HasDirty || _l2Cache.HasDirty;

    /// <inheritdoc/>
    public void Resize(long newSize)
    {
        CheckWritable();
        if (newSize < 0)
        {
            throw new ImageException(ErrorKind.InvalidArgument, $"size {newSize} is negative", Path);
        }

        long oldSize;
        lock (_meta)
        {
            CheckWritable();
            oldSize = _size;
            if (newSize < oldSize)
            {
                EnsureTailUnusedLocked(newSize);
            }

            long needed = _layout.L1EntriesFor(newSize);
            if (needed * 8 > Qcow2Header.MaxL1Bytes)
            {
                throw new ImageException(ErrorKind.InvalidArgument, $"size {newSize} needs an L1 table larger than qcow2 allows with {_layout.ClusterSize}-byte clusters", Path);
            }

            FlushLocked();
            if (needed > _l1.Length)
            {
                GrowL1Locked((int)needed);
            }

            _header = _header with { Size = (ulong)newSize };
            WriteHeaderLocked();
            Volatile.Write(ref _size, newSize);
        }

        // The grown area must read as zeroes, not as whatever a longer backing file holds there.
        if (newSize > oldSize && _backing is not null && _backing.VirtualSize > oldSize)
        {
            WriteZeroes(oldSize, Math.Min(newSize, _backing.VirtualSize) - oldSize, unmap: false);
        }
    }

    /// <summary>Rewrites the backing file reference in the header; no data moves (that is rebase's job).</summary>
    public void SetBackingFile(string? backingFile, ImageFormat? backingFormat)
    {
        CheckWritable();
        if (backingFile is not null && backingFile.Length == 0)
        {
            backingFile = null;
        }

        lock (_meta)
        {
            CheckWritable();
            FlushLocked();
            _header = _header.WithBacking(backingFile, backingFile is null ? null : backingFormat?.ToName());
            WriteHeaderLocked();
        }
    }

    /// <summary>
    /// Stores one cluster compressed (convert -c). <paramref name="offset"/> is cluster aligned and
    /// <paramref name="data"/> one cluster long (shorter only for the last cluster of the disk). Data that
    /// does not shrink is written uncompressed. Compressed clusters share host clusters, byte-packed.
    /// </summary>
    public void WriteCompressed(long offset, ReadOnlySpan<byte> data)
    {
        CheckWritable();
        CheckRange(offset, data.Length);
        if (_layout.OffsetInCluster(offset) != 0 || data.Length > _layout.ClusterSize
            || (data.Length < _layout.ClusterSize && offset + data.Length != VirtualSize))
        {
            throw new ArgumentException("compressed writes cover exactly one cluster at a cluster boundary");
        }

        byte[] plain = new byte[_layout.ClusterSize];
        data.CopyTo(plain);
        byte[] packed = new byte[_layout.ClusterSize];
        int size = Qcow2Compression.Compress(_header.CompressionType, plain, packed.AsSpan(0, _layout.ClusterSize - 512));
        if (size <= 0)
        {
            Write(offset, data);
            return;
        }

        lock (_meta)
        {
            CheckWritable();
            SetDirtyBitLocked();
            while (_allocating.Contains(_layout.ClusterIndex(offset)))
            {
                Monitor.Wait(_meta);
            }

            long host = AllocateCompressedBytesLocked(size);
            _file.Write(packed.AsSpan(0, size), host);
            byte[] table = GetL2ForWriteLocked(offset, out long l2Offset);
            int index = _layout.L2Index(offset);
            int slot = _layout.ExtendedL2 ? index * 2 : index;
            ulong old = Qcow2TableCache.ReadEntry(table, slot);
            if ((old & (Qcow2Layout.OffsetMask | Qcow2Layout.FlagCompressed)) != 0)
            {
                DeferFreeEntry(old);
            }

            Qcow2TableCache.WriteEntry(table, slot, _layout.CompressedEntry(host, size));
            if (_layout.ExtendedL2)
            {
                Qcow2TableCache.WriteEntry(table, slot + 1, 0);
            }

            _l2Cache.MarkDirty(l2Offset);
        }
    }

    private long _compressedCursor;

    /// <summary>
    /// Byte-granular allocation for compressed data (QEMU's qcow2_alloc_bytes): data is packed after the
    /// previous compressed cluster, spilling into newly allocated clusters when they directly follow;
    /// every host cluster it touches gets one more reference.
    /// </summary>
    private long AllocateCompressedBytesLocked(int size)
    {
        long cursor = _compressedCursor;
        int inCluster = cursor == 0 ? 0 : _layout.OffsetInCluster(cursor);
        long cursorCluster = cursor >> _layout.ClusterBits;
        if (inCluster != 0 && _refcounts.Get(cursorCluster) < _layout.RefcountMax)
        {
            int room = _layout.ClusterSize - inCluster;
            if (size <= room)
            {
                _refcounts.Increment(cursorCluster);
                _compressedCursor = cursor + size;
                return cursor;
            }

            long more = _layout.ClustersFor(size - room);
            long next = _refcounts.Allocate(more);
            if (next == (cursorCluster + 1) << _layout.ClusterBits)
            {
                _refcounts.Increment(cursorCluster);
                _compressedCursor = cursor + size;
                return cursor;
            }

            for (long c = 0; c < more; c++)
            {
                _refcounts.Decrement((next >> _layout.ClusterBits) + c);
            }
        }

        long host = _refcounts.Allocate(_layout.ClustersFor(size));
        _compressedCursor = host + size;
        return host;
    }

    /// <summary>Everything the flush writes, in order; on close also the dirty bit and deferred frees. </summary>
    private void FlushCore(bool closing)
    {
        lock (_meta)
        {
            if (_readOnly)
            {
                return;
            }

            FlushLocked();
            if (closing && _dirtyBitSet)
            {
                _header = _header with { IncompatibleFeatures = _header.IncompatibleFeatures & ~Qcow2Header.IncompatDirty };
                WriteHeaderLocked();
                _dirtyBitSet = false;
            }
        }
    }

    /// <summary>
    /// Data, then refcount blocks and table, then L2 tables, then L1 — each step synced before the next —
    /// then the releases that waited for those tables, written the same way. Caller holds <c>_meta</c>.
    /// </summary>
    private void FlushLocked()
    {
        _file.Sync();
        _refcounts.WriteBack();
        if (_l2Cache.WriteBack())
        {
            _file.Sync();
        }

        if (_l1Dirty)
        {
            WriteL1Locked((long)_header.L1TableOffset, _l1);
            _file.Sync();
            _l1Dirty = false;
        }

        if (_deferredFrees.Count > 0 && Volatile.Read(ref _ioInFlight) == 0)
        {
            foreach ((long cluster, long count) in _deferredFrees)
            {
                for (long c = cluster; c < cluster + count; c++)
                {
                    _refcounts.Decrement(c);
                    if (_refcounts.Get(c) == 0)
                    {
                        _l2Cache.Discard(c << _layout.ClusterBits);
                        _file.PunchHole(c << _layout.ClusterBits, _layout.ClusterSize);
                    }
                }
            }

            _deferredFrees.Clear();
            _compressedCursor = 0;
            _refcounts.WriteBack();
        }
    }

    private void WriteL1Locked(long offset, ulong[] l1)
    {
        var bytes = new byte[l1.Length * 8];
        for (int i = 0; i < l1.Length; i++)
        {
            BinaryPrimitives.WriteUInt64BigEndian(bytes.AsSpan(i * 8), l1[i]);
        }

        _file.Write(bytes, offset);
    }

    /// <summary>Moves the L1 table to a larger one: write the new table, sync, point the header at it, free the old.</summary>
    private void GrowL1Locked(int entries)
    {
        long clusters = _layout.ClustersFor(entries * 8L);
        long offset = _refcounts.Allocate(clusters);
        _refcounts.WriteBack();
        var l1 = new ulong[entries];
        _l1.CopyTo(l1, 0);
        var padded = new ulong[clusters * _layout.ClusterSize / 8];
        l1.CopyTo(padded, 0);
        WriteL1Locked(offset, padded);
        _file.Sync();
        long oldOffset = (long)_header.L1TableOffset;
        long oldClusters = _layout.ClustersFor(_l1.Length * 8L);
        _header = _header with { L1TableOffset = (ulong)offset, L1Size = (uint)entries };
        WriteHeaderLocked();
        _l1 = l1;
        if (oldOffset != 0 && _l1.Length > 0 && oldClusters > 0)
        {
            _deferredFrees.Add((oldOffset >> _layout.ClusterBits, oldClusters));
        }
    }

    /// <summary>Refuses a shrink that would cut off allocated clusters (qemu-img resize --shrink discards them; we do not).</summary>
    private void EnsureTailUnusedLocked(long newSize)
    {
        long firstCut = _layout.ClustersFor(newSize);
        long clusters = _layout.ClustersFor(_size);
        for (long c = firstCut; c < clusters; c++)
        {
            long guest = c << _layout.ClusterBits;
            long l1Index = _layout.L1Index(guest);
            ulong l2 = _l1[l1Index] & Qcow2Layout.OffsetMask;
            if (l2 == 0)
            {
                c = ((l1Index + 1) << _layout.L2Bits) - 1;
                continue;
            }

            byte[] table = GetL2Locked(l2);
            int index = _layout.L2Index(guest);
            bool used = _layout.ExtendedL2
                ? (Qcow2TableCache.ReadEntry(table, index * 2) | Qcow2TableCache.ReadEntry(table, (index * 2) + 1)) != 0
                : Qcow2TableCache.ReadEntry(table, index) != 0;
            if (used)
            {
                throw new ImageException(ErrorKind.InvalidArgument, $"cannot shrink to {newSize} bytes: data is allocated at offset {guest}; discard it first", Path);
            }
        }
    }
}
