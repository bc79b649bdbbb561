using LibvirtStorage.Vhost.Memory;

namespace LibvirtStorage.Vhost.Virtqueue;

/// <summary>Notification suppression in both directions (virtio 1.2 §2.7.7, §2.7.10).</summary>
internal sealed partial class SplitVirtqueue
{
    private ushort _signalledUsed;
    private bool _signalledUsedValid;
    private bool _kicksDisabled;

    /// <summary>
    /// Whether the driver wants a used-buffer notification (a call) now. With EVENT_IDX: whether the used idx
    /// crossed <c>used_event</c> since the last time this returned; otherwise: whether VRING_AVAIL_F_NO_INTERRUPT
    /// is clear. Call after a batch of <see cref="AddUsed"/>; when unsure (the ring is unreadable) it says yes.
    /// </summary>
    public bool NeedsNotification(GuestMemory memory)
    {
        if (Error is not QueueError.None and not QueueError.RingInaccessible)
        {
            return false;
        }

        // Full fence: our used->idx store must be visible before we read used_event / avail->flags; pairs with the
        // driver's full barrier between writing used_event (or clearing NO_INTERRUPT) and re-reading used->idx
        // (virtio_mb in virtqueue_enable_cb_delayed_split / virtqueue_poll).
        Interlocked.MemoryBarrier();
        if (!EventIdx)
        {
            return !memory.TryLoadAcquire16(AvailRing, out ushort flags) || (flags & VirtqLayout.AvailFlagNoInterrupt) == 0;
        }

        var usedEventAddress = new GuestAddress(AvailRing.Value + VirtqLayout.RingOffset + (2ul * Size));
        if (!memory.TryLoadAcquire16(usedEventAddress, out ushort usedEvent))
        {
            return true;
        }

        ushort old = _signalledUsed;
        bool valid = _signalledUsedValid;
        _signalledUsed = NextUsed;
        _signalledUsedValid = true;
        return !valid || VirtqLayout.NeedEvent(usedEvent, NextUsed, old);
    }

    /// <summary>
    /// Asks the driver to kick again: with EVENT_IDX by setting <c>avail_event</c> to last_avail_idx, otherwise by
    /// clearing VRING_USED_F_NO_NOTIFY. Returns <see langword="true"/> when chains arrived meanwhile (the worker
    /// must pop again instead of sleeping, or a kick is lost) or the ring could not be accessed (the next pop
    /// reports it).
    /// </summary>
    public bool EnableNotification(GuestMemory memory)
    {
        if (Error != QueueError.None)
        {
            return true;
        }

        if (EventIdx)
        {
            if (!memory.TryStoreRelease16(AvailEventAddress, NextAvail))
            {
                return true;
            }
        }
        else if (_kicksDisabled)
        {
            if (!memory.TryStoreRelease16(UsedRing, 0))
            {
                return true;
            }

            _kicksDisabled = false;
        }

        // Full fence: the avail_event / flags store must be visible before we re-read avail->idx; pairs with the
        // driver's full barrier between publishing avail->idx and reading avail_event / used->flags (virtio_mb in
        // virtqueue_kick_prepare_split). Without it both sides can miss each other's write and the kick is lost.
        Interlocked.MemoryBarrier();
        if (!memory.TryLoadAcquire16(AvailIdxAddress, out ushort availIdx))
        {
            return true;
        }

        _cachedAvailIdx = availIdx;
        return availIdx != NextAvail;
    }

    /// <summary>
    /// Asks the driver not to kick while the worker is busy: sets VRING_USED_F_NO_NOTIFY without EVENT_IDX. With
    /// EVENT_IDX nothing is written: <c>avail_event</c> stays behind and the driver kicks only when it crosses it.
    /// </summary>
    public void DisableNotification(GuestMemory memory)
    {
        if (Error == QueueError.None && !EventIdx && !_kicksDisabled && memory.TryStoreRelease16(UsedRing, VirtqLayout.UsedFlagNoNotify))
        {
            _kicksDisabled = true;
        }
    }

    private GuestAddress AvailEventAddress => new(UsedRing.Value + VirtqLayout.RingOffset + ((ulong)VirtqLayout.UsedElementSize * Size));
}
