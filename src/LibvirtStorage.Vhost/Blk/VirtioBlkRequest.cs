using System.Buffers.Binary;
using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using LibvirtStorage.Vhost.Memory;
using LibvirtStorage.Vhost.Virtqueue;

namespace LibvirtStorage.Vhost.Blk;

/// <summary>Why a chain is not a usable virtio-blk request; such a request completes with length 0.</summary>
internal enum VirtioBlkParseError : byte
{
    /// <summary>The request is well formed.</summary>
    None,

    /// <summary>The descriptor chain itself is bad; <see cref="VirtioBlkRequest.ChainError"/> says how.</summary>
    BadChain,

    /// <summary>Fewer than 16 device-readable bytes precede the first device-writable one.</summary>
    HeaderTooShort,

    /// <summary>There is no device-writable descriptor, or the last one is empty, so there is no status byte.</summary>
    NoStatusByte,

    /// <summary>More data segments than seg_max.</summary>
    TooManySegments,

    /// <summary>Data buffers of the wrong direction for the type (for example device-readable data on an IN).</summary>
    WrongDirection,
}

/// <summary>
/// One virtio-blk request (virtio 1.2 §5.2.6: <c>{le32 type; le32 reserved; le64 sector}</c>, data, status byte),
/// parsed out of a descriptor chain: the header copied, the data buffers listed, the status byte located. Parsing
/// only; <see cref="VirtioBlkHandler"/> executes.
/// </summary>
/// <remarks>
/// <para>
/// Layout rules (any framing, §2.6.4): the header is the first 16 device-readable bytes, in as many descriptors as
/// the driver likes; the status byte is the last byte of the last device-writable descriptor. Everything in between
/// is data: device-readable for OUT, DISCARD and WRITE_ZEROES, device-writable for IN and GET_ID, none for FLUSH.
/// Unknown types accept any data (they complete with UNSUPP). Empty descriptors are skipped.
/// </para>
/// <para>
/// No allocation: the data buffers go into a fixed inline list of <see cref="MaxDataSegments"/>, and the request
/// is a large struct; keep one per worker and pass it by <see langword="ref"/>/<see langword="in"/>. Every buffer
/// was checked to lie in guest memory by <see cref="DescriptorChain"/>; the header is a copy, so the guest cannot
/// change it after the check. Never throws for guest input.
/// </para>
/// </remarks>
internal struct VirtioBlkRequest
{
    /// <summary>Capacity of the data segment list (the largest seg_max an export may advertise).</summary>
    public const int MaxDataSegments = 256;

    /// <summary>Bytes of the request header.</summary>
    public const int HeaderSize = 16;

    private SegmentList _segments;

    /// <summary>Why the request is unusable, or <see cref="VirtioBlkParseError.None"/>.</summary>
    public VirtioBlkParseError Error { get; private set; }

    /// <summary>The chain's error when <see cref="Error"/> is <see cref="VirtioBlkParseError.BadChain"/>.</summary>
    public ChainError ChainError { get; private set; }

    /// <summary>The raw type field (may be a value this device does not know).</summary>
    public uint Type { get; private set; }

    /// <summary>The sector field (512-byte units).</summary>
    public ulong Sector { get; private set; }

    /// <summary>Total bytes of data (excluding header and status byte); at most 2^32 - 1.</summary>
    public uint DataLength { get; private set; }

    /// <summary>Guest address of the status byte (inside writable memory).</summary>
    public GuestAddress StatusAddress { get; private set; }

    /// <summary>Number of data segments.</summary>
    public int SegmentCount { get; private set; }

    /// <summary>The data buffers, in order.</summary>
    [UnscopedRef]
    public readonly ReadOnlySpan<DescriptorSegment> Segments => ((ReadOnlySpan<DescriptorSegment>)_segments)[..SegmentCount];

    /// <summary>
    /// Walks <paramref name="chain"/> to its end and fills <paramref name="request"/>. On a bad chain
    /// <see cref="Error"/> is set and the other fields are meaningless.
    /// </summary>
    /// <param name="chain">A freshly popped chain (consumed by the walk).</param>
    /// <param name="memory">The memory the chain was popped with.</param>
    /// <param name="segMax">The seg_max the export advertises (at most <see cref="MaxDataSegments"/>).</param>
    /// <param name="request">The request to fill (reused between requests).</param>
    public static void Parse(ref DescriptorChain chain, GuestMemory memory, uint segMax, ref VirtioBlkRequest request)
    {
        request.Reset();
        Span<byte> header = stackalloc byte[HeaderSize];
        int headerBytes = 0;
        int limit = (int)Math.Min(segMax, MaxDataSegments);
        bool sawWritable = false, sawReadableData = false;
        DescriptorSegment lastWritable = default;

        while (chain.TryNext(out DescriptorSegment segment))
        {
            if (!segment.Writable)
            {
                // Readable buffers all precede writable ones (DescriptorChain enforces §2.7.4).
                uint skip = 0;
                if (headerBytes < HeaderSize)
                {
                    skip = Math.Min(segment.Length, (uint)(HeaderSize - headerBytes));
                    if (!CopyHeader(memory, segment.Address, header.Slice(headerBytes, (int)skip)))
                    {
                        request.Error = VirtioBlkParseError.BadChain;
                        request.ChainError = ChainError.BufferOutsideMemory;
                        return;
                    }

                    headerBytes += (int)skip;
                }

                if (segment.Length > skip)
                {
                    sawReadableData = true;
                    if (!request.TryAdd(new DescriptorSegment(new GuestAddress(segment.Address.Value + skip), segment.Length - skip, false), limit))
                    {
                        return;
                    }
                }

                continue;
            }

            if (!sawWritable && headerBytes < HeaderSize)
            {
                request.Error = VirtioBlkParseError.HeaderTooShort;
                return;
            }

            // The previous last-writable buffer turns out to be data; the newest one may hold the status byte.
            if (sawWritable && lastWritable.Length != 0 && !request.TryAdd(lastWritable, limit))
            {
                return;
            }

            sawWritable = true;
            lastWritable = segment;
        }

        if (chain.Error != ChainError.None)
        {
            request.Error = VirtioBlkParseError.BadChain;
            request.ChainError = chain.Error;
            return;
        }

        if (headerBytes < HeaderSize)
        {
            request.Error = VirtioBlkParseError.HeaderTooShort;
            return;
        }

        if (!sawWritable || lastWritable.Length == 0)
        {
            request.Error = VirtioBlkParseError.NoStatusByte;
            return;
        }

        uint statusOffset = lastWritable.Length - 1;
        request.StatusAddress = new GuestAddress(lastWritable.Address.Value + statusOffset);
        if (statusOffset != 0 && !request.TryAdd(new DescriptorSegment(lastWritable.Address, statusOffset, true), limit))
        {
            return;
        }

        request.Type = BinaryPrimitives.ReadUInt32LittleEndian(header);
        request.Sector = BinaryPrimitives.ReadUInt64LittleEndian(header[8..]);
        bool sawWritableData = request.SegmentCount > 0 && request._segments[request.SegmentCount - 1].Writable;
        if (!DirectionAllowed((VirtioBlkRequestType)request.Type, sawReadableData, sawWritableData))
        {
            request.Error = VirtioBlkParseError.WrongDirection;
        }
    }

    private static bool DirectionAllowed(VirtioBlkRequestType type, bool readableData, bool writableData) => type switch
    {
        VirtioBlkRequestType.In or VirtioBlkRequestType.GetId => !readableData,
        VirtioBlkRequestType.Out or VirtioBlkRequestType.Discard or VirtioBlkRequestType.WriteZeroes => !writableData,
        VirtioBlkRequestType.Flush => !readableData && !writableData,
        _ => true,
    };

    private static bool CopyHeader(GuestMemory memory, GuestAddress address, Span<byte> destination)
    {
        if (!memory.TryGetSegments(address, (ulong)destination.Length, writable: false, out GuestSegments pieces))
        {
            return false; // the map changed under the chain; treated like a buffer outside memory
        }

        pieces.CopyTo(destination);
        return true;
    }

    private bool TryAdd(DescriptorSegment segment, int limit)
    {
        if (SegmentCount == limit)
        {
            Error = VirtioBlkParseError.TooManySegments;
            return false;
        }

        _segments[SegmentCount++] = segment;
        DataLength += segment.Length; // the chain's total is ≤ 2^32 - 1, so this cannot wrap
        return true;
    }

    private void Reset()
    {
        Error = VirtioBlkParseError.None;
        ChainError = ChainError.None;
        Type = 0;
        Sector = 0;
        DataLength = 0;
        StatusAddress = default;
        SegmentCount = 0;
    }

    [InlineArray(MaxDataSegments)]
    private struct SegmentList
    {
        private DescriptorSegment _element;
    }
}
