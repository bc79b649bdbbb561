using System.Runtime.InteropServices;
using System.Text;
using LibvirtStorage.Vhost.Memory;
using LibvirtStorage.Vhost.Virtqueue;

namespace LibvirtStorage.Vhost.Blk;

/// <summary>The outcome of one request, for the used ring and the log.</summary>
/// <param name="Status">The status byte written, or <see langword="null"/> for a malformed request (nothing written).</param>
/// <param name="Written">Bytes written into guest memory (data plus the status byte): the used-ring length.</param>
/// <param name="DeviceError">The exception the device threw, if the status is IOERR because of one (for the log).</param>
internal readonly record struct VirtioBlkCompletion(VirtioBlkStatus? Status, uint Written, Exception? DeviceError = null);

/// <summary>
/// Executes parsed virtio-blk requests against an <see cref="IBlockDevice"/> (virtio 1.2 §5.2.6; the rules of QEMU's
/// <c>block/export/virtio-blk-handler.c</c>). Transport-free: it touches only the request's buffers and status byte.
/// </summary>
/// <remarks>
/// <para>Rules, checked before the device is called:</para>
/// <list type="bullet">
/// <item>IN/OUT: data a multiple of the logical block size, sector aligned to it, and
/// <c>[sector, sector + len)</c> inside the capacity (overflow-safe); otherwise IOERR.</item>
/// <item>OUT, DISCARD, WRITE_ZEROES on a read-only device: IOERR, nothing written (§5.2.6.2).</item>
/// <item>DISCARD / WRITE_ZEROES: data one or more 16-byte segments (else IOERR), at most max_*_seg of them (else
/// UNSUPP), unknown flags or UNMAP on a discard UNSUPP (§5.2.6.2), each segment at most max_*_sectors, aligned and
/// in range (else IOERR); all segments are copied and checked before any is executed. A command disabled in the
/// settings is UNSUPP.</item>
/// <item>GET_ID: the serial, NUL-padded to 20 bytes, into at most the first 20 data bytes.</item>
/// <item>Any other type: UNSUPP.</item>
/// </list>
/// <para>
/// IN and OUT hand the device spans of guest memory (zero copy, no allocation). Device exceptions are caught in
/// <see cref="Execute"/> alone and become IOERR. The handler is immutable, so all queue workers of an export can
/// share it; the device must be thread-safe (see <see cref="IBlockDevice"/>).
/// </para>
/// </remarks>
internal sealed class VirtioBlkHandler
{
    /// <summary>Bytes of the GET_ID string.</summary>
    public const int IdBytes = 20;

    private const int SectorShift = 9;
    private const int RangeSegmentSize = 16;
    private const uint UnmapFlag = 1;

    private readonly VirtioBlkSettings _settings;

    /// <summary>Creates a handler enforcing <paramref name="settings"/> (validated here).</summary>
    public VirtioBlkHandler(VirtioBlkSettings settings)
    {
        ArgumentNullException.ThrowIfNull(settings);
        settings.Validate();
        _settings = settings;
    }

    /// <summary>The settings enforced (also the source of the config space).</summary>
    public VirtioBlkSettings Settings => _settings;

    /// <summary>
    /// Executes <paramref name="request"/>, writes its status byte, and reports the used length. A malformed
    /// request writes nothing and reports 0. Never throws for guest input or device failures.
    /// </summary>
    public VirtioBlkCompletion Execute(in VirtioBlkRequest request, GuestMemory memory, IBlockDevice device)
    {
        if (request.Error != VirtioBlkParseError.None)
        {
            return new VirtioBlkCompletion(null, 0);
        }

        VirtioBlkStatus status;
        uint written = 0;
        Exception? failure = null;
        try
        {
            status = Dispatch(in request, memory, device, ref written);
            if (status == VirtioBlkStatus.Ok && !_settings.Writeback && ChangesData((VirtioBlkRequestType)request.Type))
            {
                device.Flush(); // write-through: durable before the driver sees the completion
            }
        }
#pragma warning disable CA1031 // the one place device failures become IOERR (STYLE.md §5.4: data plane uses status codes)
        catch (Exception ex)
#pragma warning restore CA1031
        {
            status = VirtioBlkStatus.IoError;
            failure = ex;
        }

        if (status != VirtioBlkStatus.Ok)
        {
            written = 0; // data may be partial: report only the status byte
        }

        if (!memory.TryWrite(request.StatusAddress, (byte)status))
        {
            return new VirtioBlkCompletion(null, 0, failure); // the map changed under the request
        }

        return new VirtioBlkCompletion(status, written + 1, failure);
    }

    private VirtioBlkStatus Dispatch(in VirtioBlkRequest request, GuestMemory memory, IBlockDevice device, ref uint written)
    {
        switch ((VirtioBlkRequestType)request.Type)
        {
            case VirtioBlkRequestType.In:
                return ReadWrite(in request, memory, device, write: false, ref written);
            case VirtioBlkRequestType.Out:
                return device.IsReadOnly ? VirtioBlkStatus.IoError : ReadWrite(in request, memory, device, write: true, ref written);
            case VirtioBlkRequestType.Flush:
                device.Flush();
                return VirtioBlkStatus.Ok;
            case VirtioBlkRequestType.GetId:
                return GetId(in request, memory, device, ref written);
            case VirtioBlkRequestType.Discard:
                return DiscardOrWriteZeroes(in request, memory, device, _settings.MaxDiscardSectors, _settings.MaxDiscardSegments, discard: true);
            case VirtioBlkRequestType.WriteZeroes:
                return DiscardOrWriteZeroes(in request, memory, device, _settings.MaxWriteZeroesSectors, _settings.MaxWriteZeroesSegments, discard: false);
            default:
                return VirtioBlkStatus.Unsupported;
        }
    }

    private static bool ChangesData(VirtioBlkRequestType type) =>
        type is VirtioBlkRequestType.Out or VirtioBlkRequestType.Discard or VirtioBlkRequestType.WriteZeroes;

    /// <summary>Whether <paramref name="bytes"/> at <paramref name="sector"/> is aligned and inside the device.</summary>
    internal static bool RangeOk(IBlockDevice device, ulong sector, ulong bytes, out long offset)
    {
        offset = 0;
        ulong blockSize = (ulong)device.LogicalBlockSize;
        ulong capacitySectors = (ulong)Math.Max(device.Capacity, 0) >> SectorShift;
        ulong sectors = bytes >> SectorShift;
        if (blockSize < 512 || (bytes & (blockSize - 1)) != 0 || sector > capacitySectors || sectors > capacitySectors - sector)
        {
            return false;
        }

        // sector ≤ capacity / 512 ≤ long.MaxValue / 512: the shift cannot overflow.
        offset = (long)(sector << SectorShift);
        return ((ulong)offset & (blockSize - 1)) == 0;
    }

    private static VirtioBlkStatus ReadWrite(in VirtioBlkRequest request, GuestMemory memory, IBlockDevice device, bool write, ref uint written)
    {
        if (!RangeOk(device, request.Sector, request.DataLength, out long offset))
        {
            return VirtioBlkStatus.IoError;
        }

        foreach (DescriptorSegment segment in request.Segments)
        {
            if (!memory.TryGetSegments(segment.Address, segment.Length, writable: !write, out GuestSegments pieces))
            {
                return VirtioBlkStatus.IoError; // the map changed since the chain was checked
            }

            foreach (Span<byte> piece in pieces)
            {
                if (write)
                {
                    device.Write(offset, piece);
                }
                else
                {
                    device.Read(offset, piece);
                    written += (uint)piece.Length;
                }

                offset += piece.Length;
            }
        }

        return VirtioBlkStatus.Ok;
    }

    private static VirtioBlkStatus GetId(in VirtioBlkRequest request, GuestMemory memory, IBlockDevice device, ref uint written)
    {
        Span<byte> id = stackalloc byte[IdBytes];
        id.Clear();
        string serial = device.Serial ?? string.Empty;
        ReadOnlySpan<char> chars = serial.AsSpan(0, Math.Min(serial.Length, IdBytes));
        Encoding.ASCII.GetBytes(chars, id);
        ReadOnlySpan<byte> left = id[..(int)Math.Min(request.DataLength, IdBytes)];
        foreach (DescriptorSegment segment in request.Segments)
        {
            if (left.IsEmpty)
            {
                break;
            }

            int take = (int)Math.Min(segment.Length, (uint)left.Length);
            if (!memory.TryGetSegments(segment.Address, (ulong)take, writable: true, out GuestSegments pieces))
            {
                return VirtioBlkStatus.IoError;
            }

            foreach (Span<byte> piece in pieces)
            {
                left[..piece.Length].CopyTo(piece);
                left = left[piece.Length..];
                written += (uint)piece.Length;
            }
        }

        return VirtioBlkStatus.Ok;
    }

    private static VirtioBlkStatus DiscardOrWriteZeroes(in VirtioBlkRequest request, GuestMemory memory, IBlockDevice device, uint maxSectors, uint maxSegments, bool discard)
    {
        if (maxSectors == 0)
        {
            return VirtioBlkStatus.Unsupported; // the command is not offered
        }

        if (device.IsReadOnly || request.DataLength == 0 || request.DataLength % RangeSegmentSize != 0)
        {
            return VirtioBlkStatus.IoError;
        }

        uint count = request.DataLength / RangeSegmentSize;
        if (count > maxSegments)
        {
            return VirtioBlkStatus.Unsupported;
        }

        // Copy every segment first, so the guest cannot change one between its check and its execution.
        Span<byte> bytes = stackalloc byte[(int)VirtioBlkSettings.MaxRangeSegments * RangeSegmentSize];
        bytes = bytes[..(int)request.DataLength];
        if (!CopyData(in request, memory, bytes))
        {
            return VirtioBlkStatus.IoError;
        }

        ReadOnlySpan<RangeSegment> ranges = MemoryMarshal.Cast<byte, RangeSegment>(bytes);
        foreach (RangeSegment range in ranges)
        {
            if ((range.Flags & ~UnmapFlag) != 0 || (discard && range.Flags != 0))
            {
                return VirtioBlkStatus.Unsupported; // §5.2.6.2: MUST, whatever else is wrong
            }
        }

        foreach (RangeSegment range in ranges)
        {
            if (range.NumSectors > maxSectors || !RangeOk(device, range.Sector, (ulong)range.NumSectors << SectorShift, out _))
            {
                return VirtioBlkStatus.IoError;
            }
        }

        foreach (RangeSegment range in ranges)
        {
            long offset = (long)(range.Sector << SectorShift);
            long length = (long)range.NumSectors << SectorShift;
            if (discard)
            {
                device.Discard(offset, length);
            }
            else
            {
                device.WriteZeroes(offset, length, (range.Flags & UnmapFlag) != 0);
            }
        }

        return VirtioBlkStatus.Ok;
    }

    private static bool CopyData(in VirtioBlkRequest request, GuestMemory memory, Span<byte> destination)
    {
        foreach (DescriptorSegment segment in request.Segments)
        {
            if (!memory.TryGetSegments(segment.Address, segment.Length, writable: false, out GuestSegments pieces))
            {
                return false;
            }

            pieces.CopyTo(destination);
            destination = destination[(int)segment.Length..];
        }

        return true;
    }

    /// <summary>struct virtio_blk_discard_write_zeroes, little-endian on the (little-endian) hosts we support.</summary>
    [StructLayout(LayoutKind.Sequential, Pack = 1)]
    private readonly struct RangeSegment
    {
        public readonly ulong Sector;
        public readonly uint NumSectors;
        public readonly uint Flags;
    }
}
