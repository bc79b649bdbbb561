using System.Globalization;

namespace LibvirtStorage.Images.Tests.Infrastructure;

/// <summary>
/// A set of creation options, expressible both as our <see cref="ImageCreateOptions"/> and as
/// qemu-img's <c>-o</c> string, so one matrix drives both directions of the interop tests.
/// </summary>
internal sealed record ImageVariant(
    string Name,
    ImageFormat Format = ImageFormat.Qcow2,
    int ClusterSize = 65536,
    int Version = 3,
    bool ExtendedL2 = false,
    int RefcountBits = 16,
    CompressionType Compression = CompressionType.Zlib,
    Preallocation Preallocation = Preallocation.Off,
    bool LazyRefcounts = false)
{
    public string FormatName => Format.ToName();

    /// <summary>A virtual size of a few MiB holding at least eight clusters (what <see cref="FillScripts"/> needs).</summary>
    public long DefaultSize => Math.Max(4L << 20, 8L * ClusterSize);

    public ImageCreateOptions ToCreateOptions(long? size, string? backingFile = null, ImageFormat? backingFormat = null) => new()
    {
        Format = Format,
        Size = size,
        ClusterSize = ClusterSize,
        Version = Version,
        ExtendedL2 = ExtendedL2,
        RefcountBits = RefcountBits,
        CompressionType = Compression,
        Preallocation = Preallocation,
        LazyRefcounts = LazyRefcounts,
        BackingFile = backingFile,
        BackingFormat = backingFormat,
    };

    /// <summary>The qemu-img create -o string.</summary>
    public string QemuOptions
    {
        get
        {
            string prealloc = Preallocation.ToString().ToLowerInvariant();
            if (Format == ImageFormat.Raw)
            {
                return $"preallocation={prealloc}";
            }

            var o = new List<string>
            {
                "cluster_size=" + ClusterSize.ToString(CultureInfo.InvariantCulture),
                "compat=" + (Version == 2 ? "0.10" : "1.1"),
                "preallocation=" + prealloc,
            };
            if (Version == 3)
            {
                o.Add("refcount_bits=" + RefcountBits.ToString(CultureInfo.InvariantCulture));
                o.Add("compression_type=" + (Compression == CompressionType.Zstd ? "zstd" : "zlib"));
                o.Add("extended_l2=" + (ExtendedL2 ? "on" : "off"));
                o.Add("lazy_refcounts=" + (LazyRefcounts ? "on" : "off"));
            }

            return string.Join(',', o);
        }
    }

    /// <summary>Smallest unit a write can allocate: a subcluster with extended L2, else a cluster.</summary>
    public int AllocationUnit => ExtendedL2 ? ClusterSize / 32 : ClusterSize;

    public override string ToString() => Name;

    /// <summary>The option matrix shared by the read and write interop suites (names are test case ids).</summary>
    public static IReadOnlyList<ImageVariant> Matrix { get; } = BuildMatrix();

    public static ImageVariant ByName(string name) =>
        Matrix.FirstOrDefault(v => v.Name == name) ?? throw new ArgumentException($"no variant {name}", nameof(name));

    private static List<ImageVariant> BuildMatrix()
    {
        var m = new List<ImageVariant> { new("raw", ImageFormat.Raw, ClusterSize: 4096) };
        foreach (int cs in new[] { 512, 4096, 65536, 2 << 20 })
        {
            foreach (int v in new[] { 2, 3 })
            {
                m.Add(new($"c{cs}-v{v}", ClusterSize: cs, Version: v));
            }
        }

        foreach (int cs in new[] { 16384, 65536, 2 << 20 })
        {
            m.Add(new($"c{cs}-extl2", ClusterSize: cs, ExtendedL2: true));
        }

        foreach (int bits in new[] { 1, 2, 4, 8, 32, 64 })
        {
            m.Add(new($"c4096-rc{bits}", ClusterSize: 4096, RefcountBits: bits));
        }

        foreach (Preallocation p in new[] { Preallocation.Metadata, Preallocation.Falloc, Preallocation.Full })
        {
            m.Add(new($"c65536-prealloc-{p.ToString().ToLowerInvariant()}", Preallocation: p));
        }

        m.Add(new("c65536-extl2-prealloc-metadata", ExtendedL2: true, Preallocation: Preallocation.Metadata));
        m.Add(new("c65536-zstd", Compression: CompressionType.Zstd));
        m.Add(new("c65536-lazy", LazyRefcounts: true));
        m.Add(new("c512-rc64", ClusterSize: 512, RefcountBits: 64));
        return m;
    }
}
