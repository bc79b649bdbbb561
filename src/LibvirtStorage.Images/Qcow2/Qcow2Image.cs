using System.Buffers.Binary;
using LibvirtStorage.Images.Locking;
using LibvirtStorage.Images.Native;

namespace LibvirtStorage.Images.Qcow2;

/// <summary>
/// A qcow2 image (QEMU docs/interop/qcow2.txt), version 2 and 3, with backing chains, zero clusters,
/// extended L2 entries (subclusters), compressed clusters (zlib, zstd), lazy refcounts and internal
/// snapshots preserved.
/// </summary>
/// <remarks>
/// <para>Threading: one monitor (<c>_meta</c>) guards all metadata (L1, the L2 and refcount caches, the
/// header). Data I/O runs outside it. A guest cluster being allocated is recorded in <c>_allocating</c>;
/// other writers of that cluster wait, while readers keep seeing the old mapping until the new data is
/// completely written, so they never see garbage.</para>
/// <para>Crash safety: metadata is cached and written back in the order data, refcount blocks, refcount
/// table, L2 tables, L1 table, header, with fdatasync between steps (see <see cref="Flush"/>). Freed
/// clusters are only returned to the refcounts after the tables that stopped referencing them are on disk,
/// so an interrupted update can leak clusters but never leaves a reference to a free cluster.</para>
/// </remarks>
public sealed partial class Qcow2Image : IBlockImage
{
    private readonly ImageFile _file;
    private readonly IDisposable? _lock;
    private readonly Qcow2Layout _layout;
    private readonly Qcow2TableCache _l2Cache;
    private readonly Qcow2Refcounts _refcounts;
    private readonly IBlockImage? _backing;
    private readonly object _meta = new();
    private readonly HashSet<long> _allocating = [];
    private readonly List<(long Cluster, long Count)> _deferredFrees = [];
    private readonly bool _dirtyAtOpen;
    private readonly AlignedBufferPool _cowBuffers;
    private Qcow2Header _header;
    private ulong[] _l1;
    private bool _l1Dirty;
    private bool _readOnly;
    private bool _corrupt;
    private bool _dirtyBitSet;
    private bool _disposed;
    private int _ioInFlight;
    private long _size;
    private byte[]? _zeroCluster;
    private bool? _metadataPreallocated;

    private Qcow2Image(ImageFile file, IDisposable? fileLock, Qcow2Header header, ulong[] l1, ulong[] refTable, ImageOpenOptions options, IBlockImage? backing)
    {
        _file = file;
        _lock = fileLock;
        _header = header;
        _l1 = l1;
        _backing = backing;
        _readOnly = !file.Writable;
        _dirtyAtOpen = header.Dirty;
        _size = (long)header.Size;
        _layout = new Qcow2Layout(header.ClusterBits, header.ExtendedL2, header.RefcountOrder, (int)header.Version);
        long allTables = Math.Max(_layout.L1EntriesFor(_size), 1) * _layout.ClusterSize;
        long l2Bytes = options.L2CacheBytes ?? Math.Min(allTables, 32L << 20);
        int l2Slots = (int)Math.Clamp(l2Bytes / _layout.ClusterSize, 2, 1 << 16);
        int refSlots = (int)Math.Clamp((options.RefcountCacheBytes ?? (l2Bytes / 4)) / _layout.ClusterSize, 4, 1 << 16);
        _l2Cache = new Qcow2TableCache(file, _layout.ClusterSize, l2Slots);
        _cowBuffers = new AlignedBufferPool(_layout.ClusterSize);
        _refcounts = new Qcow2Refcounts(file, _layout, refTable, (long)header.RefcountTableOffset, refSlots, CommitRefcountTable)
        {
            OnCorruption = SignalCorruption,
            IsMetadata = IsMetadataCluster,
        };

        // An L2 entry must never reach the disk before the data it points to and the refcount that owns it.
        _l2Cache.BeforeWriteBack = () =>
        {
            _file.Sync();
            _refcounts.WriteBack();
        };
    }

    /// <inheritdoc/>
    public string Path => _file.Path;

    /// <inheritdoc/>
    public ImageFormat Format => ImageFormat.Qcow2;

    /// <inheritdoc/>
    public long VirtualSize => Volatile.Read(ref _size);

    /// <inheritdoc/>
    public bool IsReadOnly => _readOnly;

    /// <inheritdoc/>
    public int ClusterSize => _layout.ClusterSize;

    /// <inheritdoc/>
    public IBlockImage? Backing => _backing;

    /// <summary>2 (compat 0.10) or 3 (compat 1.1).</summary>
    public int Version => (int)_header.Version;

    /// <summary>Width of a refcount entry in bits.</summary>
    public int RefcountBits => _layout.RefcountBits;

    /// <summary>Extended L2 entries (32 subclusters per cluster).</summary>
    public bool ExtendedL2 => _layout.ExtendedL2;

    /// <summary>Compression type recorded in the header.</summary>
    public CompressionType CompressionType => _header.CompressionType;

    /// <summary>The lazy_refcounts compatible feature.</summary>
    public bool LazyRefcounts => _header.LazyRefcounts;

    /// <summary>The corrupt bit in the header, or corruption found by this process.</summary>
    public bool IsCorrupt => _header.Corrupt || _corrupt;

    /// <summary>The dirty bit as found when the image was opened (it is repaired on a read-write open).</summary>
    public bool IsDirty => _dirtyAtOpen;

    /// <summary>The backing file name as recorded in the header.</summary>
    public string? BackingFileName => _header.BackingFile;

    /// <summary>The backing format as recorded in the backing-format header extension.</summary>
    public ImageFormat? BackingFormat => ImageFormatNames.Parse(_header.BackingFormat);

    /// <summary>Internal snapshots in the image (preserved; not created or applied by this engine).</summary>
    public int SnapshotCount => (int)_header.NbSnapshots;

    internal Qcow2Layout Layout => _layout;

    /// <summary>L2 tables the cache holds at once.</summary>
    internal int L2CacheTables => _l2Cache.Slots;

    internal Qcow2Header Header => _header;

    /// <summary>The persistent-bitmap directory, or null when there is none (for info).</summary>
    internal Qcow2Bitmaps? ReadBitmaps() => Qcow2Bitmaps.Read(_file, _header);

    internal static Qcow2Image Open(string path, ImageOpenOptions options, Func<string, ImageFormat?, IBlockImage>? openBacking)
    {
        ImageFile file = ImageFile.Open(path, !options.ReadOnly, options.Direct);
        IDisposable? fileLock = null;
        IBlockImage? backing = null;
        try
        {
            fileLock = options.Lock ? ImageLock.Acquire(file, writable: !options.ReadOnly) : null;
            long length = file.Length;
            var first = new byte[(int)Math.Min(Math.Max(length, 0), 1 << 21)];
            file.Read(first, 0);
            Qcow2Header header = Qcow2Header.Parse(path, first, length);
            if (header.Corrupt && !options.ReadOnly)
            {
                throw new ImageException(ErrorKind.Corrupt, "image is marked corrupt and can only be opened read-only; repair it with 'lvstor image check -r all' or 'qemu-img check -r all'", path);
            }

            ulong[] l1 = ReadTable(file, (long)header.L1TableOffset, (int)header.L1Size);
            ulong[] refTable = ReadTable(file, (long)header.RefcountTableOffset, (int)(header.RefcountTableClusters * (long)header.ClusterSize / 8));
            if (header.BackingFile is not null && openBacking is not null)
            {
                ImageFormat? backingFormat = null;
                if (header.BackingFormat is { } name)
                {
                    backingFormat = ImageFormatNames.Parse(name)
                        ?? throw new ImageException(ErrorKind.UnsupportedFeature, $"backing file format '{name}' is not supported (only raw and qcow2)", path);
                }

                backing = openBacking(header.BackingFile, backingFormat);
            }

            var image = new Qcow2Image(file, fileLock, header, l1, refTable, options, backing);
            if (!options.ReadOnly)
            {
                image.PrepareForWriting();
            }

            return image;
        }
        catch
        {
            backing?.Dispose();
            fileLock?.Dispose();
            file.Dispose();
            throw;
        }
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        lock (_meta)
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
        }

        try
        {
            if (!_readOnly)
            {
                FlushCore(closing: true);
            }
        }
        finally
        {
            _lock?.Dispose();
            _file.Dispose();
            _backing?.Dispose();
            _cowBuffers.Dispose();
        }
    }

    private static ulong[] ReadTable(ImageFile file, long offset, int entries)
    {
        var table = new ulong[entries];
        if (entries == 0)
        {
            return table;
        }

        var bytes = new byte[entries * 8L];
        file.Read(bytes, offset);
        for (int i = 0; i < entries; i++)
        {
            table[i] = BinaryPrimitives.ReadUInt64BigEndian(bytes.AsSpan(i * 8));
        }

        return table;
    }

    /// <summary>
    /// A read-write open repairs a dirty image (lazy refcounts left the refcounts stale) and handles the
    /// autoclear bits as qcow2.txt asks of a program that does not maintain what they guard: persistent
    /// bitmaps are kept (their clusters stay referenced) but flagged in_use, which tells QEMU they may be
    /// stale; every other autoclear bit is cleared.
    /// </summary>
    private void PrepareForWriting()
    {
        if (_header.Dirty)
        {
            // Repair only what lazy refcounts leave behind (stale refcounts); metadata that is broken
            // in any other way is reported, and the image is not touched.
            ImageCheckResult found = Check(CheckRepair.None, out int structural);
            if (structural > 0)
            {
                _readOnly = true;
                _corrupt = true;
                throw new ImageCorruptException(Path, null, $"the image is dirty and its metadata is damaged beyond stale refcounts ({found.Messages.FirstOrDefault(m => !m.Contains("refcount=", StringComparison.Ordinal))}); open it read-only or repair it with 'qemu-img check -r all'");
            }

            Check(CheckRepair.All);
            lock (_meta)
            {
                _header = _header with { IncompatibleFeatures = _header.IncompatibleFeatures & ~Qcow2Header.IncompatDirty };
                WriteHeaderLocked();
            }
        }

        ulong autoclear = _header.AutoclearFeatures;
        if ((autoclear & Qcow2Header.AutoclearBitmaps) != 0 && !MarkBitmapsInUse())
        {
            autoclear &= ~Qcow2Header.AutoclearBitmaps;
        }

        autoclear &= Qcow2Header.AutoclearBitmaps;
        if (autoclear != _header.AutoclearFeatures)
        {
            lock (_meta)
            {
                _header = _header with { AutoclearFeatures = autoclear };
                WriteHeaderLocked();
            }
        }
    }

    /// <summary>Sets the in_use flag of every bitmap. False when the directory is unusable (then the autoclear bit goes).</summary>
    private bool MarkBitmapsInUse()
    {
        try
        {
            Qcow2Bitmaps.Read(_file, _header)?.MarkAllInUse(_file);
            return true;
        }
        catch (ImageException e) when (e.Kind == ErrorKind.InvalidFormat)
        {
            return false;
        }
    }

    /// <summary>Writes the header cluster and syncs. Caller holds <c>_meta</c>.</summary>
    private void WriteHeaderLocked()
    {
        var buffer = new byte[Math.Min(_layout.ClusterSize, 1 << 16)];
        if (!_header.TryWrite(buffer))
        {
            throw new ImageException(ErrorKind.InvalidArgument, "the header, its extensions and the backing file name do not fit in the first cluster", Path);
        }

        _file.Write(buffer, 0);
        _file.Sync();
    }

    private bool CommitRefcountTable(ulong offset, uint clusters)
    {
        _header = _header with { RefcountTableOffset = offset, RefcountTableClusters = clusters };
        WriteHeaderLocked();
        return true;
    }

    /// <summary>
    /// The image's metadata is inconsistent: stop writing it (in memory only: an image found corrupt is
    /// never written again, not even to set its corrupt bit) and report it.
    /// </summary>
    private void SignalCorruption(long? offset, string message)
    {
        _corrupt = true;
        _readOnly = true;
        ThrowHelper.Corrupt(Path, offset, message);
    }

    private void CheckRange(long offset, long length)
    {
        long size = VirtualSize;
        if (offset < 0 || length < 0 || offset > size - length)
        {
            ThrowHelper.OutOfBounds(Path, offset, length, size);
        }
    }

    private void CheckWritable()
    {
        if (_readOnly)
        {
            if (_corrupt)
            {
                ThrowHelper.Corrupt(Path, null, "the image was found corrupt earlier and is no longer written");
            }

            ThrowHelper.ReadOnly(Path);
        }
    }

    /// <summary>
    /// Refuses host offsets that would overwrite the header or the fixed tables (QEMU's
    /// qcow2_check_metadata_overlap, cheap checks): a hostile L2 entry must not turn a guest write into a
    /// metadata write.
    /// </summary>
    private void CheckDataOverlap(long host, long length)
    {
        long first = host & ~(long)(_layout.ClusterSize - 1);
        for (long cluster = first; cluster < host + length; cluster += _layout.ClusterSize)
        {
            if (IsMetadataCluster(cluster >> _layout.ClusterBits) || _refcounts.IsRefcountBlock(cluster))
            {
                SignalCorruption(host, $"data at 0x{host:x} would overwrite metadata (the header, a table, an L2 table or a refcount block) in cluster 0x{cluster:x}");
            }
        }
    }

    /// <summary>An L2 table about to be changed must not sit on the header, the L1 table or the refcount table.</summary>
    private void CheckMetadataOverlap(long offset, string what)
    {
        long cluster = _layout.ClusterSize;
        if (offset < cluster
            || Overlaps(offset, cluster, (long)_header.L1TableOffset, (long)_header.L1Size * 8)
            || Overlaps(offset, cluster, _refcounts.TableOffset, (long)_refcounts.TableClusters * cluster))
        {
            SignalCorruption(offset, $"{what} at 0x{offset:x} overlaps the header, the L1 table or the refcount table");
        }
    }

    /// <summary>The header, L1 table, refcount table, snapshot table or a cached L2 table occupies this cluster.</summary>
    private bool IsMetadataCluster(long cluster)
    {
        long offset = cluster << _layout.ClusterBits;
        int size = _layout.ClusterSize;
        return cluster == 0
            || Overlaps(offset, size, (long)_header.L1TableOffset, _layout.ClustersFor((long)_header.L1Size * 8) * size)
            || Overlaps(offset, size, _refcounts.TableOffset, (long)_refcounts.TableClusters * size)
            || (_header.NbSnapshots > 0 && Overlaps(offset, size, (long)_header.SnapshotsOffset, size))
            || _l2Cache.Contains(offset);
    }

    private static bool Overlaps(long a, long aLength, long b, long bLength) =>
        bLength > 0 && a < b + bLength && b < a + aLength;
}
