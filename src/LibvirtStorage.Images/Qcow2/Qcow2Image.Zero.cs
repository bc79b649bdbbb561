namespace LibvirtStorage.Images.Qcow2;

public sealed partial class Qcow2Image
{
    /// <inheritdoc/>
    public void WriteZeroes(long offset, long length, bool unmap)
    {
        CheckWritable();
        CheckRange(offset, length);
        ZeroOrDiscard(offset, length, unmap, discard: false);
    }

    /// <inheritdoc/>
    public void Discard(long offset, long length)
    {
        CheckWritable();
        CheckRange(offset, length);
        ZeroOrDiscard(offset, length, unmap: true, discard: true);
    }

    /// <summary>
    /// Splits the range into whole clusters (or whole subclusters), handled in the L2 tables, and partial
    /// edges: written as zeroes for write-zeroes, left alone for discard (whose contents are unspecified).
    /// A range that ends at the end of the disk covers its last, partial cluster whole.
    /// </summary>
    private void ZeroOrDiscard(long offset, long length, bool unmap, bool discard)
    {
        long end = offset + length;
        long unit = _layout.ExtendedL2 && !discard ? _layout.SubclusterSize : _layout.ClusterSize;
        long alignedStart = (offset + unit - 1) / unit * unit;
        long alignedEnd = end == VirtualSize ? (end + unit - 1) / unit * unit : end / unit * unit;
        if (alignedStart >= alignedEnd)
        {
            if (!discard)
            {
                WriteZeroBytes(offset, length);
            }

            return;
        }

        if (!discard)
        {
            WriteZeroBytes(offset, alignedStart - offset);
            WriteZeroBytes(alignedEnd, Math.Min(end, VirtualSize) - Math.Min(alignedEnd, end));
        }

        long pos = alignedStart;
        while (pos < alignedEnd)
        {
            long clusterEnd = (pos | (long)(_layout.ClusterSize - 1)) + 1;
            long chunkEnd = Math.Min(clusterEnd, alignedEnd);
            bool handled;
            lock (_meta)
            {
                CheckWritable();
                while (_allocating.Contains(_layout.ClusterIndex(pos)))
                {
                    Monitor.Wait(_meta);
                }

                SetDirtyBitLocked();
                handled = ZeroClusterLocked(pos, (int)(chunkEnd - pos), unmap, discard);
            }

            if (!handled)
            {
                // qcow2 v2 has no zero flag: zeroes over a backing file (or kept allocation) are written out
                WriteZeroBytes(pos, Math.Min(chunkEnd, VirtualSize) - pos);
            }

            pos = chunkEnd;
        }
    }

    /// <summary>
    /// Makes [offset, offset+length) of one cluster read as zeroes (or, for discard, releases it) by
    /// changing its L2 entry. Returns false when only writing zeroes can do it (v2 over a backing file).
    /// Caller holds <c>_meta</c>.
    /// </summary>
    private bool ZeroClusterLocked(long offset, int length, bool unmap, bool discard)
    {
        bool hasZeroFlag = _layout.Version >= 3;
        bool needsZero = !discard && (_backing is not null || !hasZeroFlag);
        long l1Index = _layout.L1Index(offset);
        if ((_l1[l1Index] & Qcow2Layout.OffsetMask) == 0 && (discard || _backing is null))
        {
            return true; // nothing allocated and nothing underneath: already reads as zeroes (or discarded)
        }

        if (!hasZeroFlag && needsZero && _backing is not null)
        {
            return false;
        }

        byte[] table = GetL2ForWriteLocked(offset, out long l2Offset);
        int index = _layout.L2Index(offset);
        ulong entry = Qcow2TableCache.ReadEntry(table, _layout.ExtendedL2 ? index * 2 : index);
        ulong host = entry & Qcow2Layout.OffsetMask;
        bool compressed = (entry & Qcow2Layout.FlagCompressed) != 0;
        bool owned = !compressed && host != 0 && OwnsCluster(table, index, entry);

        if (_layout.ExtendedL2)
        {
            ulong bitmap = Qcow2TableCache.ReadEntry(table, (index * 2) + 1);
            ulong touched = SubclusterMask(_layout.OffsetInCluster(offset), length);
            bool whole = touched == Qcow2Layout.AllAllocBits;
            if (compressed && !whole)
            {
                return false; // part of a compressed cluster: write zeroes through copy-on-write
            }

            ulong zeroBits = discard && _backing is null ? 0 : touched << 32;
            if (whole && (unmap || !owned))
            {
                if (host != 0 || compressed)
                {
                    DeferFreeEntry(entry);
                }

                Qcow2TableCache.WriteEntry(table, index * 2, 0);
                Qcow2TableCache.WriteEntry(table, (index * 2) + 1, zeroBits);
            }
            else
            {
                if (compressed)
                {
                    DeferFreeEntry(entry);
                    Qcow2TableCache.WriteEntry(table, index * 2, 0);
                    bitmap = 0;
                }

                Qcow2TableCache.WriteEntry(table, (index * 2) + 1, (bitmap & ~touched & ~(touched << 32)) | zeroBits);
            }

            _l2Cache.MarkDirty(l2Offset);
            return true;
        }

        bool keepAllocation = !unmap && owned && hasZeroFlag && !discard;
        ulong newEntry;
        if (discard)
        {
            newEntry = hasZeroFlag && _backing is not null ? Qcow2Layout.FlagZero : 0;
        }
        else if (hasZeroFlag)
        {
            newEntry = keepAllocation ? host | Qcow2Layout.FlagCopied | Qcow2Layout.FlagZero : Qcow2Layout.FlagZero;
        }
        else
        {
            newEntry = 0; // v2 without backing: unallocated reads as zeroes
        }

        if (!keepAllocation && (host != 0 || compressed))
        {
            DeferFreeEntry(entry);
        }

        Qcow2TableCache.WriteEntry(table, index, newEntry);
        _l2Cache.MarkDirty(l2Offset);
        return true;
    }

    /// <summary>Writes literal zeroes (partial clusters, and v2 images that cannot record zeroes).</summary>
    private void WriteZeroBytes(long offset, long length)
    {
        if (length <= 0)
        {
            return;
        }

        byte[] zeroes = _zeroCluster ??= new byte[_layout.ClusterSize];
        while (length > 0)
        {
            int n = (int)Math.Min(length, zeroes.Length - _layout.OffsetInCluster(offset));
            Write(offset, zeroes.AsSpan(0, n));
            offset += n;
            length -= n;
        }
    }
}
