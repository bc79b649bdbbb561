using System.Buffers.Binary;
using LibvirtStorage.Images.Native;

namespace LibvirtStorage.Images.Qcow2;

/// <summary>
/// Refcount table and refcount blocks (qcow2.txt "Host cluster management", QEMU's qcow2-refcount.c):
/// reading and setting refcounts of any width (1 to 64 bits), allocating host clusters, and growing
/// the refcount table. Not thread-safe: the image's metadata lock guards it.
/// </summary>
/// <remarks>
/// Ordering: refcount blocks are written before the refcount table entries that point to them, and both
/// are on disk (synced) before any L2 entry that references a cluster they count. Frees are deferred by
/// the image until the L2 tables that stopped referencing a cluster are on disk.
/// </remarks>
internal sealed partial class Qcow2Refcounts
{
    private readonly ImageFile _file;
    private readonly Qcow2Layout _layout;
    private readonly Qcow2TableCache _blocks;
    private readonly Func<ulong, uint, bool> _commitTable;
    private ulong[] _table;
    private bool _tableDirty;
    private long _freeHint;
    private long _runHint;

    /// <param name="file">The image file.</param>
    /// <param name="layout">Geometry.</param>
    /// <param name="table">The refcount table as loaded.</param>
    /// <param name="tableOffset">Where the table lives.</param>
    /// <param name="cacheSlots">Refcount blocks to cache.</param>
    /// <param name="commitTable">Points the header at a new table (offset, clusters), writing and syncing it.</param>
    public Qcow2Refcounts(ImageFile file, Qcow2Layout layout, ulong[] table, long tableOffset, int cacheSlots, Func<ulong, uint, bool> commitTable)
    {
        _file = file;
        _layout = layout;
        _table = table;
        TableOffset = tableOffset;
        _blocks = new Qcow2TableCache(file, layout.ClusterSize, cacheSlots);
        _commitTable = commitTable;
        HighWater = layout.ClustersFor(file.Length);
    }

    public long TableOffset { get; private set; }

    public int TableClusters => (int)_layout.ClustersFor((long)_table.Length * 8);

    /// <summary>One past the highest host cluster ever allocated or present in the file.</summary>
    public long HighWater { get; private set; }

    public bool HasDirty => _tableDirty || _blocks.HasDirty;

    /// <summary>Reports a corruption; the image decides what it means (it never returns).</summary>
    public Action<long?, string>? OnCorruption { get; set; }

    public ulong Get(long cluster)
    {
        long block = cluster >> _layout.RefblockBits;
        if (cluster < 0 || block >= _table.Length)
        {
            return 0;
        }

        ulong blockOffset = _table[block] & Qcow2Layout.RefTableOffsetMask;
        if (blockOffset == 0)
        {
            return 0;
        }

        byte[] data = _blocks.Get(CheckBlockOffset(blockOffset, block));
        return ReadRefcount(data, (int)(cluster & ((1L << _layout.RefblockBits) - 1)));
    }

    /// <summary>Sets a refcount, creating the refcount block (and growing the table) when needed.</summary>
    public void Set(long cluster, ulong value)
    {
        if (value > _layout.RefcountMax)
        {
            OnCorruption?.Invoke(null, $"refcount of cluster {cluster} would overflow {_layout.RefcountBits} bits");
        }

        EnsureBlock(cluster, clusterIsFree: false);
        SetInExistingBlock(cluster, value);
    }

    public void Increment(long cluster) => Set(cluster, Get(cluster) + 1);

    public void Decrement(long cluster)
    {
        ulong current = Get(cluster);
        if (current == 0)
        {
            OnCorruption?.Invoke(cluster << _layout.ClusterBits, "freeing a cluster whose refcount is already zero");
            return;
        }

        Set(cluster, current - 1);
        if (current == 1)
        {
            _freeHint = Math.Min(_freeHint, cluster);
            _runHint = Math.Min(_runHint, cluster);
        }
    }

    /// <summary>Allocates <paramref name="count"/> contiguous free host clusters with refcount 1.</summary>
    /// <returns>The host byte offset of the first.</returns>
    public long Allocate(long count)
    {
    Restart:
        // keep the hint on the first free cluster so searches do not rescan what is in use
        while (Get(_freeHint) != 0)
        {
            _freeHint++;
        }

        // runs start at the end of the previous run: small holes before it are for single clusters
        long start = count > 1 ? Math.Max(_freeHint, _runHint) : _freeHint;
        long run = 0;
        while (run < count)
        {
            if (Get(start + run) != 0)
            {
                start += run + 1;
                run = 0;
                continue;
            }

            run++;
        }

        if (count > 1 && !BlocksExist(start, count))
        {
            // a run can span refcount blocks that do not exist yet; placing them inside the run would
            // break it again on every attempt, so they go right after it
            CreateBlocksAfterRun(start, count);
            goto Restart;
        }

        for (long i = 0; i < count; i++)
        {
            if (!EnsureBlock(start + i, clusterIsFree: true))
            {
                goto Restart; // the new refcount block took a cluster of the run: search again
            }
        }

        for (long i = 0; i < count; i++)
        {
            if (Get(start + i) != 0)
            {
                goto Restart; // a grown refcount table landed in the run
            }
        }

        for (long i = 0; i < count; i++)
        {
            SetInExistingBlock(start + i, 1);
        }

        if (start == _freeHint)
        {
            _freeHint = start + count;
        }

        if (count > 1)
        {
            _runHint = start + count;
        }

        HighWater = Math.Max(HighWater, start + count);
        return start << _layout.ClusterBits;
    }

    /// <summary>Writes dirty refcount blocks, then the table entries pointing at new ones, syncing after each.</summary>
    public bool WriteBack()
    {
        bool wrote = _blocks.WriteBack();
        if (wrote)
        {
            _file.Sync();
        }

        if (_tableDirty)
        {
            WriteTable(TableOffset, _table);
            _file.Sync();
            _tableDirty = false;
            wrote = true;
        }

        return wrote;
    }

    /// <summary>The refcount table entries (refcount block offsets), for check.</summary>
    public ReadOnlySpan<ulong> Table => _table;

    public void DropCache() => _blocks.Clear();

    private void SetInExistingBlock(long cluster, ulong value)
    {
        long block = cluster >> _layout.RefblockBits;
        byte[] data = _blocks.Get((long)(_table[block] & Qcow2Layout.RefTableOffsetMask));
        WriteRefcount(data, (int)(cluster & ((1L << _layout.RefblockBits) - 1)), value);
        _blocks.MarkDirty((long)(_table[block] & Qcow2Layout.RefTableOffsetMask));
    }

    /// <summary>
    /// Makes sure a refcount block covers <paramref name="cluster"/>. When it must create one for a free
    /// cluster, the new block is placed at that cluster itself and counts itself, as QEMU does, and it
    /// returns false so the caller picks again. For a cluster in use, the block goes to a newly allocated cluster.
    /// </summary>
    private bool EnsureBlock(long cluster, bool clusterIsFree)
    {
        long block = cluster >> _layout.RefblockBits;
        if (block >= _table.Length)
        {
            GrowTable(block);
        }

        if ((_table[block] & Qcow2Layout.RefTableOffsetMask) != 0)
        {
            return true;
        }

        if (!clusterIsFree)
        {
            long elsewhere = Allocate(1);
            if ((_table[block] & Qcow2Layout.RefTableOffsetMask) != 0)
            {
                // the allocation created this very block (it describes itself): give the cluster back
                SetInExistingBlock(elsewhere >> _layout.ClusterBits, 0);
                return true;
            }

            _blocks.GetNew(elsewhere);
            _table[block] = (ulong)elsewhere;
            _tableDirty = true;
            return true;
        }

        long offset = cluster << _layout.ClusterBits;
        byte[] data = _blocks.GetNew(offset);
        WriteRefcount(data, (int)(cluster & ((1L << _layout.RefblockBits) - 1)), 1);
        _table[block] = (ulong)offset;
        _tableDirty = true;
        HighWater = Math.Max(HighWater, cluster + 1);
        return false;
    }

    private long CheckBlockOffset(ulong offset, long block)
    {
        if (!_layout.IsClusterAligned(offset) || offset >= (ulong)(HighWater << _layout.ClusterBits))
        {
            OnCorruption?.Invoke((long)Math.Min(offset, long.MaxValue), $"refcount block {block} at 0x{offset:x} is unaligned or outside the file");
        }

        return (long)offset;
    }

    private ulong ReadRefcount(byte[] block, int index) => ReadRefcount(block, index, _layout.RefcountOrder);

    private void WriteRefcount(byte[] block, int index, ulong value) => WriteRefcount(block, index, value, _layout.RefcountOrder);

    /// <summary>Reads entry <paramref name="index"/> of a refcount block with 2^<paramref name="order"/>-bit entries.</summary>
    internal static ulong ReadRefcount(byte[] block, int index, int order)
    {
        switch (order)
        {
            case 0: return (ulong)((block[index >> 3] >> (index & 7)) & 1);
            case 1: return (ulong)((block[index >> 2] >> (2 * (index & 3))) & 3);
            case 2: return (ulong)((block[index >> 1] >> (4 * (index & 1))) & 0xf);
            case 3: return block[index];
            case 4: return BinaryPrimitives.ReadUInt16BigEndian(block.AsSpan(index * 2));
            case 5: return BinaryPrimitives.ReadUInt32BigEndian(block.AsSpan(index * 4));
            default: return BinaryPrimitives.ReadUInt64BigEndian(block.AsSpan(index * 8));
        }
    }

    /// <summary>Writes entry <paramref name="index"/> of a refcount block with 2^<paramref name="order"/>-bit entries.</summary>
    internal static void WriteRefcount(byte[] block, int index, ulong value, int order)
    {
        switch (order)
        {
            case 0:
                block[index >> 3] = (byte)((block[index >> 3] & ~(1 << (index & 7))) | ((int)value << (index & 7)));
                break;
            case 1:
                block[index >> 2] = (byte)((block[index >> 2] & ~(3 << (2 * (index & 3)))) | ((int)value << (2 * (index & 3))));
                break;
            case 2:
                block[index >> 1] = (byte)((block[index >> 1] & ~(0xf << (4 * (index & 1)))) | ((int)value << (4 * (index & 1))));
                break;
            case 3:
                block[index] = (byte)value;
                break;
            case 4:
                BinaryPrimitives.WriteUInt16BigEndian(block.AsSpan(index * 2), (ushort)value);
                break;
            case 5:
                BinaryPrimitives.WriteUInt32BigEndian(block.AsSpan(index * 4), (uint)value);
                break;
            default:
                BinaryPrimitives.WriteUInt64BigEndian(block.AsSpan(index * 8), value);
                break;
        }
    }
}
