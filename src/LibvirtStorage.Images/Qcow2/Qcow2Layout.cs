using System.Runtime.CompilerServices;

namespace LibvirtStorage.Images.Qcow2;

/// <summary>Geometry of one qcow2 image: cluster, L2 and refcount arithmetic (qcow2.h's inline helpers).</summary>
internal sealed class Qcow2Layout
{
    public const ulong OffsetMask = 0x00fffffffffffe00UL;
    public const ulong RefTableOffsetMask = 0xfffffffffffffe00UL;
    public const ulong FlagCopied = 1UL << 63;
    public const ulong FlagCompressed = 1UL << 62;
    public const ulong FlagZero = 1UL;
    public const int Subclusters = 32;
    public const ulong AllAllocBits = 0xffffffffUL;

    public Qcow2Layout(int clusterBits, bool extendedL2, int refcountOrder, int version)
    {
        ClusterBits = clusterBits;
        ClusterSize = 1 << clusterBits;
        ExtendedL2 = extendedL2;
        Version = version;
        L2EntrySize = extendedL2 ? 16 : 8;
        L2Bits = clusterBits - (extendedL2 ? 4 : 3);
        L2Entries = 1 << L2Bits;
        SubclusterBits = extendedL2 ? clusterBits - 5 : clusterBits;
        SubclusterSize = 1 << SubclusterBits;
        RefcountOrder = refcountOrder;
        RefcountBits = 1 << refcountOrder;
        RefcountMax = RefcountBits == 64 ? ulong.MaxValue : (1UL << RefcountBits) - 1;
        RefblockBits = clusterBits + 3 - refcountOrder;
        CompressedSizeShift = 62 - (clusterBits - 8);
        CompressedSizeMask = (1UL << (clusterBits - 8)) - 1;
        CompressedOffsetMask = (1UL << CompressedSizeShift) - 1;
    }

    public int ClusterBits { get; }
    public int ClusterSize { get; }
    public bool ExtendedL2 { get; }
    public int Version { get; }
    public int L2EntrySize { get; }
    public int L2Bits { get; }
    public int L2Entries { get; }
    public int SubclusterBits { get; }
    public int SubclusterSize { get; }
    public int RefcountOrder { get; }
    public int RefcountBits { get; }
    public ulong RefcountMax { get; }

    /// <summary>log2 of the refcount entries in one refcount block.</summary>
    public int RefblockBits { get; }
    public int CompressedSizeShift { get; }
    public ulong CompressedSizeMask { get; }
    public ulong CompressedOffsetMask { get; }

    /// <summary>Guest bytes mapped by one L2 table.</summary>
    public long BytesPerL2 => (long)ClusterSize << L2Bits;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int OffsetInCluster(long offset) => (int)(offset & (ClusterSize - 1));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public long ClusterIndex(long offset) => offset >> ClusterBits;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public long L1Index(long guestOffset) => guestOffset >> (ClusterBits + L2Bits);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int L2Index(long guestOffset) => (int)((guestOffset >> ClusterBits) & (L2Entries - 1));

    public long ClustersFor(long bytes) => (bytes + ClusterSize - 1) >> ClusterBits;

    /// <summary>L1 entries needed for a virtual size.</summary>
    public long L1EntriesFor(long size) => (size + BytesPerL2 - 1) / BytesPerL2;

    public bool IsClusterAligned(ulong offset) => (offset & (ulong)(ClusterSize - 1)) == 0;

    /// <summary>Host byte range of a compressed cluster (qcow2.txt "Compressed Clusters Descriptor").</summary>
    public (long Offset, int Size) CompressedExtent(ulong entry)
    {
        long offset = (long)(entry & CompressedOffsetMask);
        ulong sectors = ((entry >> CompressedSizeShift) & CompressedSizeMask) + 1;
        int size = (int)((sectors * 512) - (ulong)(offset & 511));
        return (offset, size);
    }

    /// <summary>L2 descriptor for compressed data at <paramref name="offset"/> of <paramref name="size"/> bytes.</summary>
    public ulong CompressedEntry(long offset, int size)
    {
        ulong extraSectors = (ulong)(((offset + size - 1) >> 9) - (offset >> 9));
        return FlagCompressed | (extraSectors << CompressedSizeShift) | (ulong)offset;
    }
}
