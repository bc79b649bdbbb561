using LibvirtStorage.Vhost.Memory;
using LibvirtStorage.Vhost.Virtqueue;

namespace LibvirtStorage.Vhost.Tests.Virtqueue;

/// <summary>
/// Plays the guest driver of one split queue (like virtio-queue's MockSplitQueue): writes descriptors and avail
/// entries into guest memory, decides kicks the way Linux does, and collects used entries.
/// </summary>
internal sealed class FakeDriver
{
    private readonly GuestMemory _memory;
    private ushort _nextFree;

    public FakeDriver(GuestMemory memory, ushort size, ulong desc = 0x0, ulong avail = 0x4000, ulong used = 0x8000)
    {
        _memory = memory;
        Size = size;
        Desc = new GuestAddress(desc);
        Avail = new GuestAddress(avail);
        Used = new GuestAddress(used);
    }

    public ushort Size { get; }

    public GuestAddress Desc { get; }

    public GuestAddress Avail { get; }

    public GuestAddress Used { get; }

    public ushort AvailIdx { get; private set; }

    public ushort LastUsedSeen { get; private set; }

    /// <summary>Kicks the driver would have sent.</summary>
    public int Kicks { get; private set; }

    public bool EventIdx { get; set; }

    /// <summary>A queue configured with this driver's layout and validated.</summary>
    public SplitVirtqueue CreateQueue(bool eventIdx = false)
    {
        EventIdx = eventIdx;
        var queue = new SplitVirtqueue();
        if (!queue.TrySetSize(Size))
        {
            throw new InvalidOperationException("bad size");
        }

        queue.SetAddresses(Desc, Avail, Used);
        queue.EventIdx = eventIdx;
        if (queue.Validate(_memory) != QueueError.None)
        {
            throw new InvalidOperationException(queue.Error.ToString());
        }

        return queue;
    }

    public void WriteDescriptor(ushort index, ulong address, uint length, ushort flags, ushort next = 0) =>
        Check(_memory.TryWrite(new GuestAddress(Desc.Value + (16ul * index)), new VirtqDescriptor(address, length, flags, next)));

    public static void WriteDescriptorAt(GuestMemory memory, ulong table, int index, ulong address, uint length, ushort flags, ushort next = 0) =>
        Check(memory.TryWrite(new GuestAddress(table + (16ul * (uint)index)), new VirtqDescriptor(address, length, flags, next)));

    /// <summary>Writes a chain of direct descriptors at the next free slots and makes it available; returns its head.</summary>
    public ushort AddChain(params (ulong Address, uint Length, bool Write)[] buffers)
    {
        ushort head = _nextFree;
        for (int i = 0; i < buffers.Length; i++)
        {
            ushort index = (ushort)((_nextFree + i) % Size);
            bool last = i == buffers.Length - 1;
            ushort flags = (ushort)((buffers[i].Write ? VirtqLayout.DescFlagWrite : 0) | (last ? 0 : VirtqLayout.DescFlagNext));
            WriteDescriptor(index, buffers[i].Address, buffers[i].Length, flags, (ushort)((index + 1) % Size));
        }

        _nextFree = (ushort)((_nextFree + buffers.Length) % Size);
        Publish(head);
        return head;
    }

    /// <summary>Writes <paramref name="buffers"/> as an indirect table at <paramref name="table"/>, one descriptor pointing at it.</summary>
    public ushort AddIndirectChain(ulong table, params (ulong Address, uint Length, bool Write)[] buffers)
    {
        for (int i = 0; i < buffers.Length; i++)
        {
            bool last = i == buffers.Length - 1;
            ushort flags = (ushort)((buffers[i].Write ? VirtqLayout.DescFlagWrite : 0) | (last ? 0 : VirtqLayout.DescFlagNext));
            WriteDescriptorAt(_memory, table, i, buffers[i].Address, buffers[i].Length, flags, (ushort)(i + 1));
        }

        ushort head = _nextFree;
        WriteDescriptor(head, table, (uint)(16 * buffers.Length), VirtqLayout.DescFlagIndirect);
        _nextFree = (ushort)((_nextFree + 1) % Size);
        Publish(head);
        return head;
    }

    /// <summary>Puts <paramref name="head"/> on the avail ring, publishes the idx, and kicks if the device asks for it.</summary>
    public void Publish(ushort head)
    {
        Check(_memory.TryWrite(new GuestAddress(Avail.Value + 4 + (2ul * (uint)(AvailIdx % Size))), head));
        ushort old = AvailIdx;
        AvailIdx++;
        Check(_memory.TryStoreRelease16(new GuestAddress(Avail.Value + 2), AvailIdx));
        Interlocked.MemoryBarrier();
        if (NeedsKick(old))
        {
            Kicks++;
        }
    }

    /// <summary>Sets the avail idx directly (hostile tests).</summary>
    public void SetAvailIdx(ushort idx)
    {
        AvailIdx = idx;
        Check(_memory.TryStoreRelease16(new GuestAddress(Avail.Value + 2), idx));
    }

    /// <summary>Continues from indices a device was given with SET_VRING_BASE (the used ring says the same).</summary>
    public void StartAt(ushort idx)
    {
        SetAvailIdx(idx);
        LastUsedSeen = idx;
        Check(_memory.TryStoreRelease16(new GuestAddress(Used.Value + 2), idx));
    }

    public void SetAvailRingEntry(int slot, ushort head) =>
        Check(_memory.TryWrite(new GuestAddress(Avail.Value + 4 + (2ul * (uint)slot)), head));

    public void SetAvailFlags(ushort flags) => Check(_memory.TryStoreRelease16(Avail, flags));

    public void SetUsedEvent(ushort value) => Check(_memory.TryStoreRelease16(new GuestAddress(Avail.Value + 4 + (2ul * Size)), value));

    public ushort UsedFlags => Read16(Used.Value);

    public ushort UsedIdx => Read16(Used.Value + 2);

    public ushort AvailEvent => Read16(Used.Value + 4 + (8ul * Size));

    /// <summary>Takes the next used entry, if the device published one.</summary>
    public bool TryTakeUsed(out uint id, out uint length)
    {
        id = length = 0;
        if (UsedIdx == LastUsedSeen)
        {
            return false;
        }

        Check(_memory.TryRead(new GuestAddress(Used.Value + 4 + (8ul * (uint)(LastUsedSeen % Size))), out VirtqUsedElement element));
        LastUsedSeen++;
        id = element.Id;
        length = element.Length;
        return true;
    }

    private bool NeedsKick(ushort old) =>
        EventIdx ? VirtqLayout.NeedEvent(AvailEvent, AvailIdx, old) : (UsedFlags & VirtqLayout.UsedFlagNoNotify) == 0;

    private ushort Read16(ulong address)
    {
        Check(_memory.TryLoadAcquire16(new GuestAddress(address), out ushort value));
        return value;
    }

    private static void Check(bool ok)
    {
        if (!ok)
        {
            throw new InvalidOperationException("driver access outside guest memory");
        }
    }
}
