using LibvirtStorage.Vhost.Memory;

namespace LibvirtStorage.Vhost.Virtqueue;

/// <summary>
/// Inflight I/O tracking (vhost-user.rst "Inflight I/O tracking", split virtqueues): while an
/// <see cref="InflightQueue"/> is attached, <see cref="TryPopAvail"/> marks each popped head with an increasing
/// counter and <see cref="AddUsed"/> clears it around publishing the used entry, so that a back-end killed at any
/// instant leaves a region from which the next one resubmits exactly the unfinished heads.
/// </summary>
internal sealed partial class SplitVirtqueue
{
    private InflightQueue? _inflight;
    private ulong _inflightCounter;
    private ushort[]? _resubmit;
    private int _resubmitCount;
    private int _resubmitNext;

    /// <summary>Whether an inflight region is attached.</summary>
    public bool IsTracked => _inflight is not null;

    /// <summary>Heads waiting to be resubmitted (popped again before any new available entry).</summary>
    public int PendingResubmissions => _resubmitCount - _resubmitNext;

    /// <summary>
    /// Attaches <paramref name="region"/> to a validated queue whose used idx was resumed from the ring, and
    /// recovers from it ("When reconnecting"). A fresh region (version 0) is initialised with the ring's used idx.
    /// Otherwise: if its used_idx lags the ring's, the back-end died after publishing the last batch but before
    /// clearing it, so the flags of that batch (the list from last_batch_head, ring idx − used_idx entries) are
    /// cleared; then the heads still flagged are queued for resubmission in counter order, last_avail_idx becomes
    /// used idx + their number (as libvhost-user does; SET_VRING_BASE is ignored), and new pops continue the
    /// counter. Returns and sets <see cref="Error"/>; anything the front-end could have scribbled is checked
    /// (indices against the queue size, flag values), and a bad region breaks the queue before it runs.
    /// </summary>
    public QueueError AttachInflight(InflightQueue region)
    {
        ArgumentNullException.ThrowIfNull(region);
        DetachInflight();
        if (Error != QueueError.None)
            return Error;
        if (Size > region.DescNum)
            return Error = QueueError.InflightAreaTooSmall;

        ushort version = region.Version;
        if (version == 0)
        {
            for (ushort i = 0; i < region.DescNum; i++)
                region.ClearInflight(i);
            region.Initialise(NextUsed);
            _inflightCounter = 1;
            _inflight = region;
            return QueueError.None;
        }

        if (version != InflightArea.CurrentVersion || !FixUpLastBatch(region) || !CollectInflight(region))
            return Error = QueueError.InflightAreaCorrupt;

        NextAvail = (ushort)(NextUsed + _resubmitCount);
        _cachedAvailIdx = NextAvail;
        _inflight = region;
        return QueueError.None;
    }

    /// <summary>Stops tracking (the region may be unmapped afterwards) and forgets pending resubmissions.</summary>
    public void DetachInflight()
    {
        _inflight = null;
        _resubmitCount = 0;
        _resubmitNext = 0;
    }

    private bool FixUpLastBatch(InflightQueue region)
    {
        ushort recorded = region.UsedIdx;
        ushort batch = (ushort)(NextUsed - recorded);
        if (batch == 0)
            return true;
        if (batch > Size)
            return false;

        // Every value read here is the front-end's to change: each link is checked before it is followed, and the
        // walk is bounded by the batch size (≤ queue size), so a cycle only clears the same flags again.
        ushort head = region.LastBatchHead;
        for (int k = 0; k < batch; k++)
        {
            if (head >= Size)
                return false;
            region.ClearInflight(head);
            if (k + 1 < batch)
                head = region.Next(head);
        }

        region.UsedIdx = NextUsed;
        return true;
    }

    private bool CollectInflight(InflightQueue region)
    {
        if (_resubmit is null || _resubmit.Length < Size)
            _resubmit = new ushort[Size];
        Span<ulong> counters = Size <= 1024 ? stackalloc ulong[Size] : new ulong[Size];
        int count = 0;
        for (ushort i = 0; i < region.DescNum; i++)
        {
            byte flag = region.Inflight(i);
            if (flag == 0)
                continue;
            if (flag != 1 || i >= Size)
                return false;
            _resubmit[count] = i;
            counters[count] = region.Counter(i);
            count++;
        }

        // Counter order is fetch order; a front-end's garbage counters only change the order, never what is read.
        counters[..count].Sort(_resubmit.AsSpan(0, count));
        ulong highest = 0;
        for (int k = 0; k < count; k++)
            highest = Math.Max(highest, counters[k]);
        _inflightCounter = unchecked(highest + 1);
        _resubmitCount = count;
        _resubmitNext = 0;
        return true;
    }
}
