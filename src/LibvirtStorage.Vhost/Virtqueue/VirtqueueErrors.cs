namespace LibvirtStorage.Vhost.Virtqueue;

/// <summary>Why a queue cannot run, or stopped: the queue (or device) must be marked broken (NEEDS_RESET).</summary>
internal enum QueueError : byte
{
    /// <summary>No error.</summary>
    None,

    /// <summary>The queue has not passed <see cref="SplitVirtqueue.Validate"/> since it was last configured.</summary>
    NotReady,

    /// <summary>The size is zero, not a power of two, or above 32768.</summary>
    BadSize,

    /// <summary>A ring address lacks its required alignment (16, 2 and 4 bytes).</summary>
    Misaligned,

    /// <summary>The descriptor table is not entirely inside guest memory.</summary>
    DescTableOutsideMemory,

    /// <summary>The available ring is not entirely inside guest memory.</summary>
    AvailRingOutsideMemory,

    /// <summary>The used ring is not entirely inside writable guest memory.</summary>
    UsedRingOutsideMemory,

    /// <summary>A ring field could not be read or written (the memory table changed under the queue).</summary>
    RingInaccessible,

    /// <summary>The driver's avail idx moved more than the queue size past our last_avail_idx.</summary>
    AvailIndexTooFar,

    /// <summary>An available-ring entry names a head descriptor index ≥ the queue size.</summary>
    HeadOutOfRange,

    /// <summary>The inflight area (SET_INFLIGHT_FD) has fewer entries per queue than the queue size.</summary>
    InflightAreaTooSmall,

    /// <summary>
    /// The inflight area cannot describe this queue: an unknown version, a last batch longer than the queue or
    /// naming a head ≥ the queue size, or an inflight flag that is not 0/1 or sits on a head ≥ the queue size.
    /// </summary>
    InflightAreaCorrupt,
}

/// <summary>Why one descriptor chain is unusable; the request completes with length 0, the queue goes on.</summary>
internal enum ChainError : byte
{
    /// <summary>No error.</summary>
    None,

    /// <summary>A next index is outside the descriptor table it refers to.</summary>
    IndexOutOfRange,

    /// <summary>The chain has more descriptors than the queue size (or loops).</summary>
    TooLong,

    /// <summary>The chain's buffers add up to more than 2^32 - 1 bytes (§2.7.5).</summary>
    TooManyBytes,

    /// <summary>A descriptor could not be read from guest memory.</summary>
    DescriptorUnreadable,

    /// <summary>An indirect table contains another indirect descriptor (§2.7.5.3.1).</summary>
    NestedIndirect,

    /// <summary>A descriptor has both INDIRECT and NEXT set (§2.7.5.3.1).</summary>
    IndirectWithNext,

    /// <summary>An indirect table's length is 0, not a multiple of 16, or has more entries than the queue size.</summary>
    BadIndirectLength,

    /// <summary>An indirect table is not entirely inside guest memory.</summary>
    IndirectTableOutsideMemory,

    /// <summary>A buffer's address plus length wraps around 2^64.</summary>
    BufferWraps,

    /// <summary>A buffer is not entirely inside (writable, for a write-only buffer) guest memory.</summary>
    BufferOutsideMemory,

    /// <summary>A device-readable buffer follows a device-writable one (§2.7.4).</summary>
    ReadableAfterWritable,
}

/// <summary>The outcome of <see cref="SplitVirtqueue.TryPopAvail"/>.</summary>
internal enum PopResult : byte
{
    /// <summary>No available chain.</summary>
    Empty,

    /// <summary>A chain was popped.</summary>
    Chain,

    /// <summary>The queue is broken; see <see cref="SplitVirtqueue.Error"/>.</summary>
    Broken,
}
