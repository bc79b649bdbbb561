using Microsoft.Win32.SafeHandles;

namespace LibvirtStorage.Vhost.Backend;

/// <summary>
/// One OS thread serving one or more started queues of a connection: it blocks in poll(2) on the kick eventfds of
/// its healthy queues plus a private control eventfd, and for each ready kick drains it and runs that queue's batch
/// (<see cref="VhostUserQueueWorker.OnKick"/>). With <c>QueueThreads</c> unset every queue has a thread of its own
/// (the layout before this type existed); with N threads queue i is served by thread i % N.
/// </summary>
/// <remarks>
/// <para>Starting and stopping a queue go through the control fd, so only this thread touches the set of hosted
/// queues and the pollfd array. <see cref="Add"/> returns at once (the thread then runs the queue's first batch,
/// as a dedicated worker did when it started). <see cref="Remove"/> waits until the thread has dropped the queue;
/// the thread reads control requests only between batches, so when Remove returns no batch of that queue is in
/// progress and none will start: the dispatcher's contract for GET_VRING_BASE, SET_VRING_CALL/ERR, resets and
/// disconnect.</para>
/// <para>Fairness: each poll round serves every ready queue once, starting after the queue served first in the
/// previous round, before polling again; a queue whose kick arrives while another's batch runs waits at most
/// for the batches in that round. A batch itself ends when the ring is empty after notifications are re-enabled
/// (<c>RunBatch</c>), so a driver that refills its ring faster than the device completes it keeps its batch and
/// delays the other queues on this thread for that long.</para>
/// <para>A broken queue is no longer polled (as a dedicated worker only waited for its stop); the thread keeps
/// serving the others. If poll(2) itself fails, every hosted queue is marked broken and the thread ends; later
/// adds and removes then complete without it.</para>
/// </remarks>
internal sealed class QueueThread : IDisposable
{
    private readonly SafeFileHandle _control = Notifier.CreateEventFd();
    private readonly Thread _thread;
    private readonly object _gate = new();
    // Requests from the connection thread, read by this thread after a control wake-up (guarded by _gate).
    private readonly Queue<ControlRequest> _requests = new();
    // Owned by this thread: the hosted queues, and the poll set (control fd first, then the healthy queues' kicks).
    private readonly List<VhostUserQueueWorker> _hosted;
    private Notifier.PollFd[] _pollFds;
    private VhostUserQueueWorker?[] _polled;
    private int _pollCount;
    private bool _pollSetStale = true;
    private int _nextFirst;
    private bool _exited;

    /// <summary>Starts a thread named <paramref name="name"/> for up to <paramref name="capacity"/> queues.</summary>
    public QueueThread(string name, int capacity)
    {
        _hosted = new List<VhostUserQueueWorker>(capacity);
        _pollFds = new Notifier.PollFd[capacity + 1];
        _polled = new VhostUserQueueWorker?[capacity + 1];
        _thread = new Thread(Run) { IsBackground = true, Name = name };
        _thread.Start();
    }

    /// <summary>The thread's name (tests).</summary>
    public string Name => _thread.Name!;

    /// <summary>Queues hosted now (tests; read on any thread, so only a snapshot).</summary>
    public int HostedCount
    {
        get { lock (_gate) return _hosted.Count; }
    }

    /// <summary>Hands a started queue to the thread, which runs its first batch and then serves its kicks.</summary>
    public void Add(VhostUserQueueWorker worker)
    {
        lock (_gate)
        {
            if (_exited)
            {
                worker.Fail("its queue thread has ended");
                return;
            }

            _requests.Enqueue(new ControlRequest(worker, Adding: true, Done: null));
        }

        Notifier.Signal(_control);
    }

    /// <summary>Takes a queue away and returns once no batch of it is running and none will start.</summary>
    public void Remove(VhostUserQueueWorker worker)
    {
        using var done = new ManualResetEventSlim();
        lock (_gate)
        {
            if (_exited)
                return;
            _requests.Enqueue(new ControlRequest(worker, Adding: false, done));
        }

        Notifier.Signal(_control);
        done.Wait();
    }

    /// <summary>Ends and joins the thread (its queues should have been removed) and closes the control fd.</summary>
    public void Dispose()
    {
        if (_control.IsClosed)
            return;
        lock (_gate)
        {
            if (!_exited)
                _requests.Enqueue(new ControlRequest(null, Adding: false, Done: null));
        }

        Notifier.Signal(_control);
        _thread.Join();
        _control.Dispose();
    }

    private void Run()
    {
        try
        {
            while (HandleControl())
            {
                if (_pollSetStale)
                    RebuildPollSet();
                Notifier.WaitAny(_pollFds, _pollCount);
                if (_pollFds[0].IsReady)
                {
                    Notifier.Drain(_control);
                    continue;
                }

                ServeReadyQueues();
            }
        }
        catch (IOException ex)
        {
            // poll(2) itself failed (not a guest error): every queue here stops; removes complete at once.
            foreach (VhostUserQueueWorker worker in _hosted)
                worker.Fail(ex.Message);
        }
        finally
        {
            Exit();
        }
    }

    // Applies queued starts and stops in order; false once the thread was asked to end.
    private bool HandleControl()
    {
        while (true)
        {
            ControlRequest request;
            lock (_gate)
            {
                if (!_requests.TryDequeue(out request))
                    return true;
            }

            if (request.Worker is null)
                return false;
            _pollSetStale = true;
            if (request.Adding)
            {
                _hosted.Add(request.Worker);
                request.Worker.RunFirstBatch();
            }
            else
            {
                _hosted.Remove(request.Worker);
                request.Done?.Set();
            }
        }
    }

    // One pass over the ready kicks, starting after the queue that went first last time (round-robin).
    private void ServeReadyQueues()
    {
        int queues = _pollCount - 1;
        int first = _nextFirst < queues ? _nextFirst : 0;
        for (int k = 0; k < queues; k++)
        {
            int slot = 1 + (first + k) % queues;
            if (!_pollFds[slot].IsReady)
                continue;
            VhostUserQueueWorker worker = _polled[slot]!;
            worker.OnKick();
            if (worker.BrokenReason is not null)
                _pollSetStale = true;
        }

        _nextFirst = first + 1;
    }

    private void RebuildPollSet()
    {
        if (_hosted.Count + 1 > _pollFds.Length)
        {
            // Not expected (a queue is stopped before it restarts), but a set change is no hot path: grow.
            _pollFds = new Notifier.PollFd[_hosted.Count + 1];
            _polled = new VhostUserQueueWorker?[_hosted.Count + 1];
        }

        _pollFds[0] = Notifier.PollFd.Readable(_control);
        int count = 1;
        foreach (VhostUserQueueWorker worker in _hosted)
        {
            // A broken queue is not polled: its kicks are left unread, as a dedicated worker left them.
            if (worker.BrokenReason is not null)
                continue;
            _pollFds[count] = Notifier.PollFd.Readable(worker.Kick);
            _polled[count] = worker;
            count++;
        }

        Array.Clear(_polled, count, _polled.Length - count);
        _pollCount = count;
        _pollSetStale = false;
    }

    private void Exit()
    {
        lock (_gate)
        {
            _exited = true;
            // Stops still queued complete now; starts still queued are refused (their queue shows why).
            while (_requests.TryDequeue(out ControlRequest request))
            {
                if (request.Adding)
                    request.Worker!.Fail("its queue thread has ended");
                request.Done?.Set();
            }
        }

        _hosted.Clear();
    }

    // Worker null: end the thread.
    private readonly record struct ControlRequest(VhostUserQueueWorker? Worker, bool Adding, ManualResetEventSlim? Done);
}
