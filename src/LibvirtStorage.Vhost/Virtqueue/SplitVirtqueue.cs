using LibvirtStorage.Vhost.Memory;

namespace LibvirtStorage.Vhost.Virtqueue;

/// <summary>
/// The device side of one split virtqueue (virtio 1.2 §2.7). It stores only guest addresses and 16-bit indices
/// (wrapping, unchecked) and takes the <see cref="GuestMemory"/> snapshot as a parameter of every operation, so it
/// never holds a pointer and survives memory-table changes (revalidate with <see cref="Validate"/> after one).
/// </summary>
/// <remarks>
/// Not thread-safe: one worker owns a queue. The control plane configures it (size, addresses, base, EVENT_IDX)
/// only while the queue is stopped. Memory ordering against the driver is explicit; each barrier names its pair.
/// </remarks>
internal sealed partial class SplitVirtqueue
{
    private ushort _cachedAvailIdx;
    private bool _eventIdx;

    /// <summary>Queue size (SET_VRING_NUM); 0 until set.</summary>
    public ushort Size { get; private set; }

    /// <summary>Guest-physical address of the descriptor table.</summary>
    public GuestAddress DescTable { get; private set; }

    /// <summary>Guest-physical address of the available ring.</summary>
    public GuestAddress AvailRing { get; private set; }

    /// <summary>Guest-physical address of the used ring.</summary>
    public GuestAddress UsedRing { get; private set; }

    /// <summary>last_avail_idx: the next available-ring slot the device will consume.</summary>
    public ushort NextAvail { get; private set; }

    /// <summary>The used idx the device publishes next.</summary>
    public ushort NextUsed { get; private set; }

    /// <summary>Whether VIRTIO_F_EVENT_IDX was negotiated (used_event/avail_event instead of flags).</summary>
    public bool EventIdx
    {
        get => _eventIdx;
        set
        {
            _eventIdx = value;
            Error = QueueError.NotReady;
        }
    }

    /// <summary>
    /// Why the queue cannot run, or <see cref="QueueError.None"/> once <see cref="Validate"/> passed. Any
    /// configuration change sets <see cref="QueueError.NotReady"/>; a ring error stays until the next validation.
    /// </summary>
    public QueueError Error { get; private set; } = QueueError.NotReady;

    /// <summary>Whether <paramref name="size"/> is a valid split queue size: a non-zero power of two ≤ 32768.</summary>
    public static bool IsValidSize(uint size) => size != 0 && size <= VirtqLayout.MaxQueueSize && (size & (size - 1)) == 0;

    /// <summary>Sets the size (SET_VRING_NUM); returns <see langword="false"/> and changes nothing if it is invalid.</summary>
    public bool TrySetSize(uint size)
    {
        if (!IsValidSize(size))
        {
            return false;
        }

        Size = (ushort)size;
        Error = QueueError.NotReady;
        return true;
    }

    /// <summary>Sets the ring addresses (SET_VRING_ADDR, already translated to guest-physical addresses).</summary>
    public void SetAddresses(GuestAddress descTable, GuestAddress availRing, GuestAddress usedRing)
    {
        DescTable = descTable;
        AvailRing = availRing;
        UsedRing = usedRing;
        Error = QueueError.NotReady;
    }

    /// <summary>Sets last_avail_idx (SET_VRING_BASE) and the used idx to continue from.</summary>
    public void SetIndices(ushort nextAvail, ushort nextUsed)
    {
        NextAvail = nextAvail;
        _cachedAvailIdx = nextAvail;
        NextUsed = nextUsed;
        _signalledUsedValid = false;
        _kicksDisabled = false;
        DetachInflight();
        Error = QueueError.NotReady;
    }

    /// <summary>
    /// Continues the used idx from the one already in the used ring (when a queue starts after SET_VRING_BASE, the
    /// ring in guest memory is authoritative, as in libvhost-user). Call after a successful <see cref="Validate"/>.
    /// </summary>
    public bool TryResumeUsedIndexFromRing(GuestMemory memory)
    {
        if (Error != QueueError.None || !memory.TryLoadAcquire16(UsedIdxAddress, out ushort used))
        {
            return false;
        }

        NextUsed = used;
        _signalledUsedValid = false;
        return true;
    }

    /// <summary>Returns the queue to its initial, unconfigured state (RESET_OWNER, GET_VRING_BASE).</summary>
    public void Reset()
    {
        Size = 0;
        SetAddresses(default, default, default);
        SetIndices(0, 0);
        EventIdx = false;
    }

    /// <summary>
    /// Checks the size, the ring alignments (16, 2, 4) and that the rings lie entirely in <paramref name="memory"/>
    /// (the used ring in writable memory). Sets and returns <see cref="Error"/>; call before starting the queue and
    /// after every memory-table change.
    /// </summary>
    public QueueError Validate(GuestMemory memory)
    {
        ArgumentNullException.ThrowIfNull(memory);
        Error = CheckLayout(memory);
        return Error;
    }

    /// <summary>
    /// Takes the next available chain. Returns <see cref="PopResult.Broken"/> (and sets <see cref="Error"/>) when
    /// the driver's ring is inconsistent; the caller then marks the queue broken. Never throws for guest input.
    /// </summary>
    public PopResult TryPopAvail(GuestMemory memory, out DescriptorChain chain)
    {
        chain = default;
        if (Error != QueueError.None)
        {
            return PopResult.Broken;
        }

        if (_resubmitNext < _resubmitCount)
        {
            // Heads a previous back-end popped but never completed come first, in the order it popped them; their
            // descriptors are still valid because the driver has not had them back.
            chain = new DescriptorChain(memory, DescTable, Size, _resubmit![_resubmitNext++]);
            return PopResult.Chain;
        }

        if (_cachedAvailIdx == NextAvail)
        {
            // Acquire: pairs with the driver's write barrier before it publishes avail->idx (virtio_wmb in
            // virtqueue_add_split); ring entries and descriptors read below are at least as new as this index.
            if (!memory.TryLoadAcquire16(AvailIdxAddress, out _cachedAvailIdx))
            {
                return Broken(QueueError.RingInaccessible);
            }

            if (_cachedAvailIdx == NextAvail)
            {
                return PopResult.Empty;
            }
        }

        if ((ushort)(_cachedAvailIdx - NextAvail) > Size)
        {
            return Broken(QueueError.AvailIndexTooFar);
        }

        var slot = new GuestAddress(AvailRing.Value + VirtqLayout.RingOffset + (2ul * (uint)(NextAvail & (Size - 1))));
        if (!memory.TryRead(slot, out ushort head))
        {
            return Broken(QueueError.RingInaccessible);
        }

        if (head >= Size)
        {
            return Broken(QueueError.HeadOutOfRange);
        }

        NextAvail++;
        _inflight?.MarkInflight(head, _inflightCounter++);
        chain = new DescriptorChain(memory, DescTable, Size, head);
        return PopResult.Chain;
    }

    /// <summary>
    /// Puts <paramref name="head"/> on the used ring with <paramref name="length"/> bytes written, and publishes the
    /// new used idx. Returns <see langword="false"/> (and breaks the queue) if the ring is not writable.
    /// </summary>
    public bool AddUsed(GuestMemory memory, ushort head, uint length)
    {
        if (Error != QueueError.None || head >= Size)
        {
            return false;
        }

        // Inflight tracking ("When supplying used buffers"): link the head as the last batch before the ring changes,
        // clear its flag and record used_idx only after used->idx is published. A back-end killed in between leaves
        // used_idx one behind the ring, and the next one clears the flag of last_batch_head (AttachInflight).
        _inflight?.BeginPut(head);
        var slot = new GuestAddress(UsedRing.Value + VirtqLayout.RingOffset + ((ulong)VirtqLayout.UsedElementSize * (uint)(NextUsed & (Size - 1))));
        if (!memory.TryWrite(slot, new VirtqUsedElement(head, length)))
        {
            Broken(QueueError.RingInaccessible);
            return false;
        }

        NextUsed++;
        if (NextUsed == _signalledUsed)
        {
            // 65536 entries since the last notification: the window vring_need_event looks at is ambiguous.
            _signalledUsedValid = false;
        }

        // Release: the used element above becomes visible before the new idx; pairs with the driver's read
        // barrier after it loads used->idx (virtio_rmb in virtqueue_get_buf_ctx_split).
        if (!memory.TryStoreRelease16(UsedIdxAddress, NextUsed))
        {
            Broken(QueueError.RingInaccessible);
            return false;
        }

        _inflight?.EndPut(head, NextUsed);
        return true;
    }

    private GuestAddress AvailIdxAddress => new(AvailRing.Value + VirtqLayout.IdxOffset);

    private GuestAddress UsedIdxAddress => new(UsedRing.Value + VirtqLayout.IdxOffset);

    private PopResult Broken(QueueError error)
    {
        Error = error;
        return PopResult.Broken;
    }

    private QueueError CheckLayout(GuestMemory memory)
    {
        if (!IsValidSize(Size))
        {
            return QueueError.BadSize;
        }

        if ((DescTable.Value & 15) != 0 || (AvailRing.Value & 1) != 0 || (UsedRing.Value & 3) != 0)
        {
            return QueueError.Misaligned;
        }

        if (!memory.IsRangeValid(DescTable, VirtqLayout.DescTableBytes(Size), writable: false))
        {
            return QueueError.DescTableOutsideMemory;
        }

        if (!memory.IsRangeValid(AvailRing, VirtqLayout.AvailRingBytes(Size, EventIdx), writable: false))
        {
            return QueueError.AvailRingOutsideMemory;
        }

        return memory.IsRangeValid(UsedRing, VirtqLayout.UsedRingBytes(Size, EventIdx), writable: true)
            ? QueueError.None
            : QueueError.UsedRingOutsideMemory;
    }
}
