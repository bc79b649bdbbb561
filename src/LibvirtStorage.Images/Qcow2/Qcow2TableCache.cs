using System.Buffers.Binary;
using LibvirtStorage.Images.Native;

namespace LibvirtStorage.Images.Qcow2;

/// <summary>
/// A write-back cache of cluster-sized metadata tables (used once for L2 tables, once for refcount
/// blocks), like QEMU's qcow2-cache.c. Tables stay big-endian as on disk. Eviction is LRU over a fixed
/// number of slots. Not thread-safe: the image's metadata lock guards it.
/// </summary>
/// <remarks>
/// Write ordering lives here: before a dirty table is written back, <see cref="BeforeWriteBack"/> runs,
/// which for the L2 cache writes back the refcount cache (a new L2 entry must never reach the disk before
/// the refcount of the cluster it points to).
/// </remarks>
internal sealed class Qcow2TableCache
{
    private readonly ImageFile _file;
    private readonly int _tableSize;
    private readonly long[] _offsets;
    private readonly byte[]?[] _tables;
    private readonly bool[] _dirty;
    private readonly long[] _lastUse;
    private readonly Dictionary<long, int> _index;
    private long _clock;

    public Qcow2TableCache(ImageFile file, int tableSize, int slots)
    {
        _file = file;
        _tableSize = tableSize;
        slots = Math.Max(slots, 2);
        _offsets = new long[slots];
        _tables = new byte[slots][];
        _dirty = new bool[slots];
        _lastUse = new long[slots];
        _index = new Dictionary<long, int>(slots);
        Array.Fill(_offsets, -1L);
    }

    /// <summary>Runs before any dirty table is written to disk.</summary>
    public Action? BeforeWriteBack { get; set; }

    public int Slots => _offsets.Length;

    public bool HasDirty
    {
        get
        {
            foreach (bool d in _dirty)
            {
                if (d)
                {
                    return true;
                }
            }

            return false;
        }
    }

    /// <summary>The table at <paramref name="offset"/>, loaded from disk if needed. Valid until the next Get/GetNew.</summary>
    public byte[] Get(long offset)
    {
        int slot = Find(offset);
        if (slot < 0)
        {
            slot = Evict();
            byte[] table = _tables[slot] ??= new byte[_tableSize];
            _file.Read(table, offset);
            Install(slot, offset);
        }

        _lastUse[slot] = ++_clock;
        return _tables[slot]!;
    }

    /// <summary>A zeroed table for a newly allocated cluster at <paramref name="offset"/>, already dirty.</summary>
    public byte[] GetNew(long offset)
    {
        int slot = Find(offset);
        if (slot < 0)
        {
            slot = Evict();
            Install(slot, offset);
        }

        byte[] table = _tables[slot] ??= new byte[_tableSize];
        Array.Clear(table);
        _dirty[slot] = true;
        _lastUse[slot] = ++_clock;
        return table;
    }

    public void MarkDirty(long offset)
    {
        int slot = Find(offset);
        if (slot >= 0)
        {
            _dirty[slot] = true;
        }
    }

    /// <summary>Drops a table from the cache without writing it (its cluster was freed).</summary>
    public void Discard(long offset)
    {
        int slot = Find(offset);
        if (slot >= 0)
        {
            _index.Remove(offset);
            _offsets[slot] = -1;
            _dirty[slot] = false;
        }
    }

    /// <summary>Writes every dirty table. Returns true when anything was written (the caller syncs).</summary>
    public bool WriteBack()
    {
        bool any = false;
        for (int i = 0; i < _offsets.Length; i++)
        {
            if (_dirty[i])
            {
                if (!any)
                {
                    BeforeWriteBack?.Invoke();
                    any = true;
                }

                _file.Write(_tables[i], _offsets[i]);
                _dirty[i] = false;
            }
        }

        return any;
    }

    /// <summary>Forgets everything (after the image was found corrupt, or on close of a read-only image).</summary>
    public void Clear()
    {
        _index.Clear();
        Array.Fill(_offsets, -1L);
        Array.Clear(_dirty);
    }

    public static ulong ReadEntry(byte[] table, int index) => BinaryPrimitives.ReadUInt64BigEndian(table.AsSpan(index * 8));

    public static void WriteEntry(byte[] table, int index, ulong value) => BinaryPrimitives.WriteUInt64BigEndian(table.AsSpan(index * 8), value);

    private int Find(long offset) => _index.TryGetValue(offset, out int slot) ? slot : -1;

    private void Install(int slot, long offset)
    {
        _offsets[slot] = offset;
        _index[offset] = slot;
        _dirty[slot] = false;
    }

    private int Evict()
    {
        int victim = -1;
        long oldest = long.MaxValue;
        for (int i = 0; i < _offsets.Length; i++)
        {
            if (_offsets[i] < 0)
            {
                return i;
            }

            if (_lastUse[i] < oldest)
            {
                oldest = _lastUse[i];
                victim = i;
            }
        }

        if (_dirty[victim])
        {
            BeforeWriteBack?.Invoke();
            _file.Write(_tables[victim], _offsets[victim]);
            _dirty[victim] = false;
        }

        _index.Remove(_offsets[victim]);
        _offsets[victim] = -1;
        return victim;
    }
}
