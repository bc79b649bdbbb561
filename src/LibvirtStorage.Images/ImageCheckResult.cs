namespace LibvirtStorage.Images;

/// <summary>What <c>check</c> found and fixed (the facts of <c>qemu-img check --output=json</c>).</summary>
public sealed record ImageCheckResult
{
    /// <summary>Metadata errors (references to clusters with too low a refcount, bad offsets, overlaps).</summary>
    public int Corruptions { get; init; }

    /// <summary>Clusters with a refcount but no reference.</summary>
    public int Leaks { get; init; }

    /// <summary>Errors repaired during this check.</summary>
    public int CorruptionsFixed { get; init; }

    /// <summary>Leaks repaired during this check.</summary>
    public int LeaksFixed { get; init; }

    /// <summary>Guest clusters (virtual size / cluster size).</summary>
    public long TotalClusters { get; init; }

    /// <summary>Guest clusters allocated in this image.</summary>
    public long AllocatedClusters { get; init; }

    /// <summary>Allocated guest clusters not contiguous with their predecessor.</summary>
    public long FragmentedClusters { get; init; }

    /// <summary>Allocated guest clusters stored compressed.</summary>
    public long CompressedClusters { get; init; }

    /// <summary>Offset after the last cluster in use.</summary>
    public long ImageEndOffset { get; init; }

    /// <summary>One line per problem found, in the order found.</summary>
    public IReadOnlyList<string> Messages { get; init; } = [];

    /// <summary>True when nothing is wrong (leaks do not count as corruption).</summary>
    public bool IsClean => Corruptions == 0 && Leaks == 0;
}

/// <summary>What check may repair (qemu-img check -r).</summary>
public enum CheckRepair
{
    /// <summary>Only report.</summary>
    None,
    /// <summary>Drop refcounts of unreferenced clusters.</summary>
    Leaks,
    /// <summary>Leaks plus refcounts that are too low.</summary>
    All,
}
