using System.Buffers;

namespace LibvirtStorage.Images.Qcow2;

public sealed partial class Qcow2Image
{
    /// <summary>How an allocating write changes one guest cluster.</summary>
    private enum WritePlan : byte
    {
        /// <summary>The cluster is ours already: write in place (subclusters may need copy-on-write).</summary>
        InPlace,
        /// <summary>A new host cluster; unallocated subclusters outside the write stay unallocated.</summary>
        NewPartial,
        /// <summary>A new host cluster replacing a shared or compressed one: copy the whole cluster.</summary>
        NewFull,
    }

    /// <inheritdoc/>
    public void Write(long offset, ReadOnlySpan<byte> source)
    {
        CheckWritable();
        CheckRange(offset, source.Length);
        while (!source.IsEmpty)
        {
            int n = WriteSome(offset, source);
            offset += n;
            source = source[n..];
        }
    }

    /// <summary>Writes a prefix of <paramref name="source"/>: a run of owned clusters in place, or one cluster with allocation.</summary>
    private int WriteSome(long offset, ReadOnlySpan<byte> source)
    {
        long host, length;
        lock (_meta)
        {
            CheckWritable();
            length = OverwritableRunLocked(offset, source.Length, out host);
            if (length > 0)
            {
                Interlocked.Increment(ref _ioInFlight);
            }
        }

        if (length > 0)
        {
            try
            {
                _file.Write(source[..(int)length], host);
            }
            finally
            {
                Interlocked.Decrement(ref _ioInFlight);
            }

            return (int)length;
        }

        if (_layout.OffsetInCluster(offset) == 0 && source.Length >= 2 * _layout.ClusterSize)
        {
            int written = WriteWholeClusters(offset, source);
            if (written > 0)
            {
                return written;
            }
        }

        int n = Math.Min(source.Length, _layout.ClusterSize - _layout.OffsetInCluster(offset));
        WriteAllocating(offset, source[..n]);
        return n;
    }

    /// <summary>
    /// Large aligned writes: whole clusters need no copy-on-write, so a run of them (within one L2 table)
    /// gets one contiguous allocation, one data write and one metadata update. Returns 0 when the first
    /// cluster does not qualify.
    /// </summary>
    private int WriteWholeClusters(long offset, ReadOnlySpan<byte> source)
    {
        long first = _layout.ClusterIndex(offset);
        long count;
        long host;
        lock (_meta)
        {
            CheckWritable();
            long max = Math.Min(source.Length >> _layout.ClusterBits, _layout.L2Entries - _layout.L2Index(offset));
            SetDirtyBitLocked();
            byte[] table = GetL2ForWriteLocked(offset, out _);
            int index = _layout.L2Index(offset);
            count = 0;
            while (count < max && !_allocating.Contains(first + count) && !IsOwnedData(table, index + (int)count))
            {
                count++;
            }

            if (count < 2)
            {
                return 0;
            }

            host = _refcounts.Allocate(count);
            CheckDataOverlap(host, count << _layout.ClusterBits);
            for (long i = 0; i < count; i++)
            {
                _allocating.Add(first + i);
            }
        }

        int length = (int)(count << _layout.ClusterBits);
        try
        {
            _file.Write(source[..length], host);
        }
        catch
        {
            lock (_meta)
            {
                _deferredFrees.Add((host >> _layout.ClusterBits, count));
                ReleaseAllocating(first, count);
            }

            throw;
        }

        lock (_meta)
        {
            try
            {
                byte[] table = GetL2ForWriteLocked(offset, out long l2Offset);
                int index = _layout.L2Index(offset);
                for (int i = 0; i < count; i++)
                {
                    int slot = _layout.ExtendedL2 ? (index + i) * 2 : index + i;
                    ulong old = Qcow2TableCache.ReadEntry(table, slot);
                    if ((old & (Qcow2Layout.OffsetMask | Qcow2Layout.FlagCompressed)) != 0)
                    {
                        DeferFreeEntry(old);
                    }

                    Qcow2TableCache.WriteEntry(table, slot, (ulong)(host + ((long)i << _layout.ClusterBits)) | Qcow2Layout.FlagCopied);
                    if (_layout.ExtendedL2)
                    {
                        Qcow2TableCache.WriteEntry(table, slot + 1, Qcow2Layout.AllAllocBits);
                    }
                }

                _l2Cache.MarkDirty(l2Offset);
            }
            finally
            {
                ReleaseAllocating(first, count);
            }
        }

        return length;
    }

    private void ReleaseAllocating(long first, long count)
    {
        for (long i = 0; i < count; i++)
        {
            _allocating.Remove(first + i);
        }

        Monitor.PulseAll(_meta);
    }

    /// <summary>True for an uncompressed data cluster this image owns (written in place, never reallocated).</summary>
    private bool IsOwnedData(byte[] table, int index)
    {
        ulong entry = Qcow2TableCache.ReadEntry(table, _layout.ExtendedL2 ? index * 2 : index);
        return (entry & Qcow2Layout.FlagCompressed) == 0 && (entry & Qcow2Layout.OffsetMask) != 0
            && (entry & Qcow2Layout.FlagCopied) != 0;
    }

    /// <summary>
    /// The length of the longest prefix of [offset, offset+max) that lies in clusters this image owns
    /// (COPIED, uncompressed, every touched subcluster allocated) and is contiguous in the file.
    /// </summary>
    private long OverwritableRunLocked(long offset, long max, out long host)
    {
        host = -1;
        long pos = offset, end = offset + max;
        while (pos < end)
        {
            long cluster = _layout.ClusterIndex(pos);
            if (_allocating.Count > 0 && _allocating.Contains(cluster))
            {
                break;
            }

            long l1Index = _layout.L1Index(pos);
            ulong l2Offset = _l1[l1Index] & Qcow2Layout.OffsetMask;
            if (l2Offset == 0)
            {
                break;
            }

            byte[] table = GetL2Locked(l2Offset);
            int index = _layout.L2Index(pos);
            ulong entry = Qcow2TableCache.ReadEntry(table, _layout.ExtendedL2 ? index * 2 : index);
            ulong clusterHost = entry & Qcow2Layout.OffsetMask;
            if ((entry & (Qcow2Layout.FlagCopied | Qcow2Layout.FlagCompressed)) != Qcow2Layout.FlagCopied || clusterHost == 0)
            {
                break;
            }

            int inCluster = _layout.OffsetInCluster(pos);
            long chunk = Math.Min(end - pos, _layout.ClusterSize - inCluster);
            if (_layout.ExtendedL2)
            {
                ulong bitmap = Qcow2TableCache.ReadEntry(table, (index * 2) + 1);
                ulong touched = SubclusterMask(inCluster, (int)chunk);
                if ((bitmap & touched) != touched)
                {
                    break;
                }
            }
            else if ((entry & Qcow2Layout.FlagZero) != 0)
            {
                break;
            }

            long h = CheckDataOffset(clusterHost, pos) + inCluster;
            if (host < 0)
            {
                CheckDataOverlap(h, chunk);
                host = h;
            }
            else if (h != host + (pos - offset))
            {
                break;
            }
            else
            {
                CheckDataOverlap(h, chunk);
            }

            pos += chunk;
        }

        return pos - offset;
    }

    /// <summary>
    /// Writes within one guest cluster that needs allocation or copy-on-write. The new data and the
    /// copied-on-write parts go to the host cluster first; the L2 entry is switched afterwards, so a
    /// concurrent reader sees either the old or the new contents, never a half-written cluster.
    /// </summary>
    private void WriteAllocating(long offset, ReadOnlySpan<byte> data)
    {
        long cluster = _layout.ClusterIndex(offset);
        long clusterStart = cluster << _layout.ClusterBits;
        int start = _layout.OffsetInCluster(offset);
        int end = start + data.Length;
        WritePlan plan;
        long host;
        bool fresh = false;
        bool oldIsZero;
        ulong freeEntry = 0;
        ulong bitmap = 0;
        lock (_meta)
        {
            while (_allocating.Contains(cluster))
            {
                Monitor.Wait(_meta);
            }

            CheckWritable();
            SetDirtyBitLocked();
            byte[] table = GetL2ForWriteLocked(offset, out _);
            int index = _layout.L2Index(offset);
            ulong entry = Qcow2TableCache.ReadEntry(table, _layout.ExtendedL2 ? index * 2 : index);
            ulong oldHost = entry & Qcow2Layout.OffsetMask;
            bool compressed = (entry & Qcow2Layout.FlagCompressed) != 0;
            bool zeroFlag = !_layout.ExtendedL2 && (entry & Qcow2Layout.FlagZero) != 0;
            bool owned = !compressed && oldHost != 0 && OwnsCluster(table, index, entry);
            bitmap = _layout.ExtendedL2 ? Qcow2TableCache.ReadEntry(table, (index * 2) + 1) : 0;
            if (owned && !zeroFlag)
            {
                plan = WritePlan.InPlace;
                host = CheckDataOffset(oldHost, offset);
                CheckDataOverlap(host, _layout.ClusterSize);
                oldIsZero = false;
            }
            else
            {
                // a shared or compressed cluster is replaced whole; an empty or zero one only where written
                plan = compressed || (oldHost != 0 && !zeroFlag) ? WritePlan.NewFull : WritePlan.NewPartial;
                freeEntry = compressed || oldHost != 0 ? entry : 0;
                oldIsZero = zeroFlag || (!compressed && oldHost == 0 && _backing is null && !_layout.ExtendedL2);
                long before = _refcounts.HighWater;
                host = _refcounts.Allocate(1);
                fresh = (host >> _layout.ClusterBits) >= before;
                CheckDataOverlap(host, _layout.ClusterSize);
            }

            _allocating.Add(cluster);
        }

        try
        {
            WriteClusterContents(plan, clusterStart, host, start, data, fresh && oldIsZero, bitmap);
        }
        catch
        {
            lock (_meta)
            {
                if (plan != WritePlan.InPlace)
                {
                    _deferredFrees.Add((host >> _layout.ClusterBits, 1));
                }

                _allocating.Remove(cluster);
                Monitor.PulseAll(_meta);
            }

            throw;
        }

        lock (_meta)
        {
            try
            {
                CommitClusterWrite(plan, offset, host, start, end, freeEntry);
            }
            finally
            {
                _allocating.Remove(cluster);
                Monitor.PulseAll(_meta);
            }
        }
    }

    /// <summary>True when this image holds the only reference to the cluster (COPIED, or refcount 1).</summary>
    private bool OwnsCluster(byte[] table, int index, ulong entry)
    {
        if ((entry & Qcow2Layout.FlagCopied) != 0)
        {
            return true;
        }

        ulong host = entry & Qcow2Layout.OffsetMask;
        if (_refcounts.Get((long)(host >> _layout.ClusterBits)) != 1)
        {
            return false;
        }

        // a lone reference without the flag (left by snapshot deletion): set it, as QEMU's repair would
        Qcow2TableCache.WriteEntry(table, _layout.ExtendedL2 ? index * 2 : index, entry | Qcow2Layout.FlagCopied);
        return true;
    }

    /// <summary>
    /// Puts the new data, plus what copy-on-write must preserve around it, into the host cluster.
    /// <paramref name="surroundIsZero"/>: the cluster is new at the end of the file and the guest saw zeroes there.
    /// </summary>
    private void WriteClusterContents(WritePlan plan, long clusterStart, long host, int start, ReadOnlySpan<byte> data, bool surroundIsZero, ulong bitmap)
    {
        int end = start + data.Length;
        int cowStart, cowEnd;
        switch (plan)
        {
            case WritePlan.NewFull:
                (cowStart, cowEnd) = (0, _layout.ClusterSize);
                break;
            case WritePlan.NewPartial when !_layout.ExtendedL2:
                (cowStart, cowEnd) = (0, _layout.ClusterSize);
                break;
            default:
                // subclusters: only the touched subclusters that were not allocated need their edges filled;
                // in place without subclusters nothing needs filling
                (cowStart, cowEnd) = _layout.ExtendedL2 ? SubclusterEdges(start, end, bitmap) : (start, end);
                break;
        }

        // A cluster past everything ever written reads as zeroes already: no need to write them out.
        if ((cowStart == start && cowEnd == end) || surroundIsZero)
        {
            _file.Write(data, host + start);
            return;
        }

        byte[] buffer = ArrayPool<byte>.Shared.Rent(_layout.ClusterSize);
        try
        {
            Span<byte> span = buffer.AsSpan(cowStart, cowEnd - cowStart);
            ReadOldContents(clusterStart + cowStart, buffer.AsSpan(cowStart, start - cowStart));
            ReadOldContents(clusterStart + end, buffer.AsSpan(end, cowEnd - end));

            data.CopyTo(buffer.AsSpan(start));
            _file.Write(span, host + cowStart);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    /// <summary>
    /// The guest's current contents of a range (through the still unchanged mapping); bytes past the
    /// virtual size (the tail of the last cluster) are zeroes.
    /// </summary>
    private void ReadOldContents(long guestOffset, Span<byte> destination)
    {
        if (destination.IsEmpty)
        {
            return;
        }

        long inside = Math.Clamp(VirtualSize - guestOffset, 0, destination.Length);
        if (inside > 0)
        {
            Read(guestOffset, destination[..(int)inside]);
        }

        destination[(int)inside..].Clear();
    }

    /// <summary>
    /// With subclusters, the byte range to write: widened to subcluster boundaries at either end whose
    /// subcluster is not allocated yet (its untouched part must be filled from the old contents). An
    /// allocated edge subcluster is left alone, since a concurrent in-place writer may be writing it.
    /// </summary>
    private (int Start, int End) SubclusterEdges(int start, int end, ulong bitmap)
    {
        int first = start >> _layout.SubclusterBits;
        int last = (end - 1) >> _layout.SubclusterBits;
        int cowStart = ((bitmap >> first) & 1) != 0 ? start : first << _layout.SubclusterBits;
        int cowEnd = ((bitmap >> last) & 1) != 0 ? end : Math.Min((last + 1) << _layout.SubclusterBits, _layout.ClusterSize);
        return (cowStart, cowEnd);
    }

    /// <summary>Points the L2 entry at the written cluster and releases what it replaced. Caller holds <c>_meta</c>.</summary>
    private void CommitClusterWrite(WritePlan plan, long offset, long host, int start, int end, ulong freeEntry)
    {
        byte[] table = GetL2ForWriteLocked(offset, out long l2Offset);
        int index = _layout.L2Index(offset);
        if (!_layout.ExtendedL2)
        {
            Qcow2TableCache.WriteEntry(table, index, (ulong)host | Qcow2Layout.FlagCopied);
        }
        else
        {
            ulong bitmap = Qcow2TableCache.ReadEntry(table, (index * 2) + 1);
            ulong touched = SubclusterMask(start, end - start);
            bitmap = plan == WritePlan.NewFull ? Qcow2Layout.AllAllocBits : (bitmap | touched) & ~(touched << 32);
            Qcow2TableCache.WriteEntry(table, index * 2, (ulong)host | Qcow2Layout.FlagCopied);
            Qcow2TableCache.WriteEntry(table, (index * 2) + 1, bitmap);
        }

        _l2Cache.MarkDirty(l2Offset);
        if (freeEntry != 0)
        {
            DeferFreeEntry(freeEntry);
        }
    }

    /// <summary>Bits of the subclusters that [start, start+length) touches within a cluster.</summary>
    private ulong SubclusterMask(int start, int length)
    {
        int first = start >> _layout.SubclusterBits;
        int last = (start + length - 1) >> _layout.SubclusterBits;
        int count = last - first + 1;
        ulong bits = count >= 32 ? Qcow2Layout.AllAllocBits : ((1UL << count) - 1);
        return bits << first;
    }

    /// <summary>
    /// The L2 table for guest <paramref name="offset"/>, made exclusively ours: allocated if missing,
    /// copied if shared with a snapshot. Caller holds <c>_meta</c>.
    /// </summary>
    private byte[] GetL2ForWriteLocked(long offset, out long l2Offset)
    {
        long l1Index = _layout.L1Index(offset);
        ulong l1Entry = _l1[l1Index];
        ulong current = l1Entry & Qcow2Layout.OffsetMask;
        if (current == 0)
        {
            l2Offset = _refcounts.Allocate(1);
            _l1[l1Index] = (ulong)l2Offset | Qcow2Layout.FlagCopied;
            _l1Dirty = true;
            return _l2Cache.GetNew(l2Offset);
        }

        CheckMetadataOverlap((long)current, "an L2 table");
        byte[] table = GetL2Locked(current);
        if ((l1Entry & Qcow2Layout.FlagCopied) == 0)
        {
            if (_refcounts.Get((long)(current >> _layout.ClusterBits)) == 1)
            {
                _l1[l1Index] = l1Entry | Qcow2Layout.FlagCopied;
                _l1Dirty = true;
            }
            else
            {
                byte[] copy = (byte[])table.Clone();
                l2Offset = _refcounts.Allocate(1);
                table = _l2Cache.GetNew(l2Offset);
                copy.CopyTo(table, 0);
                _l1[l1Index] = (ulong)l2Offset | Qcow2Layout.FlagCopied;
                _l1Dirty = true;
                _deferredFrees.Add(((long)(current >> _layout.ClusterBits), 1));
                return table;
            }
        }

        l2Offset = (long)current;
        return table;
    }

    /// <summary>Queues the release of what an L2 entry referenced (a data cluster or the clusters of compressed data).</summary>
    private void DeferFreeEntry(ulong entry)
    {
        if ((entry & Qcow2Layout.FlagCompressed) != 0)
        {
            (long host, int size) = _layout.CompressedExtent(entry);
            long first = host >> _layout.ClusterBits;
            long last = (host + size - 1) >> _layout.ClusterBits;
            _deferredFrees.Add((first, last - first + 1));
            return;
        }

        ulong offset = entry & Qcow2Layout.OffsetMask;
        if (offset != 0)
        {
            _deferredFrees.Add(((long)(offset >> _layout.ClusterBits), 1));
        }
    }

    /// <summary>With lazy refcounts, QEMU marks the image dirty before its first change; do the same.</summary>
    private void SetDirtyBitLocked()
    {
        if (_dirtyBitSet || !_header.LazyRefcounts)
        {
            return;
        }

        _header = _header with { IncompatibleFeatures = _header.IncompatibleFeatures | Qcow2Header.IncompatDirty };
        WriteHeaderLocked();
        _dirtyBitSet = true;
    }
}
