using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace LibvirtStorage.Vhost.Protocol;

// Payload layouts of vhost-user.rst "Message Specification". All numbers are in native byte order (the spec's
// rule), so the structs are read with MemoryMarshal.Read and never need byte swapping. Every struct is
// Pack=1 so its size is the spec's wire size; IsValid() checks only what the struct alone can tell
// (overflow, alignment, reserved bits), never device state such as the queue count.

/// <summary>The 12-byte message header: request, flags, payload size.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
internal struct VhostUserHeader
{
    public const int Size = 12;

    /// <summary>The request number (a <see cref="FrontendRequest"/> or <see cref="BackendRequest"/>).</summary>
    public uint Request;
    /// <summary>Version, REPLY and NEED_REPLY bits.</summary>
    public VhostUserHeaderFlags Flags;
    /// <summary>Payload size in bytes.</summary>
    public uint PayloadSize;

    public VhostUserHeader(uint request, VhostUserHeaderFlags flags, uint payloadSize)
    {
        Request = request;
        Flags = flags;
        PayloadSize = payloadSize;
    }

    public readonly uint Version => (uint)(Flags & VhostUserHeaderFlags.VersionMask);
    public readonly bool NeedReply => (Flags & VhostUserHeaderFlags.NeedReply) != 0;
    public readonly bool IsReply => (Flags & VhostUserHeaderFlags.Reply) != 0;
}

/// <summary>A single 64-bit integer (features, queue counts, vring fd messages, REPLY_ACK).</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
internal struct VhostUserU64
{
    public const int Size = 8;

    /// <summary>The value.</summary>
    public ulong Value;

    public VhostUserU64(ulong value) => Value = value;
}

/// <summary>
/// The u64 of SET_VRING_KICK/CALL/ERR: vring index in bits 0-7, bit 8 set when no fd is attached (polling).
/// </summary>
internal static class VhostUserVringFd
{
    public const ulong IndexMask = 0xFF;
    public const ulong NoFdFlag = 0x100;

    public static uint Index(ulong value) => (uint)(value & IndexMask);

    public static bool HasFd(ulong value) => (value & NoFdFlag) == 0;

    /// <summary>Bits 9..63 are reserved and must be zero.</summary>
    public static bool HasReservedBits(ulong value) => (value & ~(IndexMask | NoFdFlag)) != 0;
}

/// <summary>A vring state description: {index, num} (SET_VRING_NUM/BASE/ENABLE, GET_VRING_BASE, VRING_KICK).</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
internal struct VhostUserVringState
{
    public const int Size = 8;

    /// <summary>Vring index.</summary>
    public uint Index;
    /// <summary>Size, base index or enable flag, depending on the request.</summary>
    public uint Num;

    public VhostUserVringState(uint index, uint num)
    {
        Index = index;
        Num = num;
    }
}

/// <summary>A vring address description (SET_VRING_ADDR): user addresses of the three split-ring parts.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
internal struct VhostUserVringAddress
{
    public const int Size = 40;
    /// <summary>VHOST_VRING_F_LOG: log writes to the used ring.</summary>
    public const uint FlagLog = 0x1;

    public uint Index;
    public uint Flags;
    /// <summary>User address of the descriptor table.</summary>
    public ulong DescUserAddr;
    /// <summary>User address of the used ring.</summary>
    public ulong UsedUserAddr;
    /// <summary>User address of the available ring.</summary>
    public ulong AvailUserAddr;
    /// <summary>Guest address for dirty logging of the used ring.</summary>
    public ulong LogGuestAddr;

    /// <summary>Only the LOG flag is defined; split-ring alignments are 16 (desc), 2 (avail) and 4 (used) (virtio 1.2 §2.7).</summary>
    public readonly bool IsValid() =>
        (Flags & ~FlagLog) == 0 && (DescUserAddr & 0xF) == 0 && (AvailUserAddr & 0x1) == 0 && (UsedUserAddr & 0x3) == 0;
}

/// <summary>A memory region description: guest address, size, user address, mmap offset.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
internal struct VhostUserMemoryRegion
{
    public const int Size = 32;

    public ulong GuestAddr;
    public ulong MemorySize;
    public ulong UserAddr;
    public ulong MmapOffset;

    public VhostUserMemoryRegion(ulong guestAddr, ulong memorySize, ulong userAddr, ulong mmapOffset)
    {
        GuestAddr = guestAddr;
        MemorySize = memorySize;
        UserAddr = userAddr;
        MmapOffset = mmapOffset;
    }

    /// <summary>Non-empty, and none of the three ranges wraps around the 64-bit address space.</summary>
    public readonly bool IsValid() =>
        MemorySize != 0
        && GuestAddr <= ulong.MaxValue - MemorySize
        && UserAddr <= ulong.MaxValue - MemorySize
        && MmapOffset <= ulong.MaxValue - MemorySize;
}

/// <summary>
/// The multiple memory regions description of SET_MEM_TABLE: {nregions, padding} then nregions regions.
/// QEMU sends only the regions in use, so the payload is 8 + 32 × nregions bytes.
/// </summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
internal struct VhostUserMemoryTableHeader
{
    public const int Size = 8;
    /// <summary>VHOST_MEMORY_BASELINE_NREGIONS: the most regions one SET_MEM_TABLE can carry.</summary>
    public const int MaxRegions = 8;
    public const int MaxPayloadSize = Size + MaxRegions * VhostUserMemoryRegion.Size;

    public uint RegionCount;
    /// <summary>Unused; not checked (QEMU zeroes it, but nothing depends on it).</summary>
    public uint Padding;

    public static int PayloadSizeFor(uint regionCount) => Size + (int)regionCount * VhostUserMemoryRegion.Size;

    /// <summary>Reads region <paramref name="index"/> of a payload whose size was already checked.</summary>
    public static VhostUserMemoryRegion ReadRegion(ReadOnlySpan<byte> payload, int index) =>
        MemoryMarshal.Read<VhostUserMemoryRegion>(payload.Slice(Size + index * VhostUserMemoryRegion.Size, VhostUserMemoryRegion.Size));

    /// <summary>1..8 regions, payload exactly as long as the count says, one fd per region, every region valid.</summary>
    public static bool IsValid(ReadOnlySpan<byte> payload, int fdCount)
    {
        if (payload.Length < Size)
            return false;
        uint count = MemoryMarshal.Read<VhostUserMemoryTableHeader>(payload).RegionCount;
        return count is > 0 and <= MaxRegions && payload.Length == PayloadSizeFor(count) && fdCount == (int)count && RegionsAreValid(payload);
    }

    /// <summary>Every region of a payload whose size already matches its count is valid.</summary>
    public static bool RegionsAreValid(ReadOnlySpan<byte> payload)
    {
        int count = (payload.Length - Size) / VhostUserMemoryRegion.Size;
        for (int i = 0; i < count; i++)
        {
            if (!ReadRegion(payload, i).IsValid())
                return false;
        }
        return true;
    }
}

/// <summary>The single memory region description of ADD_MEM_REG and REM_MEM_REG: {padding u64, region}.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
internal struct VhostUserSingleMemoryRegion
{
    public const int Size = 8 + VhostUserMemoryRegion.Size;

    public ulong Padding;
    public VhostUserMemoryRegion Region;

    public VhostUserSingleMemoryRegion(VhostUserMemoryRegion region)
    {
        Padding = 0;
        Region = region;
    }

    public readonly bool IsValid() => Region.IsValid();
}

/// <summary>Fixed storage for up to 256 bytes of device config space.</summary>
[InlineArray(VhostUserConfigHeader.MaxConfigSize)]
internal struct VhostUserConfigBytes
{
    private byte _element0;
}

/// <summary>
/// The virtio device config space description of GET/SET_CONFIG: {offset, size, flags} then size bytes.
/// The payload is exactly 12 + size bytes, size at most 256 (QEMU VHOST_USER_MAX_CONFIG_SIZE).
/// </summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
internal struct VhostUserConfigHeader
{
    public const int Size = 12;
    public const int MaxConfigSize = 256;
    public const int MaxPayloadSize = Size + MaxConfigSize;
    /// <summary>flags value 0: a front-end write to writable fields.</summary>
    public const uint FlagsFrontend = 0;
    /// <summary>flags value 1: a write for live migration (may touch read-only fields).</summary>
    public const uint FlagsMigration = 1;

    /// <summary>Offset into the device config space.</summary>
    public uint Offset;
    /// <summary>Number of config bytes that follow.</summary>
    public uint ConfigSize;
    public uint Flags;

    public VhostUserConfigHeader(uint offset, uint configSize, uint flags)
    {
        Offset = offset;
        ConfigSize = configSize;
        Flags = flags;
    }

    /// <summary>Non-empty, inside the 256-byte window, a defined flags value, and the payload length agrees.</summary>
    public static bool IsValid(ReadOnlySpan<byte> payload)
    {
        if (payload.Length < Size)
            return false;
        var h = MemoryMarshal.Read<VhostUserConfigHeader>(payload);
        return h.ConfigSize is > 0 and <= MaxConfigSize
            && h.Offset <= MaxConfigSize - h.ConfigSize
            && h.Flags <= FlagsMigration
            && payload.Length == Size + (int)h.ConfigSize;
    }
}

/// <summary>The inflight description of GET/SET_INFLIGHT_FD (24 bytes: QEMU's struct is not packed, so it ends in 4 bytes of padding).</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
internal struct VhostUserInflight
{
    public const int Size = 24;

    public ulong MmapSize;
    public ulong MmapOffset;
    public ushort QueueCount;
    public ushort QueueSize;
    public uint Padding;

    public VhostUserInflight(ulong mmapSize, ulong mmapOffset, ushort queueCount, ushort queueSize)
    {
        MmapSize = mmapSize;
        MmapOffset = mmapOffset;
        QueueCount = queueCount;
        QueueSize = queueSize;
        Padding = 0;
    }

    /// <summary>GET_INFLIGHT_FD: the front-end asks for a buffer for this many queues of this size.</summary>
    public readonly bool IsValidRequest() => QueueCount != 0 && QueueSize != 0;

    /// <summary>SET_INFLIGHT_FD: also a non-empty area that does not wrap.</summary>
    public readonly bool IsValidBuffer() => IsValidRequest() && MmapSize != 0 && MmapOffset <= ulong.MaxValue - MmapSize;
}

/// <summary>The log description of SET_LOG_BASE: {size, offset} of the dirty log in the attached fd.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
internal struct VhostUserLog
{
    public const int Size = 16;

    public ulong MmapSize;
    public ulong MmapOffset;

    public readonly bool IsValid() => MmapSize != 0 && MmapOffset <= ulong.MaxValue - MmapSize;
}
