using System.Diagnostics;

namespace LibvirtStorage.Service;

/// <summary>
/// How a running stream or commit yields to guests: a speed limit that may change while it runs, and pause/resume.
/// The job checks it between chunks, so a change takes effect within one chunk (1 MiB).
/// </summary>
public sealed class LiveJobControl : IDisposable
{
    private readonly ManualResetEventSlim _running = new(initialState: true);
    private CancellationTokenSource _changed = new();
    private readonly Lock _lock = new();
    private long _speedLimit;
    private long _windowStart = Stopwatch.GetTimestamp();
    private long _windowBytes;

    /// <summary>A control with <paramref name="speedLimit"/> bytes per second (0: unlimited).</summary>
    public LiveJobControl(long speedLimit = 0)
    {
        SpeedLimit = speedLimit;
    }

    /// <summary>Bytes per second the job copies at most; 0 is unlimited. Setting it starts a new measuring window.</summary>
    public long SpeedLimit
    {
        get => Interlocked.Read(ref _speedLimit);
        set
        {
            ArgumentOutOfRangeException.ThrowIfNegative(value);
            lock (_lock)
            {
                Interlocked.Exchange(ref _speedLimit, value);
                RestartWindow();
            }

            Wake();
        }
    }

    /// <summary>Longest a job at idle priority waits for the guest to have no request in flight before each chunk.</summary>
    public static TimeSpan IdleWait { get; } = TimeSpan.FromMilliseconds(100);

    /// <summary>
    /// Idle priority: before each chunk the job waits (up to <see cref="IdleWait"/>) until the guest has no request in
    /// flight, so a busy guest slows the job to about 10 chunks a second and an idle one lets it run at full speed.
    /// </summary>
    public bool IdlePriority { get; set; }

    /// <summary>Whether the job is held between two chunks.</summary>
    public bool IsPaused => !_running.IsSet;

    /// <summary>Holds the job at its next chunk boundary (the guest keeps running).</summary>
    public void Pause() => _running.Reset();

    /// <summary>Lets a paused job go on.</summary>
    public void Resume()
    {
        lock (_lock)
        {
            RestartWindow();
        }

        _running.Set();
        Wake();
    }

    /// <summary>Releases the events.</summary>
    public void Dispose() => _running.Dispose();

    /// <summary>Called by the job between chunks: waits while paused, then sleeps long enough to keep to the speed limit.</summary>
    internal void Yield(long bytesCopied, CancellationToken cancellationToken)
    {
        if (!_running.IsSet)
        {
            _running.Wait(cancellationToken);
        }

        // Sleep until the window's bytes are due; a new speed (or a resume) restarts the window and wakes the sleep.
        while (true)
        {
            TimeSpan wait;
            CancellationToken changed;
            lock (_lock)
            {
                _windowBytes += bytesCopied;
                bytesCopied = 0;
                long limit = Interlocked.Read(ref _speedLimit);
                if (limit <= 0)
                {
                    return;
                }

                wait = TimeSpan.FromSeconds((double)_windowBytes / limit) - Stopwatch.GetElapsedTime(_windowStart);
                changed = _changed.Token;
            }

            if (wait <= TimeSpan.Zero)
            {
                return;
            }

            // Every sleeping worker wakes on a change (each step of a job may sleep in its own thread).
            int woken = WaitHandle.WaitAny([cancellationToken.WaitHandle, changed.WaitHandle], wait);
            cancellationToken.ThrowIfCancellationRequested();
            if (woken == WaitHandle.WaitTimeout)
            {
                return;
            }
        }
    }

    /// <summary>Called by the job before a chunk: at idle priority, waits for a gap in the guest's requests.</summary>
    internal void WaitForGuest(Func<bool> guestBusy, CancellationToken cancellationToken)
    {
        if (!IdlePriority || !guestBusy())
        {
            return;
        }

        long start = Stopwatch.GetTimestamp();
        while (guestBusy() && Stopwatch.GetElapsedTime(start) < IdleWait)
        {
            cancellationToken.ThrowIfCancellationRequested();
            Thread.Sleep(1);
        }
    }

    private void Wake()
    {
        CancellationTokenSource old;
        lock (_lock)
        {
            old = _changed;
            _changed = new CancellationTokenSource();
        }

        // Not disposed: a worker may be waiting on its handle; the source holds no timer, so the GC reclaims it.
        old.Cancel();
    }

    private void RestartWindow()
    {
        _windowStart = Stopwatch.GetTimestamp();
        _windowBytes = 0;
    }
}
