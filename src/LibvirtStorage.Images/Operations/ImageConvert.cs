using LibvirtStorage.Images.Qcow2;

namespace LibvirtStorage.Images.Operations;

/// <summary>Tuning of <see cref="ImageConvert"/> (qemu-img convert's options).</summary>
public sealed record ImageConvertOptions
{
    /// <summary>Write every non-zero cluster compressed (qemu-img convert -c; qcow2 targets only).</summary>
    public bool Compress { get; init; }

    /// <summary>
    /// Smallest run of zero bytes that is skipped instead of written (qemu-img convert -S; default 4 KiB).
    /// 0 writes everything the source holds as data, zeroes included.
    /// </summary>
    public int SparseSize { get; init; } = 4096;

    /// <summary>Bytes copied per step (2 MiB by default).</summary>
    public int BufferSize { get; init; } = 2 << 20;

    /// <summary>Open the target with O_DIRECT (qemu-img convert -t none).</summary>
    public bool Direct { get; init; }

    /// <summary>Windows copied at once (qemu-img convert -m; default 4).</summary>
    public int Parallelism { get; init; } = 4;
}

/// <summary>
/// Copies the contents of a whole backing chain into a new, standalone raw or qcow2 image
/// (<c>qemu-img convert</c>). Runs the chain reports as zero or unallocated are never read, zero runs
/// inside data are detected and skipped, so the target stays sparse; qcow2 targets may be compressed.
/// </summary>
public static class ImageConvert
{
    /// <summary>Converts <paramref name="source"/> (with its chain) into a new image at <paramref name="targetPath"/>.</summary>
    /// <param name="source">The top of the source chain, opened with its backing images.</param>
    /// <param name="targetPath">The new image; an existing file is replaced.</param>
    /// <param name="target">Format and creation options of the target; its size is the source's.</param>
    /// <param name="options">Compression, zero detection and buffer size.</param>
    /// <param name="progress">Receives the fraction done, from 0 to 1.</param>
    /// <param name="cancellationToken">Stops the copy between steps.</param>
    public static void Run(IBlockImage source, string targetPath, ImageCreateOptions target, ImageConvertOptions? options = null,
        IProgress<double>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentNullException.ThrowIfNull(target);
        options ??= new ImageConvertOptions();
        if (target.BackingFile is not null)
        {
            throw new ImageException(ErrorKind.InvalidArgument, "converting onto a backing file (-B) is not supported", targetPath);
        }

        if (options.Compress && target.Format != ImageFormat.Qcow2)
        {
            throw new ImageException(ErrorKind.InvalidArgument, "compression (-c) needs a qcow2 target", targetPath);
        }

        if (string.Equals(Path.GetFullPath(targetPath), Path.GetFullPath(source.Path), StringComparison.Ordinal))
        {
            throw new ImageException(ErrorKind.InvalidArgument, "the target is the source image", targetPath);
        }

        long size = source.VirtualSize;
        ImageOpener.Create(targetPath, target with { Size = size });
        var openOptions = new ImageOpenOptions { Format = target.Format, OpenBacking = false, Direct = options.Direct };
        using IBlockImage output = ImageOpener.Open(targetPath, openOptions);
        CopyInParallel(source, output, options, progress, cancellationToken);
        output.Flush();
        progress?.Report(1.0);
    }

    /// <summary>
    /// Like qemu-img convert's parallel requests (-m): a few copiers take windows in turn, so reads,
    /// writes and compression of different windows overlap. The engine is safe for concurrent use.
    /// </summary>
    private static void CopyInParallel(IBlockImage source, IBlockImage output, ImageConvertOptions options,
        IProgress<double>? progress, CancellationToken cancellationToken)
    {
        int workers = Math.Clamp(options.Parallelism, 1, 16);
        var next = new WindowCounter();
        Exception? failure = null;
        var threads = new Thread[workers];
        for (int i = 0; i < workers; i++)
        {
            threads[i] = new Thread(() =>
            {
                try
                {
                    using var copier = new Copier(source, output, options);
                    copier.CopyWindows(next, progress, cancellationToken);
                }
                catch (Exception e)
                {
                    Interlocked.CompareExchange(ref failure, e, null);
                    next.Stop();
                }
            })
            { IsBackground = true, Name = "lvstor-convert" };
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

    /// <summary>Hands out window numbers to the copiers; stopped on the first failure.</summary>
    private sealed class WindowCounter
    {
        private long _next = -1;
        private long _done;
        private volatile bool _stopped;

        public bool TryTake(out long window)
        {
            window = Interlocked.Increment(ref _next);
            return !_stopped;
        }

        public long Complete(long bytes) => Interlocked.Add(ref _done, bytes);

        public void Stop() => _stopped = true;
    }

    /// <summary>The copy loop of one worker, with its pooled buffer.</summary>
    private sealed class Copier : IDisposable
    {
        private readonly IBlockImage _source;
        private readonly IBlockImage _target;
        private readonly Qcow2Image? _compressTarget;
        private readonly int _sparse;
        private readonly int _window;
        private readonly CopyBuffer _buffer;

        public Copier(IBlockImage source, IBlockImage target, ImageConvertOptions options)
        {
            _source = source;
            _target = target;
            _sparse = options.SparseSize;
            if (options.Compress)
            {
                _compressTarget = target as Qcow2Image
                    ?? throw new ImageException(ErrorKind.InvalidArgument, "compression needs a qcow2 target", target.Path);
            }

            // Windows are whole target clusters so compressed writes never straddle two windows.
            int cluster = target.ClusterSize;
            _window = Math.Max(cluster, options.BufferSize / cluster * cluster);
            _buffer = new CopyBuffer(_window);
        }

        public void CopyWindows(WindowCounter counter, IProgress<double>? progress, CancellationToken cancellationToken)
        {
            long size = _source.VirtualSize;
            while (counter.TryTake(out long window) && window * _window < size)
            {
                cancellationToken.ThrowIfCancellationRequested();
                long offset = window * _window;
                int n = (int)Math.Min(_window, size - offset);
                if (FillWindow(offset, n))
                {
                    if (_compressTarget is not null)
                    {
                        WriteCompressed(offset, n);
                    }
                    else
                    {
                        WriteSparse(offset, n);
                    }
                }

                progress?.Report((double)counter.Complete(n) / size);
            }
        }

        public void Dispose() => _buffer.Dispose();

        /// <summary>Reads the data runs of the window; zero runs are cleared, not read. False when all of it is zero.</summary>
        private bool FillWindow(long offset, int n)
        {
            bool any = false;
            int done = 0;
            while (done < n)
            {
                ChainExtent e = ChainStatus.Get(_source, offset + done, n - done);
                int len = (int)e.Length;
                Span<byte> part = _buffer.Span(done, len);
                if (e.Zero)
                {
                    part.Clear();
                }
                else
                {
                    _source.Read(offset + done, part);
                    any = true;
                }

                done += len;
            }

            return any;
        }

        private void WriteCompressed(long offset, int n)
        {
            int cluster = _target.ClusterSize;
            for (int at = 0; at < n; at += cluster)
            {
                ReadOnlySpan<byte> data = _buffer.Span(at, Math.Min(cluster, n - at));
                if (!IsZero(data))
                {
                    _compressTarget!.WriteCompressed(offset + at, data);
                }
            }
        }

        /// <summary>Writes the window except runs of zeroes of at least the sparse size (aligned to it).</summary>
        private void WriteSparse(long offset, int n)
        {
            if (_sparse <= 0)
            {
                _target.Write(offset, _buffer.Span(0, n));
                return;
            }

            int runStart = -1;
            for (int at = 0; at < n; at += _sparse)
            {
                int len = Math.Min(_sparse, n - at);
                bool zero = IsZero(_buffer.Span(at, len));
                if (!zero && runStart < 0)
                {
                    runStart = at;
                }
                else if (zero && runStart >= 0)
                {
                    _target.Write(offset + runStart, _buffer.Span(runStart, at - runStart));
                    runStart = -1;
                }
            }

            if (runStart >= 0)
            {
                _target.Write(offset + runStart, _buffer.Span(runStart, n - runStart));
            }
        }

        private static bool IsZero(ReadOnlySpan<byte> data) => !data.ContainsAnyExcept((byte)0);
    }
}
