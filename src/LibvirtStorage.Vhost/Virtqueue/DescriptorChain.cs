using LibvirtStorage.Vhost.Memory;

namespace LibvirtStorage.Vhost.Virtqueue;

/// <summary>
/// Walks the descriptor chain starting at one head (virtio 1.2 §2.7.5), following NEXT links and one level of
/// INDIRECT table (§2.7.5.3), and yields each buffer as a <see cref="DescriptorSegment"/>.
/// </summary>
/// <remarks>
/// <para>
/// Every descriptor is copied out of guest memory before any field of it is looked at, so a guest rewriting the
/// table cannot change a value between its check and its use. The walk ends with <see cref="Error"/> set instead
/// of hanging or throwing: a time-to-live of the queue size bounds the buffers of the whole chain (direct and
/// indirect together, "a chain no longer than the Queue Size", §2.7.5.3.1), so loops end with
/// <see cref="ChainError.TooLong"/>. The descriptor that points at an indirect table is not a buffer and does not
/// count. The buffers' lengths add up to at most 2^32 - 1 bytes (§2.7.5), so a total always fits a <c>uint</c>.
/// </para>
/// <para>
/// A mutable struct with no allocation: keep it in a local or a field and pass it by <see langword="ref"/>. A copy
/// taken before the walk can walk again (for example once to find the status byte, once for the data). It is
/// valid only while the caller holds the lease on the memory it was popped with.
/// </para>
/// </remarks>
internal struct DescriptorChain
{
    /// <summary>Largest indirect table accepted beyond the queue size (QEMU's VIRTQUEUE_MAX_SIZE).</summary>
    internal const uint MaxIndirectEntries = 1024;

    private readonly GuestMemory? _memory;
    private readonly ushort _queueSize;
    private GuestAddress _table;
    private uint _tableEntries;
    private uint _next;
    private uint _ttl;
    private ulong _totalBytes;
    private bool _hasNext;
    private bool _inIndirect;
    private bool _sawWritable;

    internal DescriptorChain(GuestMemory memory, GuestAddress descTable, ushort queueSize, ushort head)
    {
        _memory = memory;
        _queueSize = queueSize;
        _table = descTable;
        _tableEntries = queueSize;
        _next = head;
        _ttl = queueSize;
        _hasNext = true;
        Head = head;
    }

    /// <summary>The head descriptor index, to hand back in <see cref="SplitVirtqueue.AddUsed"/>.</summary>
    public ushort Head { get; }

    /// <summary>Why the walk stopped early, or <see cref="ChainError.None"/>.</summary>
    public ChainError Error { get; private set; }

    /// <summary>
    /// Yields the next buffer. Returns <see langword="false"/> at the end of the chain, or on an error, which
    /// <see cref="Error"/> then names.
    /// </summary>
    /// <param name="segment">The buffer, or <c>default</c> when the walk has ended.</param>
    public bool TryNext(out DescriptorSegment segment)
    {
        segment = default;
        while (_hasNext && Error == ChainError.None)
        {
            if (_next >= _tableEntries)
            {
                return Fail(ChainError.IndexOutOfRange);
            }

            // _next < _tableEntries ≤ 32768 and the table was checked to lie in memory, so this cannot wrap;
            // the checked add is for the memory table having changed since.
            if (!_table.CheckedAdd((ulong)_next * VirtqLayout.DescriptorSize, out GuestAddress at) ||
                !_memory!.TryRead(at, out VirtqDescriptor desc))
            {
                return Fail(ChainError.DescriptorUnreadable);
            }

            if ((desc.Flags & VirtqLayout.DescFlagIndirect) != 0)
            {
                if (!EnterIndirect(in desc))
                {
                    return false;
                }

                continue;
            }

            if (_ttl == 0)
            {
                return Fail(ChainError.TooLong);
            }

            _ttl--;
            bool writable = (desc.Flags & VirtqLayout.DescFlagWrite) != 0;
            if (!writable && _sawWritable)
            {
                return Fail(ChainError.ReadableAfterWritable);
            }

            var address = new GuestAddress(desc.Address);
            if (!address.RangeFits(desc.Length))
            {
                return Fail(ChainError.BufferWraps);
            }

            if (!_memory.IsRangeValid(address, desc.Length, writable))
            {
                return Fail(ChainError.BufferOutsideMemory);
            }

            // "Drivers MUST NOT add a descriptor chain longer than 2^32 bytes in total" (§2.7.5): keeps the
            // sum of a chain's lengths inside the 32-bit used.len and the device's own arithmetic.
            _totalBytes += desc.Length;
            if (_totalBytes > uint.MaxValue)
            {
                return Fail(ChainError.TooManyBytes);
            }

            _sawWritable |= writable;
            _hasNext = (desc.Flags & VirtqLayout.DescFlagNext) != 0;
            _next = desc.Next;
            segment = new DescriptorSegment(address, desc.Length, writable);
            return true;
        }

        return false;
    }

    private bool EnterIndirect(in VirtqDescriptor desc)
    {
        if (_inIndirect)
        {
            return Fail(ChainError.NestedIndirect);
        }

        if ((desc.Flags & VirtqLayout.DescFlagNext) != 0)
        {
            return Fail(ChainError.IndirectWithNext);
        }

        // The WRITE flag of the descriptor that points at the table is ignored (§2.7.5.3.2). The table is
        // desc[len / 16]; like QEMU we refuse a remainder rather than silently drop it.
        // Linux sends indirect tables of seg_max + 2 entries whatever the queue size (virtio_blk honours
        // only seg_max), and QEMU accepts them up to 1024 elements: so the table is bounded by
        // max(queue size, MaxIndirectEntries), and the walk inside it by the table's own length.
        uint entries = desc.Length / VirtqLayout.DescriptorSize;
        if (desc.Length == 0 || desc.Length % VirtqLayout.DescriptorSize != 0 || entries > Math.Max(_queueSize, MaxIndirectEntries))
        {
            return Fail(ChainError.BadIndirectLength);
        }

        var table = new GuestAddress(desc.Address);
        if (!_memory!.IsRangeValid(table, desc.Length, writable: false))
        {
            return Fail(ChainError.IndirectTableOutsideMemory);
        }

        _inIndirect = true;
        _table = table;
        _tableEntries = entries;
        _next = 0;
        _ttl = entries;
        return true;
    }

    private bool Fail(ChainError error)
    {
        Error = error;
        _hasNext = false;
        return false;
    }
}
