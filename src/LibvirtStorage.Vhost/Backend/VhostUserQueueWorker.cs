using LibvirtStorage.Vhost.Memory;
using LibvirtStorage.Vhost.Virtqueue;
using Microsoft.Win32.SafeHandles;
using Microsoft.Extensions.Logging;

namespace LibvirtStorage.Vhost.Backend;

/// <summary>
/// One started queue as its <see cref="QueueThread"/> serves it: per kick one batch under a memory lease (virtio
/// 1.2 §2.7.10; the loop in Virtqueue's README): disable notifications, pop and complete chains, re-enable
/// notifications and pop again if the driver added more meanwhile, then signal the call eventfd if
/// <see cref="SplitVirtqueue.NeedsNotification"/> says so.
/// Chains are completed in rounds: the worker pops what is available (up to <see cref="QueueChainRunner.Capacity"/>),
/// its <see cref="QueueChainRunner"/> runs them on <see cref="IVhostUserDevice.ParallelRequestsPerQueue"/> threads
/// (a round of one runs on the queue's thread alone), and the worker publishes the used entries once the round is done.
/// </summary>
/// <remarks>
/// While the worker is hosted its thread owns the queue; the dispatcher touches the queue again only after
/// <see cref="Stop"/> returned. The kick and call fds belong to the dispatcher's vring state and outlive the worker. A memory table
/// swap needs no stop: each batch leases the current map and revalidates the rings when the map changed. A ring
/// error marks the queue broken (the driver sees nothing more on it; the error eventfd, if the front-end set
/// one, is signalled and QEMU reports it) and its thread then stops polling its kick. With an inflight region
/// attached (SET_INFLIGHT_FD), pop and AddUsed track every head in it (<c>SplitVirtqueue.Inflight.cs</c>), and
/// the first batch, run when the queue starts, pops the heads a previous back-end left unfinished before new ones.
/// </remarks>
internal sealed class VhostUserQueueWorker
{
    private readonly int _index;
    private readonly SplitVirtqueue _queue;
    private readonly GuestMemorySlot _memory;
    private readonly IVhostUserDevice _device;
    private readonly SafeFileHandle _kick;
    private readonly SafeFileHandle? _call;
    private readonly SafeFileHandle? _err;
    private readonly ILogger _logger;
    private readonly QueueThread _host;
    private readonly QueueChainRunner _runner;
    private readonly bool _callAtStart;
    private GuestMemory? _validatedFor;
    private volatile string? _broken;
    private int _batches;
    private bool _stopped;

    public VhostUserQueueWorker(int index, SplitVirtqueue queue, GuestMemory validatedFor, GuestMemorySlot memory, IVhostUserDevice device,
        SafeFileHandle kick, SafeFileHandle? call, SafeFileHandle? err, ILogger logger, QueueThread host)
    {
        _index = index;
        _queue = queue;
        _validatedFor = validatedFor;
        _memory = memory;
        _device = device;
        _kick = kick;
        _call = call;
        _err = err;
        _logger = logger;
        _callAtStart = queue.NextUsed != 0;
        // The runner exists before the host can run the first batch.
        _runner = new QueueChainRunner(index, device, device.ParallelRequestsPerQueue);
        _host = host;
        host.Add(this);
    }

    /// <summary>Why the queue stopped serving the driver, or null while it is healthy.</summary>
    public string? BrokenReason => _broken;

    /// <summary>Batches run so far (tests).</summary>
    public int Batches => Volatile.Read(ref _batches);

    /// <summary>The kick eventfd its thread polls.</summary>
    public SafeFileHandle Kick => _kick;

    /// <summary>The thread serving this queue.</summary>
    public QueueThread Host => _host;

    /// <summary>
    /// Takes the queue off its thread and returns once no batch of it is running and none will start. Connection
    /// thread only; idempotent.
    /// </summary>
    public void Stop()
    {
        if (_stopped)
            return;
        _stopped = true;
        _host.Remove(this);
        _runner.Dispose(); // after the host let go: no round of this queue is running
    }

    /// <summary>On the queue's thread when it starts hosting the queue: the start-up batch and call.</summary>
    public void RunFirstBatch()
    {
        // Buffers may have been made available before the kick fd arrived (a restarted queue): look once.
        RunBatch();
        // A used entry published just before the previous connection (or back-end) went away may never have
        // been signalled: QEMU drops calls while it tears its notifier down, and a back-end that completes its
        // last requests on a graceful stop signals after that. Without a call the driver never looks again
        // (found with tests/guest/reconnect.sh graceful: fio hung with every request completed). One call
        // per start is harmless: the driver checks the used idx.
        if (_callAtStart && _broken is null && _call is not null)
            Notifier.Signal(_call);
    }

    /// <summary>On the queue's thread when poll(2) found the kick fd readable: reset it and run a batch.</summary>
    public void OnKick()
    {
        Notifier.Drain(_kick);
        if (_broken is null)
            RunBatch();
    }

    /// <summary>Marks the queue broken from outside a batch (its thread failed or has ended).</summary>
    public void Fail(string reason) => MarkBroken(reason);

    private void RunBatch()
    {
        try
        {
            using GuestMemoryLease lease = _memory.Acquire();
            GuestMemory mem = lease.Memory;
            if (!ReferenceEquals(mem, _validatedFor))
            {
                // SET_MEM_TABLE / ADD_MEM_REG / REM_MEM_REG swapped the map: the rings must still lie inside it.
                _validatedFor = mem;
                if (_queue.Validate(mem) != QueueError.None)
                {
                    MarkBroken($"rings outside the new memory table ({_queue.Error})");
                    return;
                }
            }

            Interlocked.Increment(ref _batches);
            bool completed = false;
            _queue.DisableNotification(mem);
            do
            {
                int popped;
                while ((popped = PopRound(mem)) > 0)
                    completed |= RunRound(popped, mem);
            }
            while (_queue.Error == QueueError.None && _queue.EnableNotification(mem));

            // Only a batch that published used entries may call (NeedsNotification also records what was signalled).
            bool notify = completed && _queue.NeedsNotification(mem);
            if (_queue.Error != QueueError.None)
                MarkBroken($"driver ring error: {_queue.Error}");
            if (notify && _call is not null)
                Notifier.Signal(_call);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            // A device bug must not take the process down; the queue stops and says why.
            MarkBroken($"device failed: {ex.GetType().Name}: {ex.Message}");
        }
    }

    /// <summary>
    /// Pops up to <see cref="QueueChainRunner.Capacity"/> chains (resubmitted heads first, as TryPopAvail orders
    /// them) into the runner. Returns 0 when the ring is empty or broke: chains popped from a broken ring are not
    /// run, since their used entries could not be published anyway.
    /// </summary>
    private int PopRound(GuestMemory mem)
    {
        DescriptorChain[] chains = _runner.Chains;
        int count = 0;
        while (count < chains.Length && _queue.TryPopAvail(mem, out chains[count]) == PopResult.Chain)
            count++;
        if (_queue.Error == QueueError.None)
            return count;
        _runner.ClearChains(count);
        return 0;
    }

    /// <summary>
    /// Runs the popped chains (on the worker alone for one chain, else on the runner's threads too), then publishes
    /// the completed ones in pop order; used entries may be published in any order (no VIRTIO_F_IN_ORDER), and
    /// AddUsed clears each head's inflight flag only after its entry is visible. A device exception is rethrown
    /// after the chains that did complete are published: the queue breaks as it did when chains ran one by one.
    /// </summary>
    private bool RunRound(int count, GuestMemory mem)
    {
        System.Runtime.ExceptionServices.ExceptionDispatchInfo? failure = _runner.Run(count, mem);
        bool published = false;
        for (int i = 0; i < count; i++)
        {
            if (_runner.TryGetResult(i, out uint written))
            {
                _queue.AddUsed(mem, _runner.Chains[i].Head, written);
                published = true;
            }
        }

        _runner.ClearChains(count);
        failure?.Throw();
        return published;
    }

    private void MarkBroken(string reason)
    {
        _broken = reason;
        VhostUserLog.QueueBroken(_logger, _index, reason);
        if (_err is not null)
            Notifier.Signal(_err);
    }
}
