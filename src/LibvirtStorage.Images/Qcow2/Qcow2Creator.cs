using System.Buffers.Binary;
using System.Numerics;
using System.Text;
using LibvirtStorage.Images.Native;

namespace LibvirtStorage.Images.Qcow2;

/// <summary>
/// Creates qcow2 images: a bootstrap of header, refcount table and one refcount block (the layout
/// qemu-img writes), then the L1 table through an ordinary resize, then preallocation.
/// </summary>
internal static class Qcow2Creator
{
    public static void Create(string path, ImageCreateOptions options)
    {
        Validate(path, options);
        int clusterSize = options.ClusterSize;
        int clusterBits = BitOperations.Log2((uint)clusterSize);
        int refcountOrder = BitOperations.Log2((uint)options.RefcountBits);
        string? backingFormat = options.BackingFile is null
            ? null
            : (options.BackingFormat ?? ImageOpener.Probe(ImageOpener.ResolveBackingPath(path, options.BackingFile))).ToName();
        ulong incompatible = (options.ExtendedL2 ? Qcow2Header.IncompatExtendedL2 : 0)
            | (options.CompressionType == CompressionType.Zstd ? Qcow2Header.IncompatCompression : 0);
        var header = new Qcow2Header
        {
            Version = (uint)options.Version,
            ClusterBits = clusterBits,
            RefcountTableOffset = (ulong)clusterSize,
            RefcountTableClusters = 1,
            IncompatibleFeatures = incompatible,
            CompatibleFeatures = options.LazyRefcounts ? Qcow2Header.CompatLazyRefcounts : 0,
            RefcountOrder = refcountOrder,
            HeaderLength = (uint)(options.Version == 3 ? Qcow2Header.V3HeaderLength : Qcow2Header.V2HeaderLength),
            CompressionType = options.CompressionType,
            Extensions = options.Version == 3 ? [FeatureNameTable()] : [],
        }.WithBacking(options.BackingFile, backingFormat);

        var bootstrap = new byte[clusterSize * 3];
        if (!header.TryWrite(bootstrap.AsSpan(0, clusterSize)))
        {
            throw new ImageException(ErrorKind.InvalidArgument, "the backing file name does not fit in the header cluster; use larger clusters or a shorter name", path);
        }

        BinaryPrimitives.WriteUInt64BigEndian(bootstrap.AsSpan(clusterSize), (ulong)(2 * clusterSize));
        var refblock = new byte[clusterSize];
        for (int i = 0; i < 3; i++)
        {
            Qcow2Refcounts.WriteRefcount(refblock, i, 1, refcountOrder);
        }

        refblock.CopyTo(bootstrap, 2 * clusterSize);
        using (ImageFile file = ImageFile.Create(path, direct: false))
        {
            file.Write(bootstrap, 0);
            file.Sync();
        }

        using Qcow2Image image = Qcow2Image.Open(path, new ImageOpenOptions { Lock = true }, openBacking: null);
        image.Resize(options.Size ?? 0);
        if (options.Preallocation != Preallocation.Off)
        {
            image.Preallocate(options.Preallocation);
        }
    }

    private static void Validate(string path, ImageCreateOptions o)
    {
        string? problem = null;
        if (o.ClusterSize is < 512 or > 2 * 1024 * 1024 || !BitOperations.IsPow2(o.ClusterSize))
        {
            problem = $"cluster size {o.ClusterSize} must be a power of two between 512 and 2097152";
        }
        else if (o.Version is not 2 and not 3)
        {
            problem = $"version {o.Version} must be 2 (compat=0.10) or 3 (compat=1.1)";
        }
        else if (o.RefcountBits is < 1 or > 64 || !BitOperations.IsPow2(o.RefcountBits))
        {
            problem = $"refcount_bits {o.RefcountBits} must be a power of two between 1 and 64";
        }
        else if (o.Version == 2 && (o.RefcountBits != 16 || o.ExtendedL2 || o.LazyRefcounts || o.CompressionType != CompressionType.Zlib))
        {
            problem = "compat=0.10 supports only refcount_bits=16, no extended_l2, no lazy_refcounts and zlib compression";
        }
        else if (o.ExtendedL2 && o.ClusterSize < 16384)
        {
            problem = "extended_l2 needs a cluster size of at least 16384";
        }
        else if (o.BackingFile is not null && o.Preallocation != Preallocation.Off)
        {
            problem = "preallocation is not possible with a backing file";
        }

        if (problem is not null)
        {
            throw new ImageException(ErrorKind.InvalidArgument, problem, path);
        }
    }

    /// <summary>The feature name table extension qemu-img writes, so tools can name our feature bits.</summary>
    private static Qcow2HeaderExtension FeatureNameTable()
    {
        (byte Type, byte Bit, string Name)[] features =
        [
            (0, 0, "dirty bit"), (0, 1, "corrupt bit"), (0, 2, "external data file"),
            (0, 3, "compression type"), (0, 4, "extended L2 entries"),
            (1, 0, "lazy refcounts"), (2, 0, "bitmaps"), (2, 1, "raw external data"),
        ];
        var data = new byte[features.Length * 48];
        for (int i = 0; i < features.Length; i++)
        {
            data[i * 48] = features[i].Type;
            data[(i * 48) + 1] = features[i].Bit;
            Encoding.ASCII.GetBytes(features[i].Name).CopyTo(data, (i * 48) + 2);
        }

        return new Qcow2HeaderExtension(Qcow2Header.ExtFeatureNames, data);
    }
}
