using LibvirtStorage.Vhost.Memory;
using LibvirtStorage.Vhost.Virtqueue;
using Microsoft.Win32.SafeHandles;
using Microsoft.Extensions.Logging;

namespace LibvirtStorage.Vhost.Backend;

/// <summary>
/// The dispatcher's record of one vring (vhost-user.rst "Ring states"): the queue, the fds it was given, whether
/// it is enabled, and the worker while it is started. Only the connection thread touches it.
/// </summary>
internal sealed class VhostUserVring
{
    public VhostUserVring(int index) => Index = index;

    public int Index { get; }

    public SplitVirtqueue Queue { get; } = new();

    /// <summary>SET_VRING_ADDR has been accepted since the last reset.</summary>
    public bool HasAddresses { get; set; }

    /// <summary>SET_VRING_BASE value: the first avail index to process.</summary>
    public ushort Base { get; set; }

    /// <summary>SET_VRING_ENABLE state (starts true unless VHOST_USER_F_PROTOCOL_FEATURES was negotiated).</summary>
    public bool Enabled { get; set; }

    public SafeFileHandle? Kick { get; private set; }

    public SafeFileHandle? Call { get; private set; }

    public SafeFileHandle? Err { get; private set; }

    public VhostUserQueueWorker? Worker { get; private set; }

    /// <summary>This queue's region of the SET_INFLIGHT_FD area, or null (no tracking); set only while stopped.</summary>
    public InflightQueue? Inflight { get; set; }

    public bool IsStarted => Worker is not null;

    /// <summary>Replaces the kick fd (the previous one is closed; the queue must be stopped).</summary>
    public void SetKick(SafeFileHandle? fd) => Kick = Swap(Kick, fd);

    /// <summary>Replaces the call fd (the queue must be stopped: the worker signals it).</summary>
    public void SetCall(SafeFileHandle? fd) => Call = Swap(Call, fd);

    /// <summary>Replaces the error fd (the queue must be stopped).</summary>
    public void SetErr(SafeFileHandle? fd) => Err = Swap(Err, fd);

    /// <summary>
    /// Starts the worker on the thread <paramref name="threadFor"/> picks when the ring is ready: kick fd, addresses, size, enabled, and rings that validate against
    /// the current memory. Returns null (started or not ready yet) or why the rings are unusable.
    /// </summary>
    public string? TryStart(GuestMemorySlot slot, IVhostUserDevice device, bool eventIdx, ILogger logger, Func<int, QueueThread> threadFor)
    {
        if (IsStarted || Kick is null || !HasAddresses || Queue.Size == 0 || !Enabled)
            return null;
        using GuestMemoryLease lease = slot.Acquire();
        Queue.EventIdx = eventIdx;
        Queue.SetIndices(Base, Base);
        if (Queue.Validate(lease.Memory) != QueueError.None)
            return $"vring {Index} cannot start: {Queue.Error}";
        // The used ring in guest memory is authoritative for the used idx (a restarted queue continues from it).
        Queue.TryResumeUsedIndexFromRing(lease.Memory);
        // With an inflight area the area decides where to continue: unfinished heads first, then new ones.
        if (Inflight is not null && Queue.AttachInflight(Inflight) != QueueError.None)
            return $"vring {Index} cannot start: {Queue.Error}";
        if (Queue.PendingResubmissions > 0)
            VhostUserLog.Resubmitting(logger, Index, Queue.PendingResubmissions, Queue.NextAvail);
        Worker = new VhostUserQueueWorker(Index, Queue, lease.Memory, slot, device, Kick, Call, Err, logger, threadFor(Index));
        return null;
    }

    /// <summary>Stops and joins the worker, if any; <see cref="Base"/> becomes the next avail index to process.</summary>
    public void Stop()
    {
        if (Worker is null)
            return;
        Worker.Stop();
        Worker = null;
        Base = Queue.NextAvail;
        Queue.DetachInflight();
    }

    /// <summary>Stops the worker, closes every fd and forgets the configuration (RESET_OWNER, RESET_DEVICE, disconnect).</summary>
    public void Reset(bool enabled)
    {
        Stop();
        SetKick(null);
        SetCall(null);
        SetErr(null);
        Queue.Reset();
        HasAddresses = false;
        Base = 0;
        Enabled = enabled;
    }

    private static SafeFileHandle? Swap(SafeFileHandle? old, SafeFileHandle? next)
    {
        old?.Dispose();
        return next;
    }
}
