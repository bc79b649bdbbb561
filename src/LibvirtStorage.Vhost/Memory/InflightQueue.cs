using System.Runtime.CompilerServices;

namespace LibvirtStorage.Vhost.Memory;

/// <summary>
/// One queue's <c>QueueRegionSplit</c> inside an <see cref="InflightArea"/>. Offsets come only from
/// <see cref="DescNum"/> (our copy of the validated queue size, never the desc_num field the front-end can
/// rewrite), and every entry index is checked against it, so no value read from the area can move an access
/// outside the region.
/// </summary>
/// <remarks>
/// Stores are plain or release (<see cref="Volatile"/>) 8/16/64-bit writes of aligned fields: a back-end killed at
/// any instant leaves each field either old or new, and the order the spec relies on (counter before the inflight
/// flag; used ring idx before clearing the flag; the flag before used_idx) is the program order of the callers.
/// </remarks>
internal sealed class InflightQueue
{
    private const int FeaturesOffset = 0;
    private const int VersionOffset = 8;
    private const int DescNumOffset = 10;
    private const int LastBatchHeadOffset = 12;
    private const int UsedIdxOffset = 14;
    private const int InflightOffset = 0;
    private const int NextOffset = 6;
    private const int CounterOffset = 8;

    private readonly nint _base;

    internal InflightQueue(nint regionBase, ushort descNum)
    {
        _base = regionBase;
        DescNum = descNum;
    }

    /// <summary>Entries in the region (the area's queue size).</summary>
    public ushort DescNum { get; }

    /// <summary>0 for a region nobody has used yet; <see cref="InflightArea.CurrentVersion"/> once a queue ran on it.</summary>
    public ushort Version
    {
        get => Load16(VersionOffset);
        set => Store16(VersionOffset, value);
    }

    /// <summary>Head of the list (through <see cref="Next"/>) of the last batch put on the used ring.</summary>
    public ushort LastBatchHead
    {
        get => Load16(LastBatchHeadOffset);
        set => Store16(LastBatchHeadOffset, value);
    }

    /// <summary>The used ring idx after the last batch whose inflight flags were cleared.</summary>
    public ushort UsedIdx
    {
        get => Load16(UsedIdxOffset);
        set => Store16(UsedIdxOffset, value);
    }

    /// <summary>Writes a fresh region's header: features 0, the version, desc_num, used_idx; no batch.</summary>
    public void Initialise(ushort usedIdx)
    {
        unsafe
        {
            // SAFETY: the 16-byte header lies at the start of the region (InflightArea checked the mapping size).
            Volatile.Write(ref *(ulong*)(_base + FeaturesOffset), 0UL);
        }

        Store16(DescNumOffset, DescNum);
        LastBatchHead = 0;
        UsedIdx = usedIdx;
        Version = InflightArea.CurrentVersion;
    }

    /// <summary>The raw inflight byte of entry <paramref name="index"/> (1 = in flight; anything else but 0 is garbage).</summary>
    public byte Inflight(ushort index)
    {
        unsafe
        {
            // SAFETY: Entry() bounds the index by DescNum.
            return Volatile.Read(ref *(byte*)(Entry(index) + InflightOffset));
        }
    }

    /// <summary>The fetch counter of entry <paramref name="index"/>.</summary>
    public ulong Counter(ushort index)
    {
        unsafe
        {
            // SAFETY: Entry() bounds the index; counters are 8-byte aligned (16-byte header, 16-byte entries).
            return Volatile.Read(ref *(ulong*)(Entry(index) + CounterOffset));
        }
    }

    /// <summary>The next link of entry <paramref name="index"/> (the last batch's list).</summary>
    public ushort Next(ushort index)
    {
        unsafe
        {
            // SAFETY: Entry() bounds the index.
            return Volatile.Read(ref *(ushort*)(Entry(index) + NextOffset));
        }
    }

    /// <summary>Popped: record the counter, then raise the flag (a flag is never seen with a stale counter).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void MarkInflight(ushort head, ulong counter)
    {
        nint entry = Entry(head);
        unsafe
        {
            // SAFETY: Entry() bounds the head.
            Volatile.Write(ref *(ulong*)(entry + CounterOffset), counter);
            Volatile.Write(ref *(byte*)(entry + InflightOffset), (byte)1);
        }
    }

    /// <summary>Before the used entry is written: link <paramref name="head"/> as the last batch (a batch of one).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void BeginPut(ushort head)
    {
        nint entry = Entry(head);
        unsafe
        {
            // SAFETY: Entry() bounds the head.
            Volatile.Write(ref *(ushort*)(entry + NextOffset), LastBatchHead);
        }

        LastBatchHead = head;
    }

    /// <summary>After used->idx was published: clear the flag, then record the idx the area now agrees with.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void EndPut(ushort head, ushort usedIdx)
    {
        ClearInflight(head);
        UsedIdx = usedIdx;
    }

    /// <summary>Clears the flag of entry <paramref name="index"/>.</summary>
    public void ClearInflight(ushort index)
    {
        unsafe
        {
            // SAFETY: Entry() bounds the index.
            Volatile.Write(ref *(byte*)(Entry(index) + InflightOffset), (byte)0);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private nint Entry(ushort index)
    {
        if (index >= DescNum)
            ThrowIndex(index);
        return _base + InflightArea.HeaderSize + (index * InflightArea.EntrySize);
    }

    private ushort Load16(int offset)
    {
        unsafe
        {
            // SAFETY: header fields lie in the first 16 bytes of the region.
            return Volatile.Read(ref *(ushort*)(_base + offset));
        }
    }

    private void Store16(int offset, ushort value)
    {
        unsafe
        {
            // SAFETY: as in Load16.
            Volatile.Write(ref *(ushort*)(_base + offset), value);
        }
    }

    private void ThrowIndex(ushort index) =>
        throw new ArgumentOutOfRangeException(nameof(index), index, $"inflight entry index must be below {DescNum}");
}
