namespace LibvirtStorage.Images.Operations;

/// <summary>Copies one window [offset, offset+length) of a disk, using the worker's own buffer.</summary>
internal delegate void WindowCopy(long offset, int length, CopyBuffer buffer);

/// <summary>
/// Runs a copy over a disk in fixed windows on a few threads at once, like qemu-img's parallel requests
/// (convert -m): reads, writes and compression of different windows overlap. The engine is safe for
/// concurrent use. The first failure stops the other workers and is rethrown; progress only goes up.
/// </summary>
internal sealed class ParallelWindows
{
    private readonly long _size;
    private readonly int _window;
    private readonly IProgress<double>? _progress;
    private readonly double _progressScale;
    private long _next = -1;
    private long _done;
    private volatile bool _stopped;

    private ParallelWindows(long size, int window, IProgress<double>? progress, double progressScale)
    {
        _size = size;
        _window = window;
        _progress = progress;
        _progressScale = progressScale;
    }

    /// <param name="size">Bytes to cover from offset 0.</param>
    /// <param name="window">Bytes per window (also the size of each worker's buffer).</param>
    /// <param name="workers">Threads (1 to 16).</param>
    /// <param name="copy">The work for one window.</param>
    /// <param name="progress">Receives the fraction done times <paramref name="progressScale"/>.</param>
    /// <param name="progressScale">The share of the whole operation this copy represents.</param>
    /// <param name="cancellationToken">Checked between windows.</param>
    public static void Run(long size, int window, int workers, WindowCopy copy, IProgress<double>? progress,
        double progressScale, CancellationToken cancellationToken)
    {
        var run = new ParallelWindows(size, window, progress, progressScale);
        Exception? failure = null;
        var threads = new Thread[Math.Clamp(workers, 1, 16)];
        for (int i = 0; i < threads.Length; i++)
        {
            threads[i] = new Thread(() =>
            {
                try
                {
                    using var buffer = new CopyBuffer(window);
                    run.Work(copy, buffer, cancellationToken);
                }
                catch (Exception e)
                {
                    Interlocked.CompareExchange(ref failure, e, null);
                    run._stopped = true;
                }
            })
            { IsBackground = true, Name = "lvstor-copy" };
            threads[i].Start();
        }

        foreach (Thread t in threads)
        {
            t.Join();
        }

        if (failure is not null)
        {
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(failure);
        }
    }

    private void Work(WindowCopy copy, CopyBuffer buffer, CancellationToken cancellationToken)
    {
        while (!_stopped)
        {
            long offset = Interlocked.Increment(ref _next) * _window;
            if (offset >= _size)
            {
                return;
            }

            cancellationToken.ThrowIfCancellationRequested();
            int length = (int)Math.Min(_window, _size - offset);
            copy(offset, length, buffer);
            Complete(length);
        }
    }

    private void Complete(int length)
    {
        lock (_progressLock)
        {
            _done += length;
            _progress?.Report((double)_done / _size * _progressScale);
        }
    }

    private readonly object _progressLock = new();
}
