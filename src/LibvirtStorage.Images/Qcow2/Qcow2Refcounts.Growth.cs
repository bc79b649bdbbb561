using System.Buffers.Binary;

namespace LibvirtStorage.Images.Qcow2;

/// <summary>Growth: new refcount blocks for long runs, and moving the refcount table to a larger one.</summary>
internal sealed partial class Qcow2Refcounts
{
    private bool BlocksExist(long start, long count)
    {
        for (long b = start >> _layout.RefblockBits; b <= (start + count - 1) >> _layout.RefblockBits; b++)
        {
            if (b >= _table.Length || (_table[b] & Qcow2Layout.RefTableOffsetMask) == 0)
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>
    /// Creates the refcount blocks missing for [start, start+count) and for themselves, placed right after
    /// the run (the blocks describe each other's clusters), or grows the table first when it is too short.
    /// </summary>
    private void CreateBlocksAfterRun(long start, long count)
    {
        int bits = _layout.RefblockBits;
        long placed = 0, end;
        while (true)
        {
            end = start + count + placed;
            long missing = 0;
            for (long b = start >> bits; b <= (end - 1) >> bits; b++)
            {
                if (b >= _table.Length || (_table[b] & Qcow2Layout.RefTableOffsetMask) == 0)
                {
                    missing++;
                }
            }

            if (missing == placed)
            {
                break;
            }

            placed = missing;
        }

        if (((end - 1) >> bits) >= _table.Length)
        {
            GrowTable((end - 1) >> bits);
            return;
        }

        long next = start + count;
        for (long b = start >> bits; b <= (end - 1) >> bits; b++)
        {
            if ((_table[b] & Qcow2Layout.RefTableOffsetMask) == 0)
            {
                _table[b] = (ulong)(next << _layout.ClusterBits);
                _blocks.GetNew(next << _layout.ClusterBits);
                next++;
            }
        }

        for (long c = start + count; c < end; c++)
        {
            SetInExistingBlock(c, 1);
        }

        _tableDirty = true;
        HighWater = Math.Max(HighWater, end);
    }

    /// <summary>
    /// Moves the refcount table to a larger one at the end of the image. The new area (new refcount blocks
    /// first, then the table) describes itself; the header is switched only after both are on disk.
    /// </summary>
    private void GrowTable(long neededBlock)
    {
        long entriesPerBlock = 1L << _layout.RefblockBits;
        long start = HighWater;
        long entries = Math.Max(neededBlock + 1, _table.Length + (_table.Length / 2) + 1);
        long tableClusters, newBlocks, end;
        while (true)
        {
            tableClusters = _layout.ClustersFor(entries * 8);
            // refcount blocks needed for the new area (blocks, then table) beyond what exists today
            newBlocks = 0;
            while (true)
            {
                end = start + newBlocks + tableClusters;
                long firstBlock = start / entriesPerBlock, lastBlock = (end - 1) / entriesPerBlock;
                long missing = 0;
                for (long b = firstBlock; b <= lastBlock; b++)
                {
                    if (b >= _table.Length || (_table[b] & Qcow2Layout.RefTableOffsetMask) == 0)
                    {
                        missing++;
                    }
                }

                if (missing == newBlocks)
                {
                    break;
                }

                newBlocks = missing;
            }

            if ((end - 1) / entriesPerBlock < entries)
            {
                break;
            }

            entries = ((end - 1) / entriesPerBlock) + 1;
        }

        if (tableClusters * _layout.ClusterSize > Qcow2Header.MaxRefcountTableBytes)
        {
            throw new ImageException(ErrorKind.InvalidArgument, "the image has reached the largest refcount table qcow2 allows", _file.Path);
        }

        var table = new ulong[tableClusters * _layout.ClusterSize / 8];
        _table.CopyTo(table, 0);
        long next = start;
        for (long b = start / entriesPerBlock; b <= (end - 1) / entriesPerBlock; b++)
        {
            if ((table[b] & Qcow2Layout.RefTableOffsetMask) == 0)
            {
                table[b] = (ulong)(next << _layout.ClusterBits);
                _blocks.GetNew(next << _layout.ClusterBits);
                next++;
            }
        }

        ulong[] old = _table;
        long oldOffset = TableOffset;
        int oldClusters = TableClusters;
        _table = table;
        for (long c = start; c < end; c++)
        {
            long b = c / entriesPerBlock;
            byte[] data = _blocks.Get((long)(table[b] & Qcow2Layout.RefTableOffsetMask));
            WriteRefcount(data, (int)(c % entriesPerBlock), 1);
            _blocks.MarkDirty((long)(table[b] & Qcow2Layout.RefTableOffsetMask));
        }

        long tableOffset = (start + newBlocks) << _layout.ClusterBits;
        HighWater = Math.Max(HighWater, end);
        _blocks.WriteBack();
        WriteTable(tableOffset, table);
        _file.Sync();
        if (!_commitTable((ulong)tableOffset, (uint)tableClusters))
        {
            _table = old;
            throw new ImageException(ErrorKind.Io, "could not switch to the grown refcount table", _file.Path);
        }

        TableOffset = tableOffset;
        _tableDirty = false;
        for (long c = 0; c < oldClusters; c++)
        {
            Decrement((oldOffset >> _layout.ClusterBits) + c);
        }
    }

    private void WriteTable(long offset, ulong[] table)
    {
        var bytes = new byte[_layout.ClustersFor((long)table.Length * 8) * _layout.ClusterSize];
        for (int i = 0; i < table.Length; i++)
        {
            BinaryPrimitives.WriteUInt64BigEndian(bytes.AsSpan(i * 8), table[i]);
        }

        _file.Write(bytes, offset);
    }
}
