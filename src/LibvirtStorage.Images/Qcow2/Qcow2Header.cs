using System.Buffers.Binary;
using System.Text;

namespace LibvirtStorage.Images.Qcow2;

/// <summary>One header extension (qcow2.txt "Header extensions"), kept verbatim unless the engine owns it.</summary>
internal sealed record Qcow2HeaderExtension(uint Type, byte[] Data);

/// <summary>
/// The qcow2 header (qcow2.txt "Header"): parsed from big-endian bytes, validated, and written back
/// with every extension the engine does not understand preserved in order.
/// </summary>
internal sealed record Qcow2Header
{
    public const uint Magic = 0x514649fb;
    public const uint ExtEnd = 0;
    public const uint ExtBackingFormat = 0xe2792aca;
    public const uint ExtFeatureNames = 0x6803f857;
    public const uint ExtBitmaps = 0x23852875;
    public const uint ExtFullDiskEncryption = 0x0537be77;
    public const uint ExtDataFile = 0x44415441;

    public const ulong IncompatDirty = 1UL << 0;
    public const ulong IncompatCorrupt = 1UL << 1;
    public const ulong IncompatDataFile = 1UL << 2;
    public const ulong IncompatCompression = 1UL << 3;
    public const ulong IncompatExtendedL2 = 1UL << 4;
    public const ulong IncompatKnown = IncompatDirty | IncompatCorrupt | IncompatDataFile | IncompatCompression | IncompatExtendedL2;
    public const ulong CompatLazyRefcounts = 1UL << 0;
    public const ulong AutoclearBitmaps = 1UL << 0;
    public const ulong AutoclearDataFileRaw = 1UL << 1;
    public const ulong AutoclearKnown = AutoclearBitmaps | AutoclearDataFileRaw;

    /// <summary>QEMU's QCOW_MAX_L1_SIZE: 32 MiB of L1 entries.</summary>
    public const long MaxL1Bytes = 32L << 20;

    /// <summary>QEMU's QCOW_MAX_REFTABLE_SIZE: 8 MiB of refcount table.</summary>
    public const long MaxRefcountTableBytes = 8L << 20;

    public const int V2HeaderLength = 72;
    public const int V3HeaderLength = 112;

    public uint Version { get; init; }
    public ulong BackingFileOffset { get; init; }
    public uint BackingFileSize { get; init; }
    public int ClusterBits { get; init; }
    public ulong Size { get; init; }
    public uint CryptMethod { get; init; }
    public uint L1Size { get; init; }
    public ulong L1TableOffset { get; init; }
    public ulong RefcountTableOffset { get; init; }
    public uint RefcountTableClusters { get; init; }
    public uint NbSnapshots { get; init; }
    public ulong SnapshotsOffset { get; init; }
    public ulong IncompatibleFeatures { get; init; }
    public ulong CompatibleFeatures { get; init; }
    public ulong AutoclearFeatures { get; init; }
    public int RefcountOrder { get; init; } = 4;
    public uint HeaderLength { get; init; }
    public CompressionType CompressionType { get; init; }
    public string? BackingFile { get; init; }
    public IReadOnlyList<Qcow2HeaderExtension> Extensions { get; init; } = [];

    public int ClusterSize => 1 << ClusterBits;
    public bool ExtendedL2 => (IncompatibleFeatures & IncompatExtendedL2) != 0;
    public bool LazyRefcounts => (CompatibleFeatures & CompatLazyRefcounts) != 0;
    public bool Dirty => (IncompatibleFeatures & IncompatDirty) != 0;
    public bool Corrupt => (IncompatibleFeatures & IncompatCorrupt) != 0;

    public string? BackingFormat
    {
        get
        {
            foreach (Qcow2HeaderExtension e in Extensions)
            {
                if (e.Type == ExtBackingFormat)
                {
                    return Encoding.UTF8.GetString(e.Data).TrimEnd('\0');
                }
            }

            return null;
        }
    }

    public static bool HasMagic(ReadOnlySpan<byte> bytes) => bytes.Length >= 4 && BinaryPrimitives.ReadUInt32BigEndian(bytes) == Magic;

    /// <summary>
    /// Parses and validates the header in the image's first cluster. Everything that could make the
    /// engine allocate, loop or seek absurdly is refused here with a clear message.
    /// </summary>
    /// <param name="path">For error messages.</param>
    /// <param name="b">The first bytes of the file (at least 4 KiB or the whole file).</param>
    /// <param name="fileLength">The file's length, to bound table offsets.</param>
    public static Qcow2Header Parse(string path, ReadOnlySpan<byte> b, long fileLength)
    {
        if (b.Length < V2HeaderLength || !HasMagic(b))
        {
            ThrowHelper.Invalid(path, "not a qcow2 image (bad magic or truncated header)");
        }

        uint version = BinaryPrimitives.ReadUInt32BigEndian(b[4..]);
        if (version is not 2 and not 3)
        {
            ThrowHelper.Unsupported(path, $"qcow2 version {version} is not supported (only 2 and 3)");
        }

        int clusterBits = (int)BinaryPrimitives.ReadUInt32BigEndian(b[20..]);
        if (clusterBits is < 9 or > 21)
        {
            ThrowHelper.Invalid(path, $"cluster size 2^{clusterBits} is outside 512 B to 2 MiB");
        }

        var h = new Qcow2Header
        {
            Version = version,
            BackingFileOffset = BinaryPrimitives.ReadUInt64BigEndian(b[8..]),
            BackingFileSize = BinaryPrimitives.ReadUInt32BigEndian(b[16..]),
            ClusterBits = clusterBits,
            Size = BinaryPrimitives.ReadUInt64BigEndian(b[24..]),
            CryptMethod = BinaryPrimitives.ReadUInt32BigEndian(b[32..]),
            L1Size = BinaryPrimitives.ReadUInt32BigEndian(b[36..]),
            L1TableOffset = BinaryPrimitives.ReadUInt64BigEndian(b[40..]),
            RefcountTableOffset = BinaryPrimitives.ReadUInt64BigEndian(b[48..]),
            RefcountTableClusters = BinaryPrimitives.ReadUInt32BigEndian(b[56..]),
            NbSnapshots = BinaryPrimitives.ReadUInt32BigEndian(b[60..]),
            SnapshotsOffset = BinaryPrimitives.ReadUInt64BigEndian(b[64..]),
            HeaderLength = V2HeaderLength,
        };

        int clusterSize = 1 << clusterBits;
        if (version == 3)
        {
            if (b.Length < 104)
            {
                ThrowHelper.Invalid(path, "qcow2 v3 header is truncated");
            }

            uint headerLength = BinaryPrimitives.ReadUInt32BigEndian(b[100..]);
            if (headerLength < 104 || headerLength > clusterSize || headerLength > b.Length)
            {
                ThrowHelper.Invalid(path, $"qcow2 header length {headerLength} is invalid");
            }

            h = h with
            {
                IncompatibleFeatures = BinaryPrimitives.ReadUInt64BigEndian(b[72..]),
                CompatibleFeatures = BinaryPrimitives.ReadUInt64BigEndian(b[80..]),
                AutoclearFeatures = BinaryPrimitives.ReadUInt64BigEndian(b[88..]),
                RefcountOrder = (int)BinaryPrimitives.ReadUInt32BigEndian(b[96..]),
                HeaderLength = headerLength,
                CompressionType = headerLength > 104 ? (CompressionType)b[104] : CompressionType.Zlib,
            };
        }

        h.Validate(path, fileLength);
        h = h with { Extensions = ParseExtensions(path, b, h, clusterSize) };
        return h with { BackingFile = ParseBackingFile(path, b, h, clusterSize) };
    }

    private void Validate(string path, long fileLength)
    {
        int clusterSize = ClusterSize;
        if (CryptMethod != 0)
        {
            ThrowHelper.Unsupported(path, "encrypted qcow2 images are not supported; decrypt it with qemu-img convert --object secret,... first");
        }

        ulong unknown = IncompatibleFeatures & ~IncompatKnown;
        if (unknown != 0)
        {
            ThrowHelper.Unsupported(path, $"unknown incompatible qcow2 features 0x{unknown:x}");
        }

        if ((IncompatibleFeatures & IncompatDataFile) != 0)
        {
            ThrowHelper.Unsupported(path, "qcow2 images with an external data file are not supported; convert it to a self-contained image with qemu-img convert");
        }

        if (RefcountOrder is < 0 or > 6 || (Version == 2 && RefcountOrder != 4))
        {
            ThrowHelper.Invalid(path, $"refcount order {RefcountOrder} is invalid");
        }

        if (CompressionType is not CompressionType.Zlib and not CompressionType.Zstd)
        {
            ThrowHelper.Unsupported(path, $"unknown compression type {(int)CompressionType}");
        }

        if (CompressionType != CompressionType.Zlib && (IncompatibleFeatures & IncompatCompression) == 0)
        {
            ThrowHelper.Invalid(path, "compression type is set but the compression incompatible bit is not");
        }

        if (ExtendedL2 && ClusterBits < 14)
        {
            ThrowHelper.Invalid(path, "extended L2 entries need clusters of at least 16 KiB");
        }

        if (Size > long.MaxValue / 2)
        {
            ThrowHelper.Invalid(path, $"virtual size {Size} is too large");
        }

        int l2Entries = clusterSize / (ExtendedL2 ? 16 : 8);
        ulong bytesPerL1 = (ulong)clusterSize * (ulong)l2Entries;
        ulong neededL1 = (Size + bytesPerL1 - 1) / bytesPerL1;
        if ((ulong)L1Size * 8 > MaxL1Bytes)
        {
            ThrowHelper.Corrupt(path, 36, $"L1 table size {L1Size} entries is absurd (limit {MaxL1Bytes / 8})");
        }

        if (L1Size < neededL1)
        {
            ThrowHelper.Corrupt(path, 36, $"L1 table has {L1Size} entries but the virtual size needs {neededL1}");
        }

        CheckTable(path, "L1 table", L1TableOffset, (ulong)L1Size * 8, fileLength, allowEmpty: L1Size == 0);
        if ((ulong)RefcountTableClusters * (ulong)clusterSize > MaxRefcountTableBytes || RefcountTableClusters == 0)
        {
            ThrowHelper.Corrupt(path, 56, $"refcount table of {RefcountTableClusters} clusters is invalid");
        }

        CheckTable(path, "refcount table", RefcountTableOffset, (ulong)RefcountTableClusters * (ulong)clusterSize, fileLength, allowEmpty: false);
        if (NbSnapshots > 65536)
        {
            ThrowHelper.Corrupt(path, 60, $"{NbSnapshots} snapshots is more than qcow2 allows");
        }

        if (NbSnapshots > 0)
        {
            CheckTable(path, "snapshot table", SnapshotsOffset, 1, fileLength, allowEmpty: false);
        }
    }

    private void CheckTable(string path, string what, ulong offset, ulong length, long fileLength, bool allowEmpty)
    {
        if (allowEmpty && offset == 0)
        {
            return;
        }

        if (offset == 0 || (offset & (ulong)(ClusterSize - 1)) != 0)
        {
            ThrowHelper.Corrupt(path, (long)Math.Min(offset, long.MaxValue), $"{what} offset 0x{offset:x} is not cluster aligned");
        }

        if (offset > (ulong)fileLength || length > (ulong)fileLength - offset)
        {
            ThrowHelper.Corrupt(path, (long)Math.Min(offset, long.MaxValue), $"{what} at 0x{offset:x} ({length} bytes) extends past the end of the file ({fileLength} bytes)");
        }
    }

    private static List<Qcow2HeaderExtension> ParseExtensions(string path, ReadOnlySpan<byte> b, Qcow2Header h, int clusterSize)
    {
        var list = new List<Qcow2HeaderExtension>();
        int end = Math.Min(clusterSize, b.Length);
        long limit = h.BackingFileOffset != 0 && h.BackingFileOffset < (ulong)end ? (long)h.BackingFileOffset : end;
        long pos = h.HeaderLength;
        while (pos + 8 <= limit)
        {
            uint type = BinaryPrimitives.ReadUInt32BigEndian(b[(int)pos..]);
            uint len = BinaryPrimitives.ReadUInt32BigEndian(b[(int)(pos + 4)..]);
            if (type == ExtEnd)
            {
                return list;
            }

            if (len > limit - pos - 8)
            {
                ThrowHelper.Invalid(path, $"header extension 0x{type:x8} of {len} bytes runs past the header cluster");
            }

            if (type == ExtFullDiskEncryption)
            {
                ThrowHelper.Unsupported(path, "encrypted qcow2 images (LUKS) are not supported");
            }

            list.Add(new Qcow2HeaderExtension(type, b.Slice((int)pos + 8, (int)len).ToArray()));
            pos += 8 + ((len + 7L) & ~7L);
        }

        return list;
    }

    private static string? ParseBackingFile(string path, ReadOnlySpan<byte> b, Qcow2Header h, int clusterSize)
    {
        if (h.BackingFileOffset == 0)
        {
            return null;
        }

        if (h.BackingFileSize == 0 || h.BackingFileSize > 1023 ||
            h.BackingFileOffset > (ulong)Math.Min(clusterSize, b.Length) - h.BackingFileSize)
        {
            ThrowHelper.Invalid(path, $"backing file name at 0x{h.BackingFileOffset:x} ({h.BackingFileSize} bytes) is invalid");
        }

        string name = Encoding.UTF8.GetString(b.Slice((int)h.BackingFileOffset, (int)h.BackingFileSize));
        if (name.Contains('\0', StringComparison.Ordinal))
        {
            ThrowHelper.Invalid(path, "backing file name contains a NUL byte");
        }

        return name;
    }

    /// <summary>
    /// Serialises the header, its extensions and the backing file name into <paramref name="cluster"/>
    /// (cleared first). Like QEMU, the feature name table (informational only) is left out when it does
    /// not fit, which happens with 512-byte clusters.
    /// </summary>
    /// <returns>False when they do not fit in one cluster.</returns>
    public bool TryWrite(Span<byte> cluster) =>
        TryWrite(cluster, withFeatureNames: true) || TryWrite(cluster, withFeatureNames: false);

    private bool TryWrite(Span<byte> cluster, bool withFeatureNames)
    {
        cluster.Clear();
        BinaryPrimitives.WriteUInt32BigEndian(cluster, Magic);
        BinaryPrimitives.WriteUInt32BigEndian(cluster[4..], Version);
        BinaryPrimitives.WriteUInt32BigEndian(cluster[20..], (uint)ClusterBits);
        BinaryPrimitives.WriteUInt64BigEndian(cluster[24..], Size);
        BinaryPrimitives.WriteUInt32BigEndian(cluster[32..], CryptMethod);
        BinaryPrimitives.WriteUInt32BigEndian(cluster[36..], L1Size);
        BinaryPrimitives.WriteUInt64BigEndian(cluster[40..], L1TableOffset);
        BinaryPrimitives.WriteUInt64BigEndian(cluster[48..], RefcountTableOffset);
        BinaryPrimitives.WriteUInt32BigEndian(cluster[56..], RefcountTableClusters);
        BinaryPrimitives.WriteUInt32BigEndian(cluster[60..], NbSnapshots);
        BinaryPrimitives.WriteUInt64BigEndian(cluster[64..], SnapshotsOffset);
        int pos = V2HeaderLength;
        if (Version == 3)
        {
            BinaryPrimitives.WriteUInt64BigEndian(cluster[72..], IncompatibleFeatures);
            BinaryPrimitives.WriteUInt64BigEndian(cluster[80..], CompatibleFeatures);
            BinaryPrimitives.WriteUInt64BigEndian(cluster[88..], AutoclearFeatures);
            BinaryPrimitives.WriteUInt32BigEndian(cluster[96..], (uint)RefcountOrder);
            int headerLength = (int)Math.Max(HeaderLength, V3HeaderLength);
            BinaryPrimitives.WriteUInt32BigEndian(cluster[100..], (uint)headerLength);
            cluster[104] = (byte)CompressionType;
            pos = headerLength;
        }

        foreach (Qcow2HeaderExtension e in Extensions)
        {
            if (!withFeatureNames && e.Type == ExtFeatureNames)
            {
                continue;
            }

            int padded = (e.Data.Length + 7) & ~7;
            if (pos + 8 + padded + 8 > cluster.Length)
            {
                return false;
            }

            BinaryPrimitives.WriteUInt32BigEndian(cluster[pos..], e.Type);
            BinaryPrimitives.WriteUInt32BigEndian(cluster[(pos + 4)..], (uint)e.Data.Length);
            e.Data.CopyTo(cluster[(pos + 8)..]);
            pos += 8 + padded;
        }

        pos += 8; // end-of-extensions marker: already zero
        if (BackingFile is not null)
        {
            byte[] name = Encoding.UTF8.GetBytes(BackingFile);
            if (name.Length > 1023 || pos + name.Length > cluster.Length)
            {
                return false;
            }

            name.CopyTo(cluster[pos..]);
            BinaryPrimitives.WriteUInt64BigEndian(cluster[8..], (ulong)pos);
            BinaryPrimitives.WriteUInt32BigEndian(cluster[16..], (uint)name.Length);
        }

        return true;
    }

    /// <summary>This header with the backing file and its format extension replaced (null removes both).</summary>
    public Qcow2Header WithBacking(string? backingFile, string? backingFormat)
    {
        var extensions = new List<Qcow2HeaderExtension>();
        foreach (Qcow2HeaderExtension e in Extensions)
        {
            if (e.Type != ExtBackingFormat)
            {
                extensions.Add(e);
            }
        }

        if (backingFile is not null && backingFormat is not null)
        {
            extensions.Insert(0, new Qcow2HeaderExtension(ExtBackingFormat, Encoding.UTF8.GetBytes(backingFormat)));
        }

        return this with { BackingFile = backingFile, Extensions = extensions };
    }
}
