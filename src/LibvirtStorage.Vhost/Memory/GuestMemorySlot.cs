namespace LibvirtStorage.Vhost.Memory;

/// <summary>
/// The current <see cref="GuestMemoryMap"/> of a connection, swapped RCU-style: the owner (the request dispatcher)
/// publishes a new map with one <see cref="Interlocked.Exchange{T}(ref T, T)"/>, and each worker takes a
/// reference-counted lease per batch. An old map's regions stay mapped until the last lease on it is disposed.
/// </summary>
public sealed class GuestMemorySlot : IDisposable
{
    private GuestMemoryMap _current = GuestMemoryMap.CreateEmpty();

    /// <summary>
    /// Leases the current map. Dispose the lease exactly once, at the end of the batch; never hold it across a
    /// wait for the next kick.
    /// </summary>
    public GuestMemoryLease Acquire()
    {
        while (true)
        {
            GuestMemoryMap map = Volatile.Read(ref _current);

            // Fails only if the owner swapped this map out and the last lease on it went away in between;
            // the next read then sees the newer map.
            if (map.TryAddRef())
            {
                return new GuestMemoryLease(map);
            }
        }
    }

    /// <summary>
    /// Publishes <paramref name="next"/> (taking over the reference its creator holds) and drops the slot's reference
    /// on the previous map. Called by the single owner; workers see the new map on their next <see cref="Acquire"/>.
    /// </summary>
    public void Replace(GuestMemoryMap next)
    {
        ArgumentNullException.ThrowIfNull(next);
        GuestMemoryMap previous = Interlocked.Exchange(ref _current, next);
        previous.Release();
    }

    /// <summary>Replaces the map with an empty one, so the memory goes once outstanding leases end.</summary>
    public void Dispose() => Replace(GuestMemoryMap.CreateEmpty());
}

/// <summary>A reference on one <see cref="GuestMemoryMap"/>; dispose exactly once (it is a struct: do not copy it around).</summary>
public readonly struct GuestMemoryLease : IDisposable
{
    private readonly GuestMemoryMap? _map;

    internal GuestMemoryLease(GuestMemoryMap map) => _map = map;

    /// <summary>The leased memory.</summary>
    public GuestMemory Memory => _map!.Memory;

    /// <summary>Drops the reference.</summary>
    public void Dispose() => _map?.Release();
}
