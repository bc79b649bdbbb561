namespace LibvirtStorage.Images.Qcow2;

/// <summary>Large aligned writes: whole clusters, one allocation, one pwrite.</summary>
public sealed partial class Qcow2Image
{
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
}
