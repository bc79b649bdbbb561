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
        /// <summary>The cluster became ours while this write waited: a plain overwrite, no claim needed.</summary>
        Overwrite,
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
        bool oldIsZero = false;
        ulong freeEntry = 0;
        ulong bitmap = 0;
        lock (_meta)
        {
            while (_allocating.Contains(cluster))
            {
                Monitor.Wait(_meta);
            }

            CheckWritable();

            // the allocation this write waited for may have made the cluster ours: then it is a plain
            // overwrite, which needs no exclusive claim (writers queued behind one allocation run in parallel)
            if (OverwritableRunLocked(offset, data.Length, out long inPlace) == data.Length)
            {
                host = inPlace;
                Interlocked.Increment(ref _ioInFlight);
                plan = WritePlan.Overwrite;
                goto Unlocked;
            }

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

    Unlocked:
        if (plan == WritePlan.Overwrite)
        {
            try
            {
                _file.Write(data, host);
            }
            finally
            {
                Interlocked.Decrement(ref _ioInFlight);
            }

            return;
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

}
