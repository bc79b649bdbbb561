using System.Diagnostics.CodeAnalysis;
using System.Runtime.InteropServices;
using LibvirtStorage.Vhost.Backend;
using LibvirtStorage.Vhost.Memory;
using LibvirtStorage.Vhost.Virtqueue;
using Microsoft.Win32.SafeHandles;

namespace LibvirtStorage.Vhost.Frontend;

/// <summary>
/// The driver side of one split virtqueue (virtio 1.2 §2.7) with a fixed set of request slots, each owning a
/// header, a status byte, an indirect table and a data buffer inside the memfd. Requests are asynchronous:
/// <see cref="TryAcquireSlot"/>, fill <see cref="Data"/>, <see cref="Submit"/> (as many as wanted), <see cref="Publish"/>
/// (one avail idx store and at most one kick, like Linux's virtio-blk commit_rqs), then
/// <see cref="TakeCompletions"/> or <see cref="WaitForCompletions"/>. Nothing in that loop allocates.
/// </summary>
/// <remarks>Not thread-safe: one thread drives one queue, as one guest vCPU drives one blk-mq hardware queue.</remarks>
public sealed class VhostUserBlkQueue : IDisposable
{
    private const ulong SlotAreaBytes = 128;      // header 16, status at 16, indirect table of 3 at 32
    private const ulong StatusOffset = 16, TableOffset = 32;
    private const byte StatusUnwritten = 0xff;
    private const int DescriptorsPerRequest = 3;

    private readonly GuestMemory _memory;
    private readonly ulong _slots, _data;
    private readonly int _slotBytes;
    private readonly bool _indirect;
    private readonly int _completionTimeoutMs;
    private readonly int[] _free;
    private readonly BlkRequestType[] _type;
    private readonly uint[] _length;
    private readonly bool[] _inFlight;
    private int _freeCount;
    private ushort _nextAvail, _publishedAvail, _lastUsed;

    internal VhostUserBlkQueue(int index, GuestMemory memory, ulong baseAddress, VhostUserBlkFrontendOptions options, bool eventIdx, bool indirect)
    {
        Index = index;
        _memory = memory;
        Size = options.QueueSize;
        Depth = indirect ? options.Depth : Math.Min(options.Depth, Size / DescriptorsPerRequest);
        EventIdx = eventIdx;
        _indirect = indirect;
        _slotBytes = options.MaxRequestBytes;
        _completionTimeoutMs = options.CompletionTimeoutMs;
        (DescAddress, AvailAddress, UsedAddress, _slots, _data) = Layout(baseAddress, Size, options.Depth);
        _free = new int[Depth];
        _type = new BlkRequestType[Depth];
        _length = new uint[Depth];
        _inFlight = new bool[Depth];
        for (int i = 0; i < Depth; i++)
            _free[i] = Depth - 1 - i;   // slot 0 first
        _freeCount = Depth;
    }

    /// <summary>The vring index.</summary>
    public int Index { get; }

    /// <summary>Ring size.</summary>
    public ushort Size { get; }

    /// <summary>Request slots: the most requests in flight (fewer than asked when three direct descriptors per
    /// request would not fit the ring).</summary>
    public int Depth { get; }

    /// <summary>Whether VIRTIO_RING_F_EVENT_IDX is in use (used_event / avail_event instead of flags).</summary>
    public bool EventIdx { get; }

    /// <summary>Requests submitted and not yet reaped.</summary>
    public int InFlight => Depth - _freeCount;

    /// <summary>Kicks written to the kick eventfd (the back-end did not suppress them).</summary>
    public long Kicks { get; private set; }

    /// <summary>Times <see cref="WaitForCompletions"/> had to sleep on the call eventfd.</summary>
    public long CallWaits { get; private set; }

    /// <summary>Bytes each slot's data buffer holds.</summary>
    public int MaxRequestBytes => _slotBytes;

    internal GuestAddress DescAddress { get; }

    internal GuestAddress AvailAddress { get; }

    internal GuestAddress UsedAddress { get; }

    internal SafeFileHandle KickFd { get; } = Notifier.CreateEventFd();

    internal SafeFileHandle CallFd { get; } = Notifier.CreateEventFd();

    /// <summary>Bytes of guest memory one queue needs (rings, slot areas, data buffers).</summary>
    internal static ulong BytesFor(VhostUserBlkFrontendOptions options) =>
        Layout(0, options.QueueSize, options.Depth).Data + ((ulong)options.Depth * (ulong)options.MaxRequestBytes);

    // desc | avail (+ used_event) | used (+ avail_event) on its own page, as the legacy layout does | slot areas | data
    private static (GuestAddress Desc, GuestAddress Avail, GuestAddress Used, ulong Slots, ulong Data) Layout(ulong at, ushort size, int depth)
    {
        ulong avail = at + VirtqLayout.DescTableBytes(size);
        ulong used = AlignUp(avail + VirtqLayout.AvailRingBytes(size, eventIdx: true), 4096);
        ulong slots = AlignUp(used + VirtqLayout.UsedRingBytes(size, eventIdx: true), 4096);
        ulong data = AlignUp(slots + ((ulong)depth * SlotAreaBytes), 4096);
        return (new GuestAddress(at), new GuestAddress(avail), new GuestAddress(used), slots, data);
    }

    private static ulong AlignUp(ulong value, ulong alignment) => (value + alignment - 1) & ~(alignment - 1);

    /// <summary>Takes a free slot; false when <see cref="Depth"/> requests are in flight.</summary>
    public bool TryAcquireSlot(out int slot)
    {
        if (_freeCount == 0)
        {
            slot = -1;
            return false;
        }

        slot = _free[--_freeCount];
        return true;
    }

    /// <summary>The slot's data buffer (in guest memory). After a READ or GET_ID completes it holds the data
    /// until the slot is acquired again.</summary>
    public Span<byte> Data(int slot)
    {
        CheckSlot(slot);
        if (!_memory.TryGetSegments(new GuestAddress(DataAddress(slot)), (ulong)_slotBytes, writable: true, out GuestSegments segments) || !segments.MoveNext())
            ThrowHelper.GuestMemory();
        return segments.Current;    // one region, so one span
    }

    /// <summary>
    /// Puts an acquired slot's request on the avail ring (not yet visible to the device: see <see cref="Publish"/>).
    /// <paramref name="dataLength"/> bytes of the data buffer go with it: device-writable for READ and GET_ID,
    /// device-readable for WRITE, DISCARD and WRITE_ZEROES (one 16-byte segment, see <see cref="WriteSegment"/>),
    /// none for FLUSH.
    /// </summary>
    public void Submit(int slot, BlkRequestType type, ulong sector, int dataLength)
    {
        CheckSlot(slot);
        if (_inFlight[slot] || (uint)dataLength > (uint)_slotBytes || (type == BlkRequestType.Flush && dataLength != 0))
            ThrowHelper.BadSubmit(slot, type, dataLength);

        ulong area = _slots + ((ulong)slot * SlotAreaBytes);
        Check(_memory.TryWrite(new GuestAddress(area), new BlkRequestHeader((uint)type, sector)));
        Check(_memory.TryWrite(new GuestAddress(area + StatusOffset), StatusUnwritten));

        bool deviceWrites = type is BlkRequestType.Read or BlkRequestType.GetId;
        int count = 0;
        ushort head;
        ulong table = area + TableOffset;
        int first = slot * DescriptorsPerRequest;
        Span<VirtqDescriptor> chain = stackalloc VirtqDescriptor[DescriptorsPerRequest];
        // In a table the next field is an index into the table; in the ring it is a ring index.
        int nextBase = _indirect ? 0 : first;
        chain[count] = new VirtqDescriptor(area, 16, VirtqLayout.DescFlagNext, (ushort)(nextBase + count + 1));
        count++;
        if (dataLength > 0)
        {
            ushort flags = (ushort)(VirtqLayout.DescFlagNext | (deviceWrites ? VirtqLayout.DescFlagWrite : 0));
            chain[count] = new VirtqDescriptor(DataAddress(slot), (uint)dataLength, flags, (ushort)(nextBase + count + 1));
            count++;
        }

        chain[count] = new VirtqDescriptor(area + StatusOffset, 1, VirtqLayout.DescFlagWrite, 0);
        count++;
        if (_indirect)
        {
            for (int i = 0; i < count; i++)
                Check(_memory.TryWrite(new GuestAddress(table + (16ul * (uint)i)), chain[i]));
            head = (ushort)slot;
            Check(_memory.TryWrite(Desc(head), new VirtqDescriptor(table, (uint)(16 * count), VirtqLayout.DescFlagIndirect, 0)));
        }
        else
        {
            for (int i = 0; i < count; i++)
                Check(_memory.TryWrite(Desc(first + i), chain[i]));
            head = (ushort)first;
        }

        Check(_memory.TryWrite(new GuestAddress(AvailAddress.Value + VirtqLayout.RingOffset + (2ul * (uint)(_nextAvail % Size))), head));
        _nextAvail++;
        _type[slot] = type;
        _length[slot] = (uint)dataLength;
        _inFlight[slot] = true;
    }

    /// <summary>Writes one discard / write-zeroes segment {sector, num_sectors, flags} at the start of the slot's data
    /// (virtio 1.2 §5.2.6, <c>struct virtio_blk_discard_write_zeroes</c>); submit it with length 16.</summary>
    public void WriteSegment(int slot, ulong sector, uint sectors, bool unmap = false) =>
        Check(_memory.TryWrite(new GuestAddress(DataAddress(slot)), new BlkDiscardSegment(sector, sectors, unmap ? 1u : 0u)));

    /// <summary>Makes the submitted requests visible (avail idx store-release) and kicks unless the device
    /// suppressed it (avail_event with EVENT_IDX, else VRING_USED_F_NO_NOTIFY; virtio 1.2 §2.7.10).</summary>
    public void Publish()
    {
        if (_nextAvail == _publishedAvail)
            return;
        ushort old = _publishedAvail;
        Check(_memory.TryStoreRelease16(new GuestAddress(AvailAddress.Value + VirtqLayout.IdxOffset), _nextAvail));
        _publishedAvail = _nextAvail;
        // Pairs with the device's fence after it re-enables notifications (avail_event / flags), so either it
        // sees our idx or we see its request for a kick.
        Interlocked.MemoryBarrier();
        bool kick;
        if (EventIdx)
        {
            Check(_memory.TryLoadAcquire16(new GuestAddress(UsedAddress.Value + VirtqLayout.RingOffset + (8ul * Size)), out ushort availEvent));
            kick = VirtqLayout.NeedEvent(availEvent, _publishedAvail, old);
        }
        else
        {
            Check(_memory.TryLoadAcquire16(UsedAddress, out ushort usedFlags));
            kick = (usedFlags & VirtqLayout.UsedFlagNoNotify) == 0;
        }

        if (kick)
        {
            Notifier.Signal(KickFd);
            Kicks++;
        }
    }

    /// <summary>Reaps what the device has put on the used ring, without waiting; returns how many.</summary>
    public int TakeCompletions(Span<BlkCompletion> into)
    {
        Check(_memory.TryLoadAcquire16(new GuestAddress(UsedAddress.Value + VirtqLayout.IdxOffset), out ushort usedIdx));
        if ((ushort)(usedIdx - _lastUsed) > InFlight)
            ThrowHelper.Device($"used idx {usedIdx} is {(ushort)(usedIdx - _lastUsed)} ahead with {InFlight} in flight");
        int n = 0;
        while (n < into.Length && _lastUsed != usedIdx)
        {
            Check(_memory.TryRead(new GuestAddress(UsedAddress.Value + VirtqLayout.RingOffset + (8ul * (uint)(_lastUsed % Size))), out VirtqUsedElement used));
            _lastUsed++;
            int slot = _indirect ? (int)used.Id : (used.Id % DescriptorsPerRequest == 0 ? (int)(used.Id / DescriptorsPerRequest) : -1);
            if ((uint)slot >= (uint)Depth || !_inFlight[slot])
                ThrowHelper.Device($"used id {used.Id} is not a request in flight");
            Check(_memory.TryRead(new GuestAddress(_slots + ((ulong)slot * SlotAreaBytes) + StatusOffset), out byte status));
            BlkRequestType type = _type[slot];
            uint expected = type switch
            {
                BlkRequestType.Read => _length[slot] + 1,
                BlkRequestType.GetId => Math.Min(_length[slot], 20u) + 1,
                _ => 1,
            };
            into[n++] = new BlkCompletion(slot, type, (BlkStatus)status, used.Length, expected);
            _inFlight[slot] = false;
            _free[_freeCount++] = slot;
        }

        return n;
    }

    /// <summary>
    /// Publishes anything submitted, then reaps at least one completion, sleeping on the call eventfd when the ring
    /// is empty: with EVENT_IDX it first sets used_event to the next entry it wants to hear about. Throws
    /// <see cref="TimeoutException"/> after <see cref="VhostUserBlkFrontendOptions.CompletionTimeoutMs"/>.
    /// </summary>
    public int WaitForCompletions(Span<BlkCompletion> into)
    {
        Publish();
        if (InFlight == 0)
            return 0;
        while (true)
        {
            int n = TakeCompletions(into);
            if (n > 0)
                return n;
            if (EventIdx)
            {
                Check(_memory.TryStoreRelease16(new GuestAddress(AvailAddress.Value + VirtqLayout.RingOffset + (2ul * Size)), _lastUsed));
            }

            // Pairs with the device's fence before it reads used_event: either it sees our used_event or we see
            // its used idx here.
            Interlocked.MemoryBarrier();
            n = TakeCompletions(into);
            if (n > 0)
                return n;
            CallWaits++;
            if (!FrontendNative.WaitReadable(CallFd, _completionTimeoutMs))
                throw new TimeoutException($"queue {Index}: no completion within {_completionTimeoutMs} ms ({InFlight} in flight)");
            Notifier.Drain(CallFd);
        }
    }

    /// <summary>Closes the kick and call eventfds.</summary>
    public void Dispose()
    {
        KickFd.Dispose();
        CallFd.Dispose();
    }

    private ulong DataAddress(int slot) => _data + ((ulong)slot * (ulong)_slotBytes);

    private GuestAddress Desc(int index) => new(DescAddress.Value + (VirtqLayout.DescriptorSize * (uint)index));

    private void CheckSlot(int slot)
    {
        if ((uint)slot >= (uint)Depth)
            ThrowHelper.BadSlot(slot, Depth);
    }

    private static void Check(bool ok)
    {
        if (!ok)
            ThrowHelper.GuestMemory();
    }

    [StructLayout(LayoutKind.Sequential, Pack = 1)]
    private readonly struct BlkRequestHeader(uint type, ulong sector)
    {
        public readonly uint Type = type;
        public readonly uint Reserved;
        public readonly ulong Sector = sector;
    }

    [StructLayout(LayoutKind.Sequential, Pack = 1)]
    private readonly struct BlkDiscardSegment(ulong sector, uint sectors, uint flags)
    {
        public readonly ulong Sector = sector;
        public readonly uint Sectors = sectors;
        public readonly uint Flags = flags;
    }
}

/// <summary>The front-end's throws, kept out of the hot methods.</summary>
internal static class ThrowHelper
{
    [DoesNotReturn]
    public static void GuestMemory() => throw new InvalidOperationException("front-end access outside its own guest memory");

    [DoesNotReturn]
    public static void BadSlot(int slot, int depth) => throw new ArgumentOutOfRangeException(nameof(slot), slot, $"slots are 0..{depth - 1}");

    [DoesNotReturn]
    public static void BadSubmit(int slot, BlkRequestType type, int length) =>
        throw new ArgumentException($"slot {slot} is in flight, or {type} cannot carry {length} data bytes");

    [DoesNotReturn]
    public static void Device(string message) => throw new InvalidDataException("the back-end broke the virtqueue rules: " + message);
}
