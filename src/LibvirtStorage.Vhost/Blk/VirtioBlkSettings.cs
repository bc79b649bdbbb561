namespace LibvirtStorage.Vhost.Blk;

/// <summary>
/// Per-export settings of a virtio-blk device: what the config space advertises and what the handler enforces.
/// Sector counts are in 512-byte units, as on the wire. A limit of 0 for discard or write zeroes turns the command
/// off (its feature bit is not offered and the request gets VIRTIO_BLK_S_UNSUPP).
/// </summary>
internal sealed record VirtioBlkSettings
{
    /// <summary>Largest <see cref="SegMax"/>: the capacity of <see cref="VirtioBlkRequest"/>'s segment list.</summary>
    public const uint MaxSegMax = VirtioBlkRequest.MaxDataSegments;

    /// <summary>Largest max_discard_seg / max_write_zeroes_seg: the segments are copied to the stack.</summary>
    public const uint MaxRangeSegments = 256;

    /// <summary>Number of request queues (num_queues); 1 to 64.</summary>
    public ushort NumQueues { get; init; } = 1;

    /// <summary>Most data segments per request (seg_max); QEMU's default is queue size - 2.</summary>
    public uint SegMax { get; init; } = 254;

    /// <summary>Most sectors in one discard segment (max_discard_sectors); 0 disables discard.</summary>
    public uint MaxDiscardSectors { get; init; } = 32768;

    /// <summary>Most segments in one discard request (max_discard_seg).</summary>
    public uint MaxDiscardSegments { get; init; } = 1;

    /// <summary>Discard granularity hint for the driver, in sectors (discard_sector_alignment); 0 means the block size.</summary>
    public uint DiscardSectorAlignment { get; init; }

    /// <summary>Most sectors in one write-zeroes segment (max_write_zeroes_sectors); 0 disables write zeroes.</summary>
    public uint MaxWriteZeroesSectors { get; init; } = 32768;

    /// <summary>Most segments in one write-zeroes request (max_write_zeroes_seg).</summary>
    public uint MaxWriteZeroesSegments { get; init; } = 1;

    /// <summary>Whether write zeroes with the unmap flag may deallocate (write_zeroes_may_unmap).</summary>
    public bool WriteZeroesMayUnmap { get; init; } = true;

    /// <summary>
    /// Whether the device has a volatile write cache that FLUSH makes durable (writeback). When false
    /// (write-through) VIRTIO_BLK_F_FLUSH is not offered and the handler flushes the device after every successful
    /// OUT, DISCARD and WRITE_ZEROES before completing it, so a completed write survives a crash of the back-end.
    /// </summary>
    public bool Writeback { get; init; } = true;

    /// <summary>
    /// How many requests of one queue run at once (1 to 64): the queue's worker plus this many - 1 I/O threads of
    /// the queue share each batch of available requests; 1 runs them one after another on the worker.
    /// </summary>
    public int ParallelRequestsPerQueue { get; init; } = VhostUserBlkOptions.DefaultParallelRequestsPerQueue;

    /// <summary>Checks the ranges; a control-plane call, so a bad value throws.</summary>
    public void Validate()
    {
        ArgumentOutOfRangeException.ThrowIfZero(NumQueues);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(NumQueues, (ushort)64);
        ArgumentOutOfRangeException.ThrowIfLessThan(ParallelRequestsPerQueue, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(ParallelRequestsPerQueue, Backend.QueueChainRunner.MaxParallel);
        ArgumentOutOfRangeException.ThrowIfZero(SegMax);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(SegMax, MaxSegMax);
        CheckRange(MaxDiscardSectors, MaxDiscardSegments, nameof(MaxDiscardSegments));
        CheckRange(MaxWriteZeroesSectors, MaxWriteZeroesSegments, nameof(MaxWriteZeroesSegments));
    }

    private static void CheckRange(uint sectors, uint segments, string name)
    {
        // Sectors per segment stay below 2^22 so that a segment's byte length fits an int, as in QEMU.
        ArgumentOutOfRangeException.ThrowIfGreaterThan(sectors, (uint)(int.MaxValue >> 9));
        if (sectors != 0 && (segments == 0 || segments > MaxRangeSegments))
        {
            ThrowHelper.ArgumentOutOfRange(name, $"must be 1 to {MaxRangeSegments} when the command is enabled");
        }
    }
}
