namespace LibvirtStorage.Vhost.Memory;

/// <summary>
/// The host spans covering a validated guest-physical range, one per region it crosses (and at most
/// <see cref="MaxSpan"/> bytes each). A <see langword="ref struct"/>, so the spans cannot outlive the caller's frame
/// or cross an <see langword="await"/>: the stand-in for vm-memory's <c>VolatileSlice&lt;'a&gt;</c>.
/// </summary>
public ref struct GuestSegments
{
    /// <summary>The largest span handed out; longer pieces of one region are split.</summary>
    public const int MaxSpan = 1 << 30;

    private readonly GuestRegion[]? _regions;
    private int _index;
    private ulong _address;
    private ulong _remaining;
    private Span<byte> _current;

    internal GuestSegments(GuestRegion[] regions, int index, ulong address, ulong length)
    {
        _regions = regions;
        _index = index;
        _address = address;
        _remaining = length;
        _current = default;
    }

    /// <summary>The current span.</summary>
    public readonly Span<byte> Current => _current;

    /// <summary>Returns this enumerator (for <see langword="foreach"/>).</summary>
    public readonly GuestSegments GetEnumerator() => this;

    /// <summary>Advances to the next span.</summary>
    public bool MoveNext()
    {
        if (_remaining == 0 || _regions is null)
        {
            _current = default;
            return false;
        }

        GuestRegion r = _regions[_index];
        ulong offset = _address - r.Start.Value;
        if (offset == r.Size)
        {
            // Validation proved the next region starts exactly here.
            r = _regions[++_index];
            offset = 0;
        }

        ulong chunk = Math.Min(Math.Min(_remaining, r.Size - offset), MaxSpan);

        unsafe
        {
            // SAFETY: GuestMemory.IsRangeValid proved the whole range lies in contiguous live regions, so
            // [offset, offset + chunk) is inside region r's host mapping, which the caller's lease keeps mapped.
            _current = new Span<byte>((void*)(r.Host + (nint)offset), (int)chunk);
        }
        _address += chunk;
        _remaining -= chunk;
        return true;
    }

    /// <summary>Total bytes not yet enumerated.</summary>
    public readonly ulong Remaining => _remaining;

    /// <summary>Copies the whole range into <paramref name="destination"/>, which must be at least as long.</summary>
    /// <param name="destination">The buffer to fill.</param>
    public readonly void CopyTo(Span<byte> destination)
    {
        GuestSegments copy = this;
        foreach (Span<byte> piece in copy)
        {
            piece.CopyTo(destination);
            destination = destination[piece.Length..];
        }
    }
}
