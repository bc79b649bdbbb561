namespace LibvirtStorage.Images.Operations;

/// <summary>
/// What a whole backing chain holds for a run of bytes: the status of the first layer, from the top,
/// that decides the contents (qemu-img.c get_block_status, QEMU 7.2).
/// </summary>
/// <param name="Length">Bytes from the queried offset that share this status.</param>
/// <param name="Depth">Index of the deciding layer: 0 is the top.</param>
/// <param name="Present">The deciding layer allocates the run (QEMU's BDRV_BLOCK_ALLOCATED).</param>
/// <param name="Zero">The run reads as zeroes.</param>
/// <param name="Data">The run is backed by data in the deciding layer's file.</param>
/// <param name="HostOffset">Where the data lives in the deciding layer's file, when it is stored there uncompressed.</param>
/// <param name="Layer">The deciding layer.</param>
internal readonly record struct ChainExtent(long Length, int Depth, bool Present, bool Zero, bool Data, long? HostOffset, IBlockImage Layer);

/// <summary>Walks <see cref="IBlockImage.GetBlockStatus"/> down <see cref="IBlockImage.Backing"/>.</summary>
internal static class ChainStatus
{
    /// <summary>
    /// The status at <paramref name="offset"/> of the chain whose top is <paramref name="top"/>, for at
    /// most <paramref name="length"/> bytes (and never past the top's virtual size).
    /// </summary>
    /// <remarks>
    /// Mirrors QEMU's block layer: a layer that does not allocate a run defers to its backing image; a
    /// layer without a backing image, or whose backing image ends before the run, reads as zeroes there
    /// without allocating it (present=false, zero=true; with the host offset of an allocated cluster whose
    /// subclusters are unallocated, as QEMU reports it). Raw layers always allocate, and their host offset
    /// is the guest offset (QEMU reports it for holes too).
    /// </remarks>
    public static ChainExtent Get(IBlockImage top, long offset, long length)
    {
        length = Math.Min(length, top.VirtualSize - offset);
        if (length <= 0)
        {
            throw new ArgumentOutOfRangeException(nameof(offset), offset, "offset is at or past the end of the image");
        }

        IBlockImage layer = top;
        int depth = 0;
        while (true)
        {
            BlockStatus s = layer.GetBlockStatus(offset, length);
            if (s.Length <= 0)
            {
                // The layer is shorter than the run: QEMU treats bytes past its end as allocated zeroes.
                return new ChainExtent(length, depth, true, true, false, null, layer);
            }

            length = Math.Min(length, s.Length);
            bool raw = layer.Format == ImageFormat.Raw;
            if (raw || s.Allocated || s.Data)
            {
                long? host = raw ? offset : s.HostOffset;
                return new ChainExtent(length, depth, true, s.Zero, s.Data, host, layer);
            }

            IBlockImage? backing = layer.Backing;
            if (backing is null || offset >= backing.VirtualSize)
            {
                // An unallocated subcluster of an allocated cluster keeps its host offset (QEMU reports it).
                return new ChainExtent(length, depth, false, true, false, s.HostOffset, layer);
            }

            length = Math.Min(length, backing.VirtualSize - offset);
            layer = backing;
            depth++;
        }
    }

    /// <summary>True when the top layer alone decides the contents of the run (it is allocated there).</summary>
    public static bool IsAllocatedInTop(IBlockImage image, long offset, long length, out long runLength)
    {
        BlockStatus s = image.GetBlockStatus(offset, length);
        runLength = s.Length <= 0 ? length : Math.Min(length, s.Length);
        return image.Format == ImageFormat.Raw || s.Allocated || s.Data;
    }
}
