namespace LibvirtStorage.Vhost.Backend;

// Which thread serves which queue (issue 3, "one worker per queue or fewer, by config").
internal sealed partial class VhostUserRequestDispatcher
{
    private QueueThread?[]? _queueThreads;

    /// <summary>
    /// At most this many threads serve the queues, queue i on thread i % N; 0 (the default) gives every queue a
    /// thread of its own. Set before the first message.
    /// </summary>
    public int QueueThreads
    {
        get;
        init
        {
            if (value < 0)
                ThrowHelper.ArgumentOutOfRange(nameof(QueueThreads), "0 (one per queue) or at least 1");
            field = value;
        }
    }

    /// <summary>Queue threads running now (tests: the count is bounded by <see cref="QueueThreads"/>).</summary>
    internal int RunningQueueThreads
    {
        get
        {
            int running = 0;
            foreach (QueueThread? thread in _queueThreads ?? [])
                running += thread is null ? 0 : 1;
            return running;
        }
    }

    // A thread is created when its first queue starts and lives until the connection's queues stop for good
    // (StopQueues/Dispose), so a GET_VRING_BASE / SET_VRING_KICK cycle does not create a thread each time.
    private QueueThread ThreadFor(int queueIndex)
    {
        int threads = QueueThreads == 0 ? _vrings.Length : Math.Min(QueueThreads, _vrings.Length);
        _queueThreads ??= new QueueThread?[threads];
        int slot = queueIndex % threads;
        int capacity = (_vrings.Length + threads - 1) / threads;
        return _queueThreads[slot] ??= new QueueThread(
            QueueThreads == 0 ? $"vhost-user queue {queueIndex}" : $"vhost-user queues {slot}/{threads}", capacity);
    }

    // After every vring was stopped: ends and joins the threads.
    private void EndQueueThreads()
    {
        if (_queueThreads is null)
            return;
        for (int i = 0; i < _queueThreads.Length; i++)
        {
            _queueThreads[i]?.Dispose();
            _queueThreads[i] = null;
        }
    }
}
