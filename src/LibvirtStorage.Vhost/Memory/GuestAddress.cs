namespace LibvirtStorage.Vhost.Memory;

/// <summary>
/// A guest-physical address (GPA). Arithmetic on it is overflow-checked and reports failure with a
/// <see langword="bool"/>, because every address a guest hands us may be hostile.
/// </summary>
/// <param name="Value">The raw 64-bit guest-physical address.</param>
public readonly record struct GuestAddress(ulong Value)
{
    /// <summary>Adds <paramref name="offset"/>; returns <see langword="false"/> when the sum wraps past 2^64.</summary>
    /// <param name="offset">The byte offset to add.</param>
    /// <param name="result">The sum, or <c>default</c> when it would wrap.</param>
    public bool CheckedAdd(ulong offset, out GuestAddress result)
    {
        ulong sum = unchecked(Value + offset);
        if (sum < Value)
        {
            result = default;
            return false;
        }

        result = new GuestAddress(sum);
        return true;
    }

    /// <summary>Returns <see langword="true"/> when <c>[this, this + length)</c> does not wrap past 2^64.</summary>
    /// <param name="length">The length of the range in bytes; 0 always fits.</param>
    public bool RangeFits(ulong length) => length == 0 || Value <= ulong.MaxValue - (length - 1);

    /// <inheritdoc/>
    public override string ToString() => $"0x{Value:x}";
}
