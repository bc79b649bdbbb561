namespace LibvirtStorage.Vhost.Memory;

/// <summary>
/// One guest memory region as vhost-user describes it (<c>VhostUserMemoryRegion</c>): guest-physical start, size,
/// the front-end's own virtual address for it (ring addresses arrive in that space), and where it lives in our
/// process. Immutable once built.
/// </summary>
/// <remarks>
/// Lifetime is reference-counted. The creator (the request dispatcher) holds one reference until it
/// <see cref="Dispose"/>s the region, and each <see cref="GuestMemoryMap"/> that contains it holds one more. The
/// mapping is unmapped when the last of them lets go, so a worker still using an old map never sees its memory
/// disappear.
/// </remarks>
internal sealed class GuestRegion : IDisposable
{
    private readonly MmapRegion? _mapping;
    private RefCount _refs = new();
    private int _creatorReleased;

    private GuestRegion(GuestAddress start, ulong size, ulong userAddress, nint host, bool writable, MmapRegion? mapping)
    {
        Start = start;
        Size = size;
        UserAddress = userAddress;
        Host = host;
        Writable = writable;
        _mapping = mapping;
    }

    /// <summary>First guest-physical address of the region.</summary>
    public GuestAddress Start { get; }

    /// <summary>Length in bytes (never 0 in a valid map).</summary>
    public ulong Size { get; }

    /// <summary>The front-end's virtual address of the first byte (<c>userspace_addr</c>).</summary>
    public ulong UserAddress { get; }

    /// <summary>Host address of the first byte.</summary>
    public nint Host { get; }

    /// <summary>Whether the device may write into the region.</summary>
    public bool Writable { get; }

    /// <summary>Whether the underlying memory has been released (for tests).</summary>
    public bool IsReleased => _refs.IsZero;

    /// <summary>
    /// Maps <paramref name="size"/> bytes of <paramref name="fd"/> at <paramref name="mmapOffset"/> as the region
    /// <c>[guestStart, guestStart + size)</c>. Throws on mmap failure; the caller validates the whole table with
    /// <see cref="GuestMemoryMap.TryCreate"/>.
    /// </summary>
    public static GuestRegion Map(System.Runtime.InteropServices.SafeHandle fd, ulong mmapOffset, GuestAddress guestStart, ulong size, ulong userAddress)
    {
        MmapRegion mapping = MmapRegion.Map(fd, mmapOffset, size);
        return new GuestRegion(guestStart, size, userAddress, mapping.Pointer, writable: true, mapping);
    }

    /// <summary>
    /// Wraps memory the caller owns (tests and the in-memory fake). The caller keeps it alive and unmoved for as long
    /// as any map uses the region.
    /// </summary>
    public static GuestRegion FromPointer(GuestAddress guestStart, ulong size, ulong userAddress, nint host, bool writable = true) =>
        new(guestStart, size, userAddress, host, writable, mapping: null);

    /// <summary>Last guest-physical address in the region, valid only when <see cref="Size"/> is not 0.</summary>
    public ulong Last => Start.Value + (Size - 1);

    /// <summary>Drops the creator's reference (once); the memory goes when no map uses it either.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _creatorReleased, 1) == 0)
        {
            Release();
        }
    }

    /// <summary>Takes a reference for a map; fails when the region has already been released.</summary>
    internal bool TryAddRef() => _refs.TryAddRef();

    /// <summary>Drops a reference taken with <see cref="TryAddRef"/>.</summary>
    internal void Release()
    {
        if (_refs.Release())
        {
            _mapping?.Dispose();
        }
    }
}
