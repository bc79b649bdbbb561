using LibvirtStorage.Vhost.Memory;
using LibvirtStorage.Vhost.Protocol;
using Microsoft.Win32.SafeHandles;

namespace LibvirtStorage.Vhost.Backend;

/// <summary>SET_MEM_TABLE, ADD_MEM_REG, REM_MEM_REG (vhost-user.rst "Memory regions description").</summary>
internal sealed partial class VhostUserRequestDispatcher
{
    /// <summary>GET_MAX_MEM_SLOTS: regions the back-end accepts through ADD_MEM_REG.</summary>
    public const ulong MaxMemSlots = 32;

    // The creator references of the regions in the current map (see GuestRegion), and that map, which the slot
    // keeps alive: only this class replaces it. Null until the first memory table.
    private readonly List<GuestRegion> _regions = [];
    private GuestMemoryMap? _map;

    private string? SetMemTable(VhostUserMessage message)
    {
        var table = message.Read<VhostUserMemoryTableHeader>();
        var regions = new GuestRegion[table.RegionCount];
        int mapped = 0;
        string? error = null;
        for (; mapped < regions.Length && error is null; mapped++)
        {
            var description = VhostUserMemoryTableHeader.ReadRegion(message.Payload, mapped);
            using SafeFileHandle fd = message.Fds.Take(mapped);
            error = TryMap(fd, description, out regions[mapped]!);
        }

        if (error is null && GuestMemoryMap.TryCreate(regions, out GuestMemoryMap? map, out error))
        {
            // RCU: workers keep leasing the old map until their batch ends; its regions unmap after the last lease.
            Memory.Replace(map!);
            _map = map;
            ReleaseRegions();
            _regions.AddRange(regions);
            return null;
        }

        foreach (GuestRegion? region in regions)
            region?.Dispose();
        return error;
    }

    private string? AddMemoryRegion(VhostUserMessage message)
    {
        if (_regions.Count >= (int)MaxMemSlots)
            return $"all {MaxMemSlots} memory slots are in use";
        var description = message.Read<VhostUserSingleMemoryRegion>().Region;
        using SafeFileHandle fd = message.Fds.Take(0);
        string? error = TryMap(fd, description, out GuestRegion? region);
        if (error is not null)
            return error;
        if (!(_map ?? GuestMemoryMap.CreateEmpty()).TryAdd(region!, out GuestMemoryMap? map, out error))
        {
            region!.Dispose();
            return error;
        }

        Memory.Replace(map!);
        _map = map;
        _regions.Add(region!);
        return null;
    }

    private string? RemoveMemoryRegion(VhostUserMemoryRegion description)
    {
        if (_map is null || !_map.TryRemove(new GuestAddress(description.GuestAddr), description.MemorySize, description.UserAddr, out GuestMemoryMap? map, out GuestRegion? removed))
            return $"no region at guest address 0x{description.GuestAddr:x} of 0x{description.MemorySize:x} bytes at user address 0x{description.UserAddr:x}";
        Memory.Replace(map!);
        _map = map;
        _regions.Remove(removed!);
        removed!.Dispose();
        return null;
    }

    /// <summary>
    /// Map guest memory from files the front-end could still truncate (memory-backend-file, memfd with seal=off).
    /// Off by default: touching a page of a truncated file raises SIGBUS, which would end every export of the
    /// process (see <see cref="MemorySeals"/>). Only for front-ends trusted not to shrink their memory.
    /// </summary>
    public bool AllowUnsealedMemory { get; init; }

    // mmap refuses nothing past the end of a file, but touching such a page raises SIGBUS: check the size first,
    // and that the front-end cannot shrink the file afterwards.
    private string? TryMap(SafeFileHandle fd, VhostUserMemoryRegion description, out GuestRegion? region)
    {
        region = null;
        if (!AllowUnsealedMemory && !MemorySeals.IsShrinkSealed(fd, out string? why))
            return $"region at guest address 0x{description.GuestAddr:x} refused: {why}; a front-end that can truncate guest memory could crash the back-end";
        try
        {
            long length = RandomAccess.GetLength(fd);
            if (length < 0 || description.MmapOffset > (ulong)length || description.MemorySize > (ulong)length - description.MmapOffset)
                return $"region at guest address 0x{description.GuestAddr:x} needs 0x{description.MemorySize:x} bytes at offset 0x{description.MmapOffset:x} of a {length}-byte file";
            region = GuestRegion.Map(fd, description.MmapOffset, new GuestAddress(description.GuestAddr), description.MemorySize, description.UserAddr);
            return null;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
        {
            return $"cannot map region at guest address 0x{description.GuestAddr:x}: {ex.Message}";
        }
    }

    private void ReleaseRegions()
    {
        foreach (GuestRegion region in _regions)
            region.Dispose();
        _regions.Clear();
    }
}
