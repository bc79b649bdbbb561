namespace LibvirtStorage.Images.Operations;

/// <summary>
/// Compares what two images (each with its backing chain) show the guest (<c>qemu-img compare</c>):
/// runs that read as zero in both are not read. When sizes differ, the extra part of the larger image
/// must read as zeroes, unless <c>strict</c> asks for equal sizes.
/// </summary>
public static class ImageCompare
{
    /// <summary>The first guest offset where the images differ, or null when they show the same disk.</summary>
    /// <param name="a">First image.</param>
    /// <param name="b">Second image.</param>
    /// <param name="strict">Images of different sizes differ (qemu-img compare -s).</param>
    /// <param name="cancellationToken">Stops the comparison between steps.</param>
    public static long? FirstDifference(IBlockImage a, IBlockImage b, bool strict = false, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(a);
        ArgumentNullException.ThrowIfNull(b);
        long common = Math.Min(a.VirtualSize, b.VirtualSize);
        if (strict && a.VirtualSize != b.VirtualSize)
        {
            return common;
        }

        int half = CopyBuffer.DefaultSize / 2;
        using var buffer = new CopyBuffer();
        long offset = 0;
        while (offset < common)
        {
            cancellationToken.ThrowIfCancellationRequested();
            long want = Math.Min(common - offset, half);
            ChainExtent ea = ChainStatus.Get(a, offset, want);
            ChainExtent eb = ChainStatus.Get(b, offset, Math.Min(want, ea.Length));
            int n = (int)Math.Min(ea.Length, eb.Length);
            if (!(ea.Zero && eb.Zero))
            {
                Span<byte> da = buffer.Span(0, n);
                Span<byte> db = buffer.Span(half, n);
                ReadRun(a, ea, offset, da);
                ReadRun(b, eb, offset, db);
                int i = da.CommonPrefixLength(db);
                if (i < n)
                {
                    return offset + i;
                }
            }

            offset += n;
        }

        IBlockImage larger = a.VirtualSize > b.VirtualSize ? a : b;
        return FirstNonZero(larger, common, buffer, cancellationToken);
    }

    private static void ReadRun(IBlockImage image, in ChainExtent e, long offset, Span<byte> destination)
    {
        if (e.Zero)
        {
            destination.Clear();
        }
        else
        {
            image.Read(offset, destination);
        }
    }

    private static long? FirstNonZero(IBlockImage image, long offset, CopyBuffer buffer, CancellationToken cancellationToken)
    {
        long size = image.VirtualSize;
        while (offset < size)
        {
            cancellationToken.ThrowIfCancellationRequested();
            ChainExtent e = ChainStatus.Get(image, offset, Math.Min(size - offset, buffer.Size));
            if (!e.Zero)
            {
                Span<byte> span = buffer.Span((int)e.Length);
                image.Read(offset, span);
                int i = span.IndexOfAnyExcept((byte)0);
                if (i >= 0)
                {
                    return offset + i;
                }
            }

            offset += e.Length;
        }

        return null;
    }
}
