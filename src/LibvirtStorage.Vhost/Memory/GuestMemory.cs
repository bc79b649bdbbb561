using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace LibvirtStorage.Vhost.Memory;

/// <summary>
/// Access to the guest memory of one <see cref="GuestMemoryMap"/>: copying reads and writes of unmanaged values,
/// acquire/release 16-bit accesses for ring indices, and <see cref="TryGetSegments"/> for bulk data. Every method
/// checks the whole range, with overflow-safe arithmetic, and returns <see langword="false"/> for an address the
/// guest got wrong; none of them throws for guest input. Multi-byte values are in host byte order, which is the
/// virtio (little-endian) order on the hosts we support.
/// </summary>
/// <remarks>Valid only while the caller holds a lease on its map (<see cref="GuestMemorySlot.Acquire"/>).</remarks>
public sealed class GuestMemory
{
    private readonly GuestRegion[] _regions;
    private readonly int[] _byUserAddress;

    internal GuestMemory(GuestRegion[] regions, int[] byUserAddress)
    {
        _regions = regions;
        _byUserAddress = byUserAddress;
    }

    /// <summary>Copies a <typeparamref name="T"/> out of guest memory at <paramref name="address"/>.</summary>
    /// <typeparam name="T">An unmanaged value type laid out as the guest lays it out.</typeparam>
    /// <param name="address">Guest-physical address of the first byte.</param>
    /// <param name="value">The value read, or <c>default</c> on failure.</param>
    public bool TryRead<T>(GuestAddress address, out T value)
        where T : unmanaged
    {
        if (TryGetContiguous(address, (ulong)Unsafe.SizeOf<T>(), writable: false, out nint host))
        {
            unsafe
            {
                // SAFETY: TryGetContiguous proved [address, address + SizeOf<T>) lies inside one region, whose host
                // mapping is alive while the caller holds a lease on this map; the read is unaligned-safe.
                value = Unsafe.ReadUnaligned<T>((void*)host);
            }

            return true;
        }

        value = default;
        return TryCopyAcrossRegions(address, MemoryMarshal.AsBytes(new Span<T>(ref value)), write: false);
    }

    /// <summary>Copies <paramref name="value"/> into guest memory at <paramref name="address"/>.</summary>
    /// <typeparam name="T">An unmanaged value type laid out as the guest expects it.</typeparam>
    /// <param name="address">Guest-physical address of the first byte.</param>
    /// <param name="value">The value to write.</param>
    public bool TryWrite<T>(GuestAddress address, T value)
        where T : unmanaged
    {
        if (TryGetContiguous(address, (ulong)Unsafe.SizeOf<T>(), writable: true, out nint host))
        {
            unsafe
            {
                // SAFETY: as in TryRead, the range is inside one live, writable region.
                Unsafe.WriteUnaligned((void*)host, value);
            }

            return true;
        }

        return TryCopyAcrossRegions(address, MemoryMarshal.AsBytes(new Span<T>(ref value)), write: true);
    }

    /// <summary>Reads a 16-bit ring index with acquire semantics; <paramref name="address"/> must be 2-byte aligned.</summary>
    /// <param name="address">Guest-physical address of the index.</param>
    /// <param name="value">The index, or 0 on failure.</param>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryLoadAcquire16(GuestAddress address, out ushort value)
    {
        if ((address.Value & 1) == 0 && TryGetContiguous(address, 2, writable: false, out nint host) && (host & 1) == 0)
        {
            unsafe
            {
                // SAFETY: two bytes at an aligned host address inside a live region; aligned 16-bit loads are atomic.
                value = Volatile.Read(ref *(ushort*)host);
            }

            return true;
        }

        value = 0;
        return false;
    }

    /// <summary>Writes a 16-bit ring index with release semantics; <paramref name="address"/> must be 2-byte aligned.</summary>
    /// <param name="address">Guest-physical address of the index.</param>
    /// <param name="value">The index to publish.</param>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryStoreRelease16(GuestAddress address, ushort value)
    {
        if ((address.Value & 1) == 0 && TryGetContiguous(address, 2, writable: true, out nint host) && (host & 1) == 0)
        {
            unsafe
            {
                // SAFETY: two bytes at an aligned host address inside a live, writable region; aligned stores are atomic.
                Volatile.Write(ref *(ushort*)host, value);
            }

            return true;
        }

        return false;
    }

    /// <summary>
    /// Checks that <c>[address, address + length)</c> is covered by regions (contiguous in guest-physical space, and
    /// writable when <paramref name="writable"/> is set) and, if so, returns an enumerator of host spans over it.
    /// A length of 0 is valid at any address and enumerates nothing.
    /// </summary>
    /// <param name="address">Guest-physical address of the first byte.</param>
    /// <param name="length">Length of the range in bytes.</param>
    /// <param name="writable">Whether the device will write to the range.</param>
    /// <param name="segments">The spans, in order; empty on failure.</param>
    public bool TryGetSegments(GuestAddress address, ulong length, bool writable, out GuestSegments segments)
    {
        if (!IsRangeValid(address, length, writable, out int first))
        {
            segments = default;
            return false;
        }

        segments = new GuestSegments(_regions, first, address.Value, length);
        return true;
    }

    /// <summary>Whether <c>[address, address + length)</c> is inside guest memory (see <see cref="TryGetSegments"/>).</summary>
    /// <param name="address">Guest-physical address of the first byte.</param>
    /// <param name="length">Length of the range in bytes.</param>
    /// <param name="writable">Whether the device will write to the range.</param>
    public bool IsRangeValid(GuestAddress address, ulong length, bool writable) => IsRangeValid(address, length, writable, out _);

    /// <summary>
    /// Translates a front-end virtual address (as in SET_VRING_ADDR) to a guest-physical address, requiring
    /// <paramref name="length"/> bytes from it to lie in the same region.
    /// </summary>
    /// <param name="userAddress">Address in the front-end's address space.</param>
    /// <param name="length">Bytes that must follow it inside the same region.</param>
    /// <param name="address">The guest-physical address, or <c>default</c> on failure.</param>
    public bool TryTranslateUserAddress(ulong userAddress, ulong length, out GuestAddress address)
    {
        int lo = 0, hi = _byUserAddress.Length - 1, found = -1;
        while (lo <= hi)
        {
            int mid = lo + ((hi - lo) >> 1);
            if (_regions[_byUserAddress[mid]].UserAddress <= userAddress)
            {
                found = mid;
                lo = mid + 1;
            }
            else
            {
                hi = mid - 1;
            }
        }

        if (found >= 0)
        {
            GuestRegion region = _regions[_byUserAddress[found]];
            ulong offset = userAddress - region.UserAddress;
            if (offset < region.Size && length <= region.Size - offset)
            {
                address = new GuestAddress(region.Start.Value + offset);
                return true;
            }
        }

        address = default;
        return false;
    }

    /// <summary>Index of the region containing <paramref name="address"/>, or -1.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal int FindRegion(ulong address)
    {
        GuestRegion[] regions = _regions;
        int lo = 0, hi = regions.Length - 1;
        while (lo <= hi)
        {
            int mid = lo + ((hi - lo) >> 1);
            GuestRegion r = regions[mid];
            if (address < r.Start.Value)
            {
                hi = mid - 1;
            }
            else if (address - r.Start.Value >= r.Size)
            {
                lo = mid + 1;
            }
            else
            {
                return mid;
            }
        }

        return -1;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool TryGetContiguous(GuestAddress address, ulong length, bool writable, out nint host)
    {
        int index = FindRegion(address.Value);
        if (index >= 0)
        {
            GuestRegion r = _regions[index];
            ulong offset = address.Value - r.Start.Value;
            if (length <= r.Size - offset && (r.Writable || !writable))
            {
                host = r.Host + (nint)offset;
                return true;
            }
        }

        host = 0;
        return false;
    }

    private bool IsRangeValid(GuestAddress address, ulong length, bool writable, out int first)
    {
        first = 0;
        if (length == 0)
        {
            return true;
        }

        if (!address.RangeFits(length))
        {
            return false;
        }

        int index = FindRegion(address.Value);
        if (index < 0)
        {
            return false;
        }

        first = index;
        ulong last = address.Value + (length - 1);
        while (true)
        {
            GuestRegion r = _regions[index];
            if (writable && !r.Writable)
            {
                return false;
            }

            if (last <= r.Last)
            {
                return true;
            }

            // The range continues past this region: the next region must start right after it.
            index++;
            if (index == _regions.Length || _regions[index].Start.Value != r.Last + 1)
            {
                return false;
            }
        }
    }

    private bool TryCopyAcrossRegions(GuestAddress address, Span<byte> buffer, bool write)
    {
        if (!TryGetSegments(address, (ulong)buffer.Length, write, out GuestSegments segments))
        {
            return false;
        }

        foreach (Span<byte> piece in segments)
        {
            if (write)
            {
                buffer[..piece.Length].CopyTo(piece);
            }
            else
            {
                piece.CopyTo(buffer);
            }

            buffer = buffer[piece.Length..];
        }

        return true;
    }
}
