using System.Text.Json;
using LibvirtStorage.Images.Tests.Infrastructure;
using Xunit;

namespace LibvirtStorage.Images.Tests.Interop;

/// <summary>
/// Images made and written by qemu-img/qemu-io read identically through our engine and through
/// <c>qemu-img convert -O raw</c>, byte for byte, across the option matrix, compression and chains.
/// </summary>
public sealed class Qcow2ReadMatrixTests
{
    public static TheoryData<string> Variants => new(ImageVariant.Matrix.Select(v => v.Name));

    /// <summary>qcow2 variants without preallocation (for those QEMU's map reports file-level extents, not qcow2 mappings).</summary>
    public static TheoryData<string> MappedVariants => new(
        ImageVariant.Matrix.Where(v => v.Format == ImageFormat.Qcow2 && v.Preallocation == Preallocation.Off).Select(v => v.Name));

    public static TheoryData<string, int, int, bool> Compressed => new()
    {
        { "zlib", 4096, 3, false },
        { "zlib", 65536, 3, false },
        { "zlib", 65536, 2, false },
        { "zstd", 4096, 3, false },
        { "zstd", 65536, 3, false },
        { "zstd", 65536, 3, true },
        { "zlib", 2 << 20, 3, false },
    };

    /// <summary>base format, base options, mid options, top options (qcow2 -o strings).</summary>
    public static TheoryData<string, string, string, string> Chains => new()
    {
        { "raw", "", "cluster_size=65536", "cluster_size=65536" },
        { "raw", "", "cluster_size=4096,compat=0.10", "cluster_size=65536,extended_l2=on" },
        { "qcow2", "cluster_size=65536", "cluster_size=65536", "cluster_size=65536" },
        { "qcow2", "cluster_size=512,compat=0.10", "cluster_size=2097152", "cluster_size=16384,extended_l2=on" },
        { "qcow2", "cluster_size=65536,extended_l2=on", "cluster_size=4096,refcount_bits=1", "cluster_size=65536,compat=0.10" },
    };

    [Theory]
    [MemberData(nameof(Variants))]
    public void QemuWrittenImageReadsIdentically(string variantName)
    {
        ImageVariant v = ImageVariant.ByName(variantName);
        using var dir = new TempDir();
        (string img, DiskModel model) = MakeQemuImage(v, dir);
        byte[] expected = Qemu.ReadAll(img, v.FormatName, dir.Path);
        model.AssertMatches(expected, 0, "harness: QEMU's view against the model");

        AssertEngineReads(img, expected);
    }

    /// <summary>
    /// The engine's block status of a qemu-written image (no backing) matches <c>qemu-img map</c>:
    /// the same ranges allocated, the same ranges backed by data, at the same host offsets. (Whether a
    /// data range also reads as zero is left out: QEMU refines that from holes in the file.)
    /// </summary>
    [Theory]
    [MemberData(nameof(MappedVariants))]
    public void BlockStatusMatchesQemuImgMap(string variantName)
    {
        ImageVariant v = ImageVariant.ByName(variantName);
        using var dir = new TempDir();
        (string img, _) = MakeQemuImage(v, dir);
        using JsonDocument map = JsonDocument.Parse(Qemu.Img("map", "--output=json", "-f", "qcow2", img).StandardOutput);
        using IBlockImage image = ImageOpener.Open(img, new ImageOpenOptions { ReadOnly = true });
        foreach (JsonElement e in map.RootElement.EnumerateArray())
        {
            long start = e.GetProperty("start").GetInt64();
            long end = start + e.GetProperty("length").GetInt64();
            bool present = e.GetProperty("present").GetBoolean();
            bool data = e.GetProperty("data").GetBoolean();
            long? offset = e.TryGetProperty("offset", out JsonElement o) ? o.GetInt64() : null;
            for (long pos = start; pos < end;)
            {
                BlockStatus s = image.GetBlockStatus(pos, end - pos);
                string where = $"{variantName} at 0x{pos:x} (qemu-img map: {e})";
                Assert.True(s.Length > 0, $"{where}: empty status");
                Assert.Equal(present, s.Allocated);
                Assert.True(data == s.Data, $"{where}: engine says data={s.Data}");
                if (data)
                {
                    Assert.True(offset + (pos - start) == s.HostOffset, $"{where}: engine host offset {s.HostOffset}");
                }

                pos += Math.Min(s.Length, end - pos);
            }
        }
    }

    [Theory]
    [MemberData(nameof(Variants))]
    public void FreshImageReadsAsZeroes(string variantName)
    {
        ImageVariant v = ImageVariant.ByName(variantName);
        using var dir = new TempDir();
        string img = dir.File("img." + v.FormatName);
        Qemu.Create(img, v.FormatName, v.DefaultSize + 4096 + 512, v.QemuOptions);

        using IBlockImage image = ImageOpener.Open(img, new ImageOpenOptions { ReadOnly = true });
        Assert.Equal(v.DefaultSize + 4096 + 512, image.VirtualSize);
        byte[] all = ImageAssert.ReadAll(image);
        Assert.True(all.AsSpan().IndexOfAnyExcept((byte)0) < 0, "a fresh image must read as zeroes");
    }

    [Theory]
    [MemberData(nameof(Compressed))]
    public void CompressedImageReadsIdentically(string compression, int clusterSize, int version, bool extendedL2)
    {
        using var dir = new TempDir();
        long size = Math.Max(4L << 20, 8L * clusterSize);
        string source = dir.File("source.raw");
        var model = new DiskModel(size);
        for (long pos = 0; pos < size; pos += clusterSize)
        {
            long k = pos / clusterSize;
            if (k % 3 == 0)
            {
                // Incompressible pattern (QEMU stores such clusters uncompressed), partly.
                model.Write(pos, Pattern.Make((uint)k, pos, clusterSize / 2));
            }
            else if (k % 3 == 1)
            {
                byte[] b = new byte[clusterSize];
                b.AsSpan().Fill((byte)(k * 7));
                model.Write(pos, b);
            }
        }

        model.SaveRaw(source);
        string img = dir.File("img.qcow2");
        string options = $"compression_type={compression},cluster_size={clusterSize},compat={(version == 2 ? "0.10" : "1.1")}" +
            (extendedL2 ? ",extended_l2=on" : "");
        Qemu.Img("convert", "-c", "-f", "raw", "-O", "qcow2", "-o", options, source, img);

        // A partial write onto a compressed cluster makes QEMU decompress, merge and rewrite it.
        var cow = new WriteOp(clusterSize + 100, 300, 9, Constant: true);
        Qemu.Io(img, "qcow2", [cow.ToQemuIo()!]);
        cow.Apply(model);

        byte[] expected = Qemu.ReadAll(img, "qcow2", dir.Path);
        model.AssertMatches(expected, 0, "harness: QEMU's view against the model");
        AssertEngineReads(img, expected);
    }

    [Theory]
    [MemberData(nameof(Chains))]
    public void ChainOfDepthThreeReadsIdentically(string baseFormat, string baseOptions, string midOptions, string topOptions)
    {
        using var dir = new TempDir();
        const long size = 4L << 20;
        string basePath = dir.File("base." + baseFormat);
        string mid = dir.File("mid.qcow2");
        string top = dir.File("top.qcow2");

        Qemu.Create(basePath, baseFormat, size, baseOptions);
        Qemu.Io(basePath, baseFormat, FillScripts.ToQemuIo(FillScripts.Standard(65536, 65536, size, seed: 1)[..5]));
        Qemu.Create(mid, "qcow2", -1, midOptions, backing: Path.GetFileName(basePath), backingFormat: baseFormat);
        Qemu.Io(mid, "qcow2",
        [
            "write -P 0x21 65536 4096",
            "write -P 0x22 1000 100",
            "write -z 2097152 65536",
            "discard 0 65536",
            "write -P 0x23 4190208 4096",
        ]);
        Qemu.Create(top, "qcow2", -1, topOptions, backing: "mid.qcow2", backingFormat: "qcow2");
        Qemu.Io(top, "qcow2",
        [
            "write -P 0x31 65600 512",
            "write -z 2162688 4096",
            "write -z -u 196608 65536",
            "write -P 0x32 3000000 70000",
        ]);

        byte[] expected = Qemu.ReadAll(top, "qcow2", dir.Path);
        AssertEngineReads(top, expected);

        // Each layer of the chain, read on its own with its backing, must agree too.
        AssertEngineReads(mid, Qemu.ReadAll(mid, "qcow2", dir.Path));
    }

    [Fact]
    public void OverlayLargerThanItsBackingReadsZeroesPastTheBackingEnd()
    {
        using var dir = new TempDir();
        string basePath = dir.File("base.qcow2");
        string top = dir.File("top.qcow2");
        Qemu.Create(basePath, "qcow2", 1 << 20, "cluster_size=65536");
        Qemu.Io(basePath, "qcow2", ["write -P 0x41 0 1048576"]);
        Qemu.Create(top, "qcow2", 3 << 20, "cluster_size=4096", backing: "base.qcow2", backingFormat: "qcow2");
        Qemu.Io(top, "qcow2", ["write -P 0x42 1044480 8192"]);

        AssertEngineReads(top, Qemu.ReadAll(top, "qcow2", dir.Path));
    }

    /// <summary>An image made by qemu-img and filled by qemu-io with <see cref="FillScripts.Standard"/>, with its model.</summary>
    private static (string Path, DiskModel Model) MakeQemuImage(ImageVariant v, TempDir dir)
    {
        string img = dir.File("img." + v.FormatName);
        long size = v.DefaultSize;
        Qemu.Create(img, v.FormatName, size, v.QemuOptions);
        List<DiskOp> ops = FillScripts.Standard(v.ClusterSize, v.AllocationUnit, size, seed: 1);
        Qemu.Io(img, v.FormatName, FillScripts.ToQemuIo(ops));
        var model = new DiskModel(size);
        ops.ForEach(o => o.Apply(model));
        return (img, model);
    }

    /// <summary>The engine's whole-disk read equals QEMU's, and so do reads at odd offsets and lengths.</summary>
    private static void AssertEngineReads(string path, byte[] expected)
    {
        using IBlockImage image = ImageOpener.Open(path, new ImageOpenOptions { ReadOnly = true });
        Assert.Equal(expected.LongLength, image.VirtualSize);
        ImageAssert.BytesEqual(expected, ImageAssert.ReadAll(image), $"engine read of {Path.GetFileName(path)}");

        var rng = new Random(expected.Length);
        for (int i = 0; i < 64; i++)
        {
            int len = rng.Next(1, 200_000);
            long off = rng.NextInt64(0, expected.Length - Math.Min(len, expected.Length) + 1);
            len = (int)Math.Min(len, expected.Length - off);
            byte[] part = new byte[len];
            image.Read(off, part);
            ImageAssert.BytesEqual(expected.AsSpan((int)off, len), part, $"engine read of {Path.GetFileName(path)} at {off}+{len}");
        }
    }
}
