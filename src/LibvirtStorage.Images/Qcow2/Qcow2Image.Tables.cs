namespace LibvirtStorage.Images.Qcow2;

/// <summary>Metadata changes shared by the write paths: exclusive L2 tables, deferred frees, the dirty bit.</summary>
public sealed partial class Qcow2Image
{
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
