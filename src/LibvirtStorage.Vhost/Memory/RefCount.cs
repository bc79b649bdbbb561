namespace LibvirtStorage.Vhost.Memory;

/// <summary>
/// A reference count that starts at one and, once it has dropped to zero, can never be taken again: the
/// "try to add a reference unless already dead" step of RCU-style readers. A mutable struct: use it as a field.
/// </summary>
internal struct RefCount
{
    private int _count;

    /// <summary>Starts with the creator's reference.</summary>
    public RefCount() => _count = 1;

    /// <summary>Whether the count has reached zero.</summary>
    public readonly bool IsZero => Volatile.Read(in _count) == 0;

    /// <summary>Takes a reference unless the count has already reached zero.</summary>
    public bool TryAddRef()
    {
        int current = Volatile.Read(ref _count);
        while (current > 0)
        {
            int seen = Interlocked.CompareExchange(ref _count, current + 1, current);
            if (seen == current)
            {
                return true;
            }

            current = seen;
        }

        return false;
    }

    /// <summary>Drops a reference; returns <see langword="true"/> for the one that reached zero.</summary>
    public bool Release() => Interlocked.Decrement(ref _count) == 0;
}
