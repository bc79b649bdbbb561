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

    /// <summary>Four windows at a time (qemu-img convert -m), each through <see cref="Copier.CopyWindow"/>.</summary>
    private static void CopyInParallel(IBlockImage source, IBlockImage output, ImageConvertOptions options,
        IProgress<double>? progress, CancellationToken cancellationToken)
    {
        var copier = new Copier(source, output, options);
        ParallelWindows.Run(source.VirtualSize, copier.Window, options.Parallelism, copier.CopyWindow, progress, 1.0, cancellationToken);
    }

    /// <summary>What one window of a convert does: read the data runs, then write them sparse or compressed.</summary>
    private sealed class Copier
    {
        private readonly IBlockImage _source;
        private readonly IBlockImage _target;
        private readonly Qcow2Image? _compressTarget;
        private readonly int _sparse;
        private readonly int _window;

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

            int cluster = target.ClusterSize;
            _window = Math.Max(cluster, options.BufferSize / cluster * cluster);
        }

        /// <summary>Window size: whole target clusters, so compressed writes never straddle two windows.</summary>
        public int Window => _window;

        public void CopyWindow(long offset, int n, CopyBuffer buffer)
        {
            if (FillWindow(offset, n, buffer))
            {
                if (_compressTarget is not null)
                {
                    WriteCompressed(offset, n, buffer);
                }
                else
                {
                    WriteSparse(offset, n, buffer);
                }
            }
        }

        /// <summary>Reads the data runs of the window; zero runs are cleared, not read. False when all of it is zero.</summary>
        private bool FillWindow(long offset, int n, CopyBuffer buffer)
        {
            bool any = false;
            int done = 0;
            while (done < n)
            {
                ChainExtent e = ChainStatus.Get(_source, offset + done, n - done);
                int len = (int)e.Length;
                Span<byte> part = buffer.Span(done, len);
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

        private void WriteCompressed(long offset, int n, CopyBuffer buffer)
        {
            int cluster = _target.ClusterSize;
            for (int at = 0; at < n; at += cluster)
            {
                ReadOnlySpan<byte> data = buffer.Span(at, Math.Min(cluster, n - at));
                if (!IsZero(data))
                {
                    _compressTarget!.WriteCompressed(offset + at, data);
                }
            }
        }

        /// <summary>Writes the window except runs of zeroes of at least the sparse size (aligned to it).</summary>
        private void WriteSparse(long offset, int n, CopyBuffer buffer)
        {
            if (_sparse <= 0)
            {
                _target.Write(offset, buffer.Span(0, n));
                return;
            }

            int runStart = -1;
            for (int at = 0; at < n; at += _sparse)
            {
                int len = Math.Min(_sparse, n - at);
                bool zero = IsZero(buffer.Span(at, len));
                if (!zero && runStart < 0)
                {
                    runStart = at;
                }
                else if (zero && runStart >= 0)
                {
                    _target.Write(offset + runStart, buffer.Span(runStart, at - runStart));
                    runStart = -1;
                }
            }

            if (runStart >= 0)
            {
                _target.Write(offset + runStart, buffer.Span(runStart, n - runStart));
            }
        }

        private static bool IsZero(ReadOnlySpan<byte> data) => !data.ContainsAnyExcept((byte)0);
    }
}
