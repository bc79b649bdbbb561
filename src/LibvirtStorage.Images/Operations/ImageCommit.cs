using LibvirtStorage.Images.Qcow2;

namespace LibvirtStorage.Images.Operations;

/// <summary>Options of <see cref="ImageCommit"/> (qemu-img commit's).</summary>
public sealed record ImageCommitOptions
{
    /// <summary>The top image's format, or null to probe it (qemu-img commit -f).</summary>
    public ImageFormat? Format { get; init; }

    /// <summary>Leave the top image's contents in place (qemu-img commit -d); by default it is emptied.</summary>
    public bool KeepTop { get; init; }

    /// <summary>Open both images with O_DIRECT (qemu-img commit -t none).</summary>
    public bool Direct { get; init; }
}

/// <summary>What <see cref="ImageCommit"/> did.</summary>
/// <param name="BackingPath">The image committed into.</param>
/// <param name="BytesCommitted">Guest bytes copied or zeroed in the backing image.</param>
/// <param name="TopEmptied">The top image no longer allocates anything.</param>
public sealed record ImageCommitResult(string BackingPath, long BytesCommitted, bool TopEmptied);

/// <summary>
/// Commits the top layer of a chain into its backing image (<c>qemu-img commit</c>): every run the top
/// allocates is written into the backing image (which grows to the top's size when it is smaller), then
/// the top is emptied unless asked to keep it, and both are flushed.
/// </summary>
/// <remarks>
/// The top is opened without its chain, and its backing image is opened separately for writing (with
/// its own chain read-only beneath it), so the engine's "backing images are read-only" rule holds.
/// Emptying a version 3 top with nothing but a backing reference re-creates it with the same parameters
/// (QEMU's make_completely_empty); otherwise (version 2, snapshots, bitmaps, unknown extensions) every
/// cluster is discarded with the backing chain closed, which leaves them unallocated (QEMU's full discard).
/// </remarks>
public static class ImageCommit
{
    /// <summary>Commits <paramref name="topPath"/> into its backing file.</summary>
    /// <exception cref="ImageException">The image has no backing file, or an image cannot be opened or written.</exception>
    public static ImageCommitResult Run(string topPath, ImageCommitOptions? options = null, IProgress<double>? progress = null,
        CancellationToken cancellationToken = default)
    {
        options ??= new ImageCommitOptions();
        var topOptions = new ImageOpenOptions { Format = options.Format, OpenBacking = false, ReadOnly = options.KeepTop, Direct = options.Direct };
        string backingPath;
        long committed;
        ImageCreateOptions? recreate = null;
        using (IBlockImage top = ImageOpener.Open(topPath, topOptions))
        {
            if (top is not Qcow2Image q || q.BackingFileName is not string backingName)
            {
                throw new ImageException(ErrorKind.InvalidArgument, "image does not have a backing file", topPath);
            }

            backingPath = ImageOpener.ResolveBackingPath(topPath, backingName);
            var backingOptions = new ImageOpenOptions { Format = q.BackingFormat, Direct = options.Direct };
            using (IBlockImage backing = ImageOpener.Open(backingPath, backingOptions))
            {
                if (backing.VirtualSize < top.VirtualSize)
                {
                    backing.Resize(top.VirtualSize);
                }

                committed = CopyAllocated(top, backing, progress, cancellationToken);
                backing.Flush();
            }

            if (!options.KeepTop)
            {
                if (CanRecreate(q))
                {
                    recreate = SameParameters(q);
                }
                else
                {
                    EmptyByDiscard(top);
                }
            }
        }

        // The backing file is durable before the top forgets its data: a crash in between loses nothing.
        if (recreate is not null)
        {
            ImageOpener.Create(topPath, recreate);
        }

        progress?.Report(1.0);
        return new ImageCommitResult(backingPath, committed, !options.KeepTop);
    }

    /// <summary>The creation parameters that reproduce <paramref name="q"/> as an empty image.</summary>
    internal static ImageCreateOptions SameParameters(Qcow2Image q) => new()
    {
        Format = ImageFormat.Qcow2,
        Size = q.VirtualSize,
        ClusterSize = q.ClusterSize,
        Version = q.Version,
        RefcountBits = q.RefcountBits,
        BackingFile = q.BackingFileName,
        BackingFormat = q.BackingFormat,
        ExtendedL2 = q.ExtendedL2,
        CompressionType = q.CompressionType,
        LazyRefcounts = q.LazyRefcounts,
    };

    /// <summary>
    /// QEMU's condition for make_completely_empty: version 3, and nothing a fresh image would lose
    /// (internal snapshots, bitmaps, an external data file, or header extensions we do not know).
    /// </summary>
    private static bool CanRecreate(Qcow2Image q)
    {
        if (q.Version < 3 || q.SnapshotCount != 0 || (q.Header.IncompatibleFeatures & Qcow2Header.IncompatDataFile) != 0)
        {
            return false;
        }

        foreach (Qcow2HeaderExtension e in q.Header.Extensions)
        {
            if (e.Type is not Qcow2Header.ExtBackingFormat and not Qcow2Header.ExtFeatureNames)
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>Copies every range the top allocates into the backing image, four 2 MiB windows at a time.</summary>
    private static long CopyAllocated(IBlockImage top, IBlockImage backing, IProgress<double>? progress, CancellationToken cancellationToken)
    {
        long committed = 0;
        ParallelWindows.Run(top.VirtualSize, CopyBuffer.DefaultSize, workers: 4, (offset, length, buffer) =>
        {
            long end = offset + length;
            while (offset < end)
            {
                BlockStatus s = top.GetBlockStatus(offset, end - offset);
                long len = s.Length <= 0 ? end - offset : s.Length;
                if (s.Allocated || s.Data)
                {
                    if (s.Zero)
                    {
                        backing.WriteZeroes(offset, len, unmap: false);
                    }
                    else
                    {
                        Span<byte> span = buffer.Span((int)len);
                        top.Read(offset, span);
                        backing.Write(offset, span);
                    }

                    Interlocked.Add(ref committed, len);
                }

                offset += len;
            }
        }, progress, 0.95, cancellationToken);
        return committed;
    }

    private static void EmptyByDiscard(IBlockImage top)
    {
        top.Discard(0, top.VirtualSize);
        top.Flush();
        long size = top.VirtualSize;
        for (long offset = 0; offset < size;)
        {
            BlockStatus s = top.GetBlockStatus(offset, size - offset);
            if (s.Allocated)
            {
                throw new ImageException(ErrorKind.UnsupportedFeature,
                    "the data was committed, but the top image could not be emptied; delete or re-create it", top.Path);
            }

            offset += Math.Max(s.Length, 1);
        }
    }
}
