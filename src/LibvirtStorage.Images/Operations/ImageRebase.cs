using LibvirtStorage.Images.Qcow2;

namespace LibvirtStorage.Images.Operations;

/// <summary>Options of <see cref="ImageRebase"/> (qemu-img rebase's).</summary>
public sealed record ImageRebaseOptions
{
    /// <summary>The overlay's format, or null to probe it (qemu-img rebase -f).</summary>
    public ImageFormat? Format { get; init; }

    /// <summary>
    /// Only rewrite the backing reference, copying nothing (qemu-img rebase -u): for when the new backing
    /// file has the same contents as the old one (renamed or moved).
    /// </summary>
    public bool Unsafe { get; init; }

    /// <summary>Open the images with O_DIRECT (qemu-img rebase -t none).</summary>
    public bool Direct { get; init; }
}

/// <summary>
/// Changes the backing file of a qcow2 image (<c>qemu-img rebase</c>). The safe form first copies into the
/// overlay every run it does not allocate where the old and new backing chains differ, so the guest sees
/// the same disk afterwards; rebasing onto no backing file copies in all the backing data (a "stream").
/// </summary>
public static class ImageRebase
{
    /// <summary>Rebases <paramref name="overlayPath"/> onto <paramref name="newBacking"/> (null or empty: no backing file).</summary>
    /// <param name="overlayPath">The qcow2 image whose backing file changes.</param>
    /// <param name="newBacking">The new backing file as it will be recorded (relative names are relative to the overlay's folder).</param>
    /// <param name="newBackingFormat">Its format, or null to probe it.</param>
    /// <param name="options">Unsafe mode, overlay format, O_DIRECT.</param>
    /// <param name="progress">Receives the fraction done, from 0 to 1.</param>
    /// <param name="cancellationToken">Stops the copy between steps; the backing reference is then unchanged.</param>
    /// <returns>Guest bytes copied into the overlay.</returns>
    public static long Run(string overlayPath, string? newBacking, ImageFormat? newBackingFormat = null, ImageRebaseOptions? options = null,
        IProgress<double>? progress = null, CancellationToken cancellationToken = default)
    {
        options ??= new ImageRebaseOptions();
        if (string.IsNullOrEmpty(newBacking))
        {
            newBacking = null;
            newBackingFormat = null;
        }

        string? newPath = newBacking is null ? null : ImageOpener.ResolveBackingPath(overlayPath, newBacking);
        if (newPath is not null && string.Equals(Path.GetFullPath(newPath), Path.GetFullPath(overlayPath), StringComparison.Ordinal))
        {
            throw new ImageException(ErrorKind.InvalidArgument, "an image cannot be its own backing file", overlayPath);
        }

        if (newPath is not null && newBackingFormat is null && File.Exists(newPath))
        {
            newBackingFormat = ImageOpener.Probe(newPath);
        }

        var overlayOptions = new ImageOpenOptions { Format = options.Format, OpenBacking = !options.Unsafe, Direct = options.Direct };
        using IBlockImage overlay = ImageOpener.Open(overlayPath, overlayOptions);
        if (overlay is not Qcow2Image q)
        {
            throw new ImageException(ErrorKind.InvalidArgument, "only qcow2 images have a backing file to change", overlayPath);
        }

        long copied = 0;
        if (!options.Unsafe)
        {
            if (newPath is null)
            {
                copied = CopyDifferences(overlay, null, progress, cancellationToken);
            }
            else
            {
                var newOptions = new ImageOpenOptions { ReadOnly = true, Format = newBackingFormat, Direct = options.Direct };
                using IBlockImage newChain = ImageOpener.Open(newPath, newOptions);
                copied = CopyDifferences(overlay, newChain, progress, cancellationToken);
            }

            overlay.Flush();
        }

        q.SetBackingFile(newBacking, newBackingFormat);
        overlay.Flush();
        progress?.Report(1.0);
        return copied;
    }

    /// <summary>
    /// For each run the overlay does not allocate, compares what its old backing chain and the new one
    /// hold there and writes the old contents into the overlay where they differ. Runs that read as zero
    /// in both chains are never read.
    /// </summary>
    private static long CopyDifferences(IBlockImage overlay, IBlockImage? newChain, IProgress<double>? progress, CancellationToken cancellationToken)
    {
        IBlockImage? oldChain = overlay.Backing;
        long size = overlay.VirtualSize;
        int half = CopyBuffer.DefaultSize / 2;
        using var buffer = new CopyBuffer();
        long copied = 0;
        long offset = 0;
        while (offset < size)
        {
            cancellationToken.ThrowIfCancellationRequested();
            long want = Math.Min(size - offset, half);
            if (ChainStatus.IsAllocatedInTop(overlay, offset, want, out long len))
            {
                offset += len;
                continue;
            }

            int n = (int)len;
            Span<byte> oldData = buffer.Span(0, n);
            Span<byte> newData = buffer.Span(half, n);
            bool oldZero = ReadOrZero(oldChain, offset, oldData, ref n);
            bool newZero = ReadOrZero(newChain, offset, newData, ref n);
            oldData = oldData[..n];
            newData = newData[..n];
            if (!(oldZero && newZero))
            {
                copied += WriteDifferences(overlay, offset, oldData, newData);
            }

            offset += n;
            progress?.Report((double)offset / size);
        }

        return copied;
    }

    /// <summary>
    /// Fills <paramref name="destination"/> from the chain at <paramref name="offset"/>, or with zeroes past
    /// its end or where it reads as zero (then <paramref name="length"/> may shrink to that zero run and true
    /// is returned without reading).
    /// </summary>
    private static bool ReadOrZero(IBlockImage? chain, long offset, Span<byte> destination, ref int length)
    {
        if (chain is null || offset >= chain.VirtualSize)
        {
            destination[..length].Clear();
            return true;
        }

        ChainExtent e = ChainStatus.Get(chain, offset, length);
        if (e.Zero)
        {
            length = (int)e.Length;
            destination[..length].Clear();
            return true;
        }

        int n = (int)Math.Min(length, chain.VirtualSize - offset);
        chain.Read(offset, destination[..n]);
        destination[n..length].Clear();
        return false;
    }

    /// <summary>Writes the runs (in 512-byte sectors, as qemu-img compares) where old and new differ.</summary>
    private static long WriteDifferences(IBlockImage overlay, long offset, ReadOnlySpan<byte> oldData, ReadOnlySpan<byte> newData)
    {
        const int Sector = 512;
        long written = 0;
        int n = oldData.Length;
        int at = 0;
        while (at < n)
        {
            int len = Math.Min(Sector, n - at);
            if (oldData.Slice(at, len).SequenceEqual(newData.Slice(at, len)))
            {
                at += len;
                continue;
            }

            int start = at;
            while (at < n)
            {
                len = Math.Min(Sector, n - at);
                if (oldData.Slice(at, len).SequenceEqual(newData.Slice(at, len)))
                {
                    break;
                }

                at += len;
            }

            overlay.Write(offset + start, oldData[start..at]);
            written += at - start;
        }

        return written;
    }
}
