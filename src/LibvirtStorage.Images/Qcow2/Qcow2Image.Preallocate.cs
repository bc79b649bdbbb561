namespace LibvirtStorage.Images.Qcow2;

public sealed partial class Qcow2Image
{
    /// <summary>Allocates every guest cluster (contiguously, per L2 table) and reserves or zeroes the data as asked.</summary>
    internal void Preallocate(Preallocation mode)
    {
        var ranges = new List<(long Host, long Length)>();
        lock (_meta)
        {
            long clusters = _layout.ClustersFor(_size);
            long cluster = 0;
            while (cluster < clusters)
            {
                long guest = cluster << _layout.ClusterBits;
                byte[] table = GetL2ForWriteLocked(guest, out long l2Offset);
                int index = _layout.L2Index(guest);
                long count = Math.Min(clusters - cluster, _layout.L2Entries - index);
                long host = _refcounts.Allocate(count);
                table = GetL2ForWriteLocked(guest, out l2Offset);
                for (long i = 0; i < count; i++)
                {
                    ulong entry = (ulong)(host + (i << _layout.ClusterBits)) | Qcow2Layout.FlagCopied;
                    if (_layout.ExtendedL2)
                    {
                        Qcow2TableCache.WriteEntry(table, (int)(index + i) * 2, entry);
                        Qcow2TableCache.WriteEntry(table, ((int)(index + i) * 2) + 1, Qcow2Layout.AllAllocBits);
                    }
                    else
                    {
                        Qcow2TableCache.WriteEntry(table, (int)(index + i), entry);
                    }
                }

                _l2Cache.MarkDirty(l2Offset);
                ranges.Add((host, count << _layout.ClusterBits));
                cluster += count;
            }
        }

        long end = 0;
        foreach ((long host, long length) in ranges)
        {
            switch (mode)
            {
                case Preallocation.Falloc:
                    _file.Allocate(host, length);
                    break;
                case Preallocation.Full:
                    _file.WriteZeroes(host, length, unmap: false);
                    break;
            }

            end = Math.Max(end, host + length);
        }

        if (_file.Length < end)
        {
            _file.SetLength(end);
        }

        Flush();
    }
}
