using System.Text.Json;
using LibvirtStorage.Images.Qcow2;
using LibvirtStorage.Images.Tests.Infrastructure;
using Xunit;

namespace LibvirtStorage.Images.Tests.Interop;

/// <summary>
/// Images created and written by our engine pass <c>qemu-img check</c> with no errors and no leaks,
/// and QEMU reads exactly what the model says was written.
/// </summary>
public sealed partial class Qcow2WriteInteropTests
{
    public static TheoryData<string> Variants => new(ImageVariant.Matrix.Select(v => v.Name));

    public static TheoryData<string> CowVariants => new(
        "c512-v2", "c4096-v3", "c65536-v3", "c65536-v2", "c2097152-v3", "c16384-extl2", "c65536-extl2", "c4096-rc1");

    [Theory]
    [MemberData(nameof(Variants))]
    public void EngineCreatedImageHasTheRequestedOptions(string variantName)
    {
        ImageVariant v = ImageVariant.ByName(variantName);
        using var dir = new TempDir();
        string img = dir.File("img." + v.FormatName);
        ImageOpener.Create(img, v.ToCreateOptions(v.DefaultSize));

        using JsonDocument info = Qemu.Info(img);
        JsonElement root = info.RootElement;
        Assert.Equal(v.FormatName, root.GetProperty("format").GetString());
        Assert.Equal(v.DefaultSize, root.GetProperty("virtual-size").GetInt64());
        if (v.Format == ImageFormat.Qcow2)
        {
            Assert.Equal(v.ClusterSize, root.GetProperty("cluster-size").GetInt32());
            JsonElement data = root.GetProperty("format-specific").GetProperty("data");
            Assert.Equal(v.Version == 2 ? "0.10" : "1.1", data.GetProperty("compat").GetString());
            Assert.Equal(v.RefcountBits, data.GetProperty("refcount-bits").GetInt32());
            if (v.Version == 3)
            {
                Assert.Equal(v.ExtendedL2, data.GetProperty("extended-l2").GetBoolean());
                Assert.Equal(v.Compression == CompressionType.Zstd ? "zstd" : "zlib", data.GetProperty("compression-type").GetString());
                Assert.Equal(v.LazyRefcounts, data.GetProperty("lazy-refcounts").GetBoolean());
            }

            ImageAssert.QemuCheckClean(img);
        }

        if (v.Preallocation is Preallocation.Falloc or Preallocation.Full)
        {
            Assert.True(root.GetProperty("actual-size").GetInt64() >= v.DefaultSize, $"{v.Preallocation} must reserve the data area");
        }
    }

    [Theory]
    [MemberData(nameof(Variants))]
    public void EngineWrittenImagePassesCheckAndMatchesModel(string variantName)
    {
        ImageVariant v = ImageVariant.ByName(variantName);
        using var dir = new TempDir();
        string img = dir.File("img." + v.FormatName);
        long size = v.DefaultSize;
        ImageOpener.Create(img, v.ToCreateOptions(size));

        var model = new DiskModel(size);
        using (var s = new EngineSession(img, model))
        {
            s.ApplyAll(FillScripts.Standard(v.ClusterSize, v.AllocationUnit, size, seed: 3, constant: false));
            s.Apply(new WriteOp(4L * v.ClusterSize, v.ClusterSize, 77, Constant: true));
            s.Apply(new WriteOp(size - v.ClusterSize - 4096, 4096, 78, Constant: true));
            s.Apply(new FlushOp());
        }

        VerifyEverywhere(img, v.FormatName, model, dir);
    }

    [Theory]
    [MemberData(nameof(CowVariants))]
    public void PartialClusterWritesOverABackingFileCopyOnWrite(string variantName)
    {
        ImageVariant v = ImageVariant.ByName(variantName);
        using var dir = new TempDir();
        long size = v.DefaultSize;
        var model = new DiskModel(size);
        string basePath = MakePatternBase(dir, model, size);

        string top = dir.File("top.qcow2");
        ImageOpener.Create(top, v.ToCreateOptions(null, "base.qcow2", ImageFormat.Qcow2));
        long cs = v.ClusterSize;
        long u = v.AllocationUnit;
        using (var s = new EngineSession(top, model))
        {
            Assert.NotNull(s.Image.Backing);
            s.Apply(new WriteOp(cs + 1, 10, 101));
            s.Apply(new WriteOp((3 * cs) - 5, 10, 102));
            s.Apply(new WriteOp((5 * cs) + u + 3, (int)u, 103));
            s.Apply(new WriteOp((7 * cs) + 512, 512, 104, Constant: true));
            s.Apply(new ZeroOp((2 * cs) + 100, 200, Unmap: false));
            s.Apply(new ZeroOp(6 * cs, cs, Unmap: true));
            s.Apply(new WriteOp(size - 3, 3, 105));
        }

        VerifyEverywhere(top, "qcow2", model, dir);
        ImageAssert.QemuCheckClean(basePath, "(the backing file must be untouched)");
    }

    [Fact]
    public void UnalignedWritesAtRandomOffsetsMatchModel()
    {
        using var dir = new TempDir();
        const long size = 3L << 20;
        string img = dir.File("img.qcow2");
        ImageOpener.Create(img, new ImageCreateOptions { Size = size, ClusterSize = 4096 });
        var model = new DiskModel(size);
        var rng = new Random(12345);
        using (var s = new EngineSession(img, model))
        {
            for (int i = 0; i < 300; i++)
            {
                int len = rng.Next(1, 20_000);
                long off = rng.NextInt64(0, size - len);
                s.Apply(new WriteOp(off, len, (uint)i));
            }
        }

        VerifyEverywhere(img, "qcow2", model, dir);
    }

    [Theory]
    [InlineData(false, false)]
    [InlineData(true, false)]
    [InlineData(false, true)]
    [InlineData(true, true)]
    public void WriteZeroesReadsZeroEvenOverBackingData(bool unmap, bool withBacking)
    {
        using var dir = new TempDir();
        var model = new DiskModel(4L << 20);
        string img = CreateTop(dir, model, 65536, withBacking);

        using (var s = new EngineSession(img, model))
        {
            s.Apply(new WriteOp(0, 1 << 20, 7));
            s.Apply(new ZeroOp(65536, 65536, unmap));
            s.Apply(new ZeroOp(200_000, 10_000, unmap));
            s.Apply(new ZeroOp(1 << 20, 1 << 20, unmap));
            s.Apply(new ZeroOp((3 << 20) + 512, 3 * 65536, unmap));
            s.Apply(new WriteOp(65536 + 4096, 4096, 8));
        }

        VerifyEverywhere(img, "qcow2", model, dir);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void DiscardLeavesNoLeaksAndDefinedDataIntact(bool withBacking)
    {
        using var dir = new TempDir();
        var model = new DiskModel(4L << 20);
        string img = CreateTop(dir, model, 4096, withBacking);

        using (var s = new EngineSession(img, model))
        {
            s.Apply(new WriteOp(0, 2 << 20, 9));
            s.Apply(new DiscardOp(4096, 8192));
            s.Apply(new DiscardOp(100_000, 50_000));
            s.Apply(new DiscardOp(1 << 20, 1 << 20));
            s.Apply(new WriteOp((1 << 20) + 4096, 4096, 10));
            s.Apply(new FlushOp());
        }

        VerifyEverywhere(img, "qcow2", model, dir);
    }

    [Fact]
    public void CompressedClustersWrittenByEngineReadBackInQemu()
    {
        foreach (CompressionType type in new[] { CompressionType.Zlib, CompressionType.Zstd })
        {
            using var dir = new TempDir();
            const int cs = 65536;
            const long size = 16L * cs;
            string img = dir.File("img.qcow2");
            ImageOpener.Create(img, new ImageCreateOptions { Size = size, ClusterSize = cs, CompressionType = type });
            var model = new DiskModel(size);
            using (IBlockImage image = ImageOpener.Open(img))
            {
                var q = (Qcow2Image)image;
                for (int k = 0; k < 8; k++)
                {
                    byte[] data = new byte[cs];
                    data.AsSpan(0, cs / 2).Fill((byte)(k + 1));
                    Pattern.Fill(data.AsSpan(cs - 256), (uint)k, ((long)k * cs) + cs - 256);
                    q.WriteCompressed((long)k * cs, data);
                    model.Write((long)k * cs, data);
                }

                var partial = new WriteOp((2L * cs) + 1000, 3000, 55);
                partial.Apply(image);
                partial.Apply(model);
            }

            VerifyEverywhere(img, "qcow2", model, dir);
        }
    }

    /// <summary>top.qcow2 of the model's size, over a pattern-filled base.qcow2 when <paramref name="withBacking"/>.</summary>
    private static string CreateTop(TempDir dir, DiskModel model, int clusterSize, bool withBacking)
    {
        string img = dir.File("top.qcow2");
        if (withBacking)
        {
            MakePatternBase(dir, model, model.Size);
            ImageOpener.Create(img, new ImageCreateOptions { ClusterSize = clusterSize, BackingFile = "base.qcow2", BackingFormat = ImageFormat.Qcow2 });
        }
        else
        {
            ImageOpener.Create(img, new ImageCreateOptions { Size = model.Size, ClusterSize = clusterSize });
        }

        return img;
    }

    /// <summary>A qcow2 base (made by qemu-img) holding the pattern stream over its whole size; the model gets the same.</summary>
    private static string MakePatternBase(TempDir dir, DiskModel model, long size)
    {
        string raw = dir.File("base-src.raw");
        model.Write(0, Pattern.Make(4242, 0, (int)size));
        model.SaveRaw(raw);
        string basePath = dir.File("base.qcow2");
        Qemu.Img("convert", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=65536", raw, basePath);
        File.Delete(raw);
        return basePath;
    }

    /// <summary>qemu-img check is clean, QEMU's view and our engine's view both equal the model.</summary>
    private static void VerifyEverywhere(string img, string format, DiskModel model, TempDir dir)
    {
        if (format == "qcow2")
        {
            ImageAssert.QemuCheckClean(img);
        }

        ImageAssert.QemuMatchesModel(img, format, model, dir.Path);
        ImageAssert.EngineMatchesModel(img, model);
    }
}
