namespace LibvirtStorage.Vhost.Memory;

/// <summary>
/// An immutable guest memory table: regions sorted by guest-physical address with no overlap in either the
/// guest-physical or the front-end virtual address space, and the <see cref="GuestMemory"/> accessor over them.
/// </summary>
/// <remarks>
/// A map is reference-counted. Its owner (a <see cref="GuestMemorySlot"/>) holds one reference, and each worker
/// takes one per batch through <see cref="GuestMemorySlot.Acquire"/>. When the count reaches zero the map drops its
/// references on its regions, and a region is unmapped once no map uses it (vm-memory's <c>GuestMemoryAtomic</c>).
/// SET_MEM_TABLE and ADD_MEM_REG/REM_MEM_REG build a new map and swap it in; they never edit one.
/// </remarks>
public sealed class GuestMemoryMap
{
    private readonly GuestRegion[] _regions;
    private RefCount _refs = new();

    private GuestMemoryMap(GuestRegion[] regions, int[] byUserAddress)
    {
        _regions = regions;
        Memory = new GuestMemory(regions, byUserAddress);
    }

    /// <summary>The accessor for this map's memory.</summary>
    public GuestMemory Memory { get; }

    /// <summary>Number of regions.</summary>
    public int RegionCount => _regions.Length;

    /// <summary>A new map with no regions (every access fails).</summary>
    public static GuestMemoryMap CreateEmpty() => new([], []);

    /// <summary>
    /// Validates <paramref name="regions"/> and builds a map that holds a reference on each of them. Refuses empty
    /// regions, regions that wrap around 2^64 in either address space, and overlaps; <paramref name="reason"/> says
    /// which. The caller keeps its own references and disposes them as usual.
    /// </summary>
    internal static bool TryCreate(ReadOnlySpan<GuestRegion> regions, out GuestMemoryMap? map, out string? reason)
    {
        map = null;
        var sorted = regions.ToArray();
        SortBy(sorted, byUserAddress: false);
        reason = Validate(sorted);
        if (reason is not null)
        {
            return false;
        }

        var byUser = new GuestRegion[sorted.Length];
        sorted.CopyTo(byUser, 0);
        SortBy(byUser, byUserAddress: true);
        for (int i = 1; i < byUser.Length; i++)
        {
            if (byUser[i].UserAddress <= byUser[i - 1].UserAddress + (byUser[i - 1].Size - 1))
            {
                reason = $"front-end address ranges overlap: regions at user address 0x{byUser[i - 1].UserAddress:x} and 0x{byUser[i].UserAddress:x}";
                return false;
            }
        }

        var userIndex = new int[sorted.Length];
        for (int i = 0; i < byUser.Length; i++)
        {
            userIndex[i] = Array.IndexOf(sorted, byUser[i]);
        }

        for (int i = 0; i < sorted.Length; i++)
        {
            if (!sorted[i].TryAddRef())
            {
                for (int j = 0; j < i; j++)
                {
                    sorted[j].Release();
                }

                reason = $"region at {sorted[i].Start} has already been released";
                return false;
            }
        }

        map = new GuestMemoryMap(sorted, userIndex);
        return true;
    }

    /// <summary>This map's regions plus <paramref name="region"/> (ADD_MEM_REG), validated like <see cref="TryCreate"/>.</summary>
    internal bool TryAdd(GuestRegion region, out GuestMemoryMap? map, out string? reason)
    {
        var all = new GuestRegion[_regions.Length + 1];
        _regions.CopyTo(all, 0);
        all[^1] = region;
        return TryCreate(all, out map, out reason);
    }

    /// <summary>
    /// This map without the region matching <paramref name="start"/>, <paramref name="size"/> and
    /// <paramref name="userAddress"/> (REM_MEM_REG). Returns <see langword="false"/> when no region matches.
    /// </summary>
    internal bool TryRemove(GuestAddress start, ulong size, ulong userAddress, out GuestMemoryMap? map, out GuestRegion? removed)
    {
        map = null;
        removed = null;
        int index = -1;
        for (int i = 0; i < _regions.Length; i++)
        {
            GuestRegion r = _regions[i];
            if (r.Start == start && r.Size == size && r.UserAddress == userAddress)
            {
                index = i;
                break;
            }
        }

        if (index < 0)
        {
            return false;
        }

        var rest = new GuestRegion[_regions.Length - 1];
        Array.Copy(_regions, 0, rest, 0, index);
        Array.Copy(_regions, index + 1, rest, index, rest.Length - index);
        removed = _regions[index];
        return TryCreate(rest, out map, out _);
    }

    /// <summary>The regions in guest-physical order (shared array: do not modify).</summary>
    internal ReadOnlySpan<GuestRegion> Regions => _regions;

    /// <summary>Takes a reference unless the map has already been released; see <see cref="GuestMemorySlot"/>.</summary>
    internal bool TryAddRef() => _refs.TryAddRef();

    /// <summary>Drops a reference; the last one releases the regions.</summary>
    internal void Release()
    {
        if (_refs.Release())
        {
            foreach (GuestRegion region in _regions)
            {
                region.Release();
            }
        }
    }

    private static string? Validate(GuestRegion[] sorted)
    {
        for (int i = 0; i < sorted.Length; i++)
        {
            GuestRegion r = sorted[i];
            if (r.Size == 0)
            {
                return $"region at {r.Start} is empty";
            }

            if (!r.Start.RangeFits(r.Size))
            {
                return $"region at {r.Start} of 0x{r.Size:x} bytes wraps around the guest address space";
            }

            if (!new GuestAddress(r.UserAddress).RangeFits(r.Size))
            {
                return $"region at {r.Start} has a front-end address 0x{r.UserAddress:x} that wraps with its size 0x{r.Size:x}";
            }

            if (i > 0 && r.Start.Value <= sorted[i - 1].Last)
            {
                return $"regions overlap: {sorted[i - 1].Start} (0x{sorted[i - 1].Size:x} bytes) and {r.Start}";
            }
        }

        return null;
    }

    // Insertion sort: tables hold at most a few hundred regions and this runs only on SET_MEM_TABLE/ADD_MEM_REG.
    private static void SortBy(GuestRegion[] regions, bool byUserAddress)
    {
        for (int i = 1; i < regions.Length; i++)
        {
            GuestRegion item = regions[i];
            ulong key = byUserAddress ? item.UserAddress : item.Start.Value;
            int j = i - 1;
            while (j >= 0 && (byUserAddress ? regions[j].UserAddress : regions[j].Start.Value) > key)
            {
                regions[j + 1] = regions[j];
                j--;
            }

            regions[j + 1] = item;
        }
    }
}
