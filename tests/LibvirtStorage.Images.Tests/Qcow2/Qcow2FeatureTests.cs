using System.Security.Cryptography;
using LibvirtStorage.Images.Qcow2;
using LibvirtStorage.Images.Tests.Infrastructure;
using Xunit;

namespace LibvirtStorage.Images.Tests.Qcow2;

/// <summary>qcow2 features that QEMU-made images bring along: snapshots, bitmaps, lazy refcounts, the corrupt bit.</summary>
public sealed class Qcow2FeatureTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [Fact]
    public void WritesAfterAnInternalSnapshotCopyTheSharedClustersAndKeepTheSnapshot()
    {
        string img = _dir.File("s.qcow2");
        QemuTools.RunChecked("qemu-img", "create", "-f", "qcow2", img, "16M");
        QemuTools.RunChecked("qemu-io", "-c", "write -P 1 0 2M", img);
        QemuTools.RunChecked("qemu-img", "snapshot", "-c", "snap1", img);

        using (IBlockImage image = ImageOpener.Open(img))
        {
            image.Write(65536 + 512, Filled(4096, 7));
            image.Write(8 << 20, Filled(4096, 8));
        }

        AssertClean(img);
        QemuTools.RunChecked("qemu-io", "-c", "read -P 1 65536 512", "-c", "read -P 7 66048 4096", "-c", "read -P 8 8M 4096", img);
        QemuTools.RunChecked("qemu-img", "snapshot", "-a", "snap1", img);
        QemuTools.RunChecked("qemu-io", "-c", "read -P 1 0 2M", "-c", "read -P 0 8M 4096", img);
        AssertClean(img);
    }

    [Fact]
    public void PersistentBitmapsSurviveAReadWriteOpenFlaggedInUse()
    {
        string img = _dir.File("b.qcow2");
        QemuTools.RunChecked("qemu-img", "create", "-f", "qcow2", img, "16M");
        QemuTools.RunChecked("qemu-img", "bitmap", "--add", img, "b0");

        using (IBlockImage image = ImageOpener.Open(img))
        {
            image.Write(0, Filled(65536, 3));
        }

        AssertClean(img);
        string info = QemuTools.RunChecked("qemu-img", "info", "--output=json", img);
        Assert.Contains("\"b0\"", info, StringComparison.Ordinal);
        Assert.Contains("in-use", info, StringComparison.Ordinal);
    }

    [Fact]
    public void ADirtyImageFromLazyRefcountsIsRepairedOnReadWriteOpen()
    {
        string img = _dir.File("l.qcow2");
        QemuTools.RunChecked("qemu-img", "create", "-f", "qcow2", "-o", "lazy_refcounts=on", img, "16M");
        QemuTools.Run("qemu-io", ["-c", "write -P 9 0 3M", "-c", "abort", img]);
        Assert.NotEqual(0, QemuTools.Run("qemu-img", ["check", img]).ExitCode);

        using (var image = (Qcow2Image)ImageOpener.Open(img))
        {
            Assert.True(image.IsDirty);
            image.Write(8 << 20, Filled(4096, 4));
        }

        AssertClean(img);
        QemuTools.RunChecked("qemu-io", "-c", "read -P 9 0 3M", "-c", "read -P 4 8M 4096", img);
        Assert.Contains("\"dirty-flag\": false", QemuTools.RunChecked("qemu-img", "info", "--output=json", img), StringComparison.Ordinal);
    }

    [Fact]
    public void AnImageMarkedCorruptOpensReadOnlyOnlyAndIsNeverWritten()
    {
        string img = _dir.File("c.qcow2");
        QemuTools.RunChecked("qemu-img", "create", "-f", "qcow2", img, "16M");
        QemuTools.RunChecked("qemu-io", "-c", "write -P 5 0 64k", img);
        using (var f = File.Open(img, FileMode.Open))
        {
            f.Position = 72 + 7; // incompatible features, lowest byte
            f.WriteByte(2);       // corrupt bit
        }

        byte[] before = SHA256.HashData(File.ReadAllBytes(img));

        var e = Assert.ThrowsAny<ImageException>(() => ImageOpener.Open(img));
        Assert.Equal(ErrorKind.Corrupt, e.Kind);
        using (IBlockImage image = ImageOpener.Open(img, new ImageOpenOptions { ReadOnly = true }))
        {
            var buffer = new byte[65536];
            image.Read(0, buffer);
            Assert.All(buffer, b => Assert.Equal(5, b));
            Assert.True(((Qcow2Image)image).IsCorrupt);
        }

        Assert.Equal(before, SHA256.HashData(File.ReadAllBytes(img)));
    }

    [Theory]
    [InlineData(65536, false, false)]
    [InlineData(65536, true, true)]
    [InlineData(4096, false, true)]
    [InlineData(512, false, false)]
    public void ConcurrentWritersAndReadersAgreeWithTheModel(int clusterSize, bool extendedL2, bool withBacking)
    {
        const long Size = 8 << 20;
        const int Slot = 4096;
        var model = new byte[Size];
        string? backing = null;
        if (withBacking)
        {
            backing = _dir.File("base.raw");
            new Random(7).NextBytes(model);
            File.WriteAllBytes(backing, model);
        }

        string img = _dir.File("t.qcow2");
        ImageOpener.Create(img, new ImageCreateOptions { Size = Size, ClusterSize = clusterSize, ExtendedL2 = extendedL2, BackingFile = backing, BackingFormat = withBacking ? ImageFormat.Raw : null });
        int mismatches = 0;
        using (IBlockImage image = ImageOpener.Open(img, new ImageOpenOptions { L2CacheBytes = clusterSize * 2L }))
        {
            const int Threads = 6;
            long slots = Size / Slot;
            var workers = new Thread[Threads];
            for (int t = 0; t < Threads; t++)
            {
                int id = t;
                workers[t] = new Thread(() =>
                {
                    // each thread owns every Threads-th 4 KiB slot: contents never conflict, clusters are shared
                    var random = new Random(id);
                    var buffer = new byte[Slot];
                    var readBack = new byte[Slot];
                    for (int i = 0; i < 400; i++)
                    {
                        long slot = (random.NextInt64(slots / Threads) * Threads) + id;
                        if (random.Next(4) == 0)
                        {
                            image.Read(slot * Slot, readBack);
                            if (!readBack.AsSpan().SequenceEqual(model.AsSpan((int)(slot * Slot), Slot)))
                            {
                                Interlocked.Increment(ref mismatches);
                            }
                        }
                        else
                        {
                            random.NextBytes(buffer);
                            image.Write(slot * Slot, buffer);
                            buffer.CopyTo(model, slot * Slot);
                        }

                        if (i % 100 == 0)
                        {
                            image.Flush();
                        }
                    }
                });
                workers[t].Start();
            }

            foreach (Thread w in workers)
            {
                w.Join();
            }
        }

        Assert.Equal(0, mismatches);
        AssertClean(img);
        string raw = _dir.File("model.raw");
        File.WriteAllBytes(raw, model);
        QemuTools.RunChecked("qemu-img", "compare", "-F", "raw", img, raw);
    }

    [Theory]
    [InlineData("metadata")]
    [InlineData("falloc")]
    [InlineData("full")]
    public void PreallocatedImagesAreFullyAllocatedAndClean(string mode)
    {
        string img = _dir.File("p.qcow2");
        ImageOpener.Create(img, new ImageCreateOptions { Size = 4 << 20, ClusterSize = 65536, Preallocation = Enum.Parse<Preallocation>(mode, ignoreCase: true) });

        AssertClean(img);
        string map = QemuTools.RunChecked("qemu-img", "map", "--output=json", img);
        Assert.DoesNotContain("\"data\": false", map.Replace("\"zero\": true, \"data\": false", string.Empty, StringComparison.Ordinal), StringComparison.Ordinal);
        Assert.Contains("\"offset\":", map, StringComparison.Ordinal);
        QemuTools.RunChecked("qemu-io", "-c", "read -P 0 0 4M", img);
    }

    [Theory]
    [InlineData(512, 16)]
    [InlineData(512, 64)]
    [InlineData(1024, 1)]
    public void RunsSpanningMissingRefcountBlocksAreAllocated(int clusterSize, int refcountBits)
    {
        // a 1 GiB disk with tiny clusters has an L1 table spanning many refcount blocks, and a 1 MiB
        // write is a run of whole clusters longer than one refcount block covers
        string img = _dir.File("r.qcow2");
        ImageOpener.Create(img, new ImageCreateOptions { Size = 1L << 30, ClusterSize = clusterSize, RefcountBits = refcountBits });
        using (IBlockImage image = ImageOpener.Open(img))
        {
            image.Write(3 << 20, Filled(1 << 20, 6));
            image.Write(512 << 20, Filled(1 << 20, 7));
        }

        AssertClean(img);
        QemuTools.RunChecked("qemu-io", "-c", "read -P 6 3M 1M", "-c", "read -P 7 512M 1M", "-c", "read -P 0 4M 1M", img);
    }

    [Fact]
    public void SmallClustersWithABackingFileStillFitTheHeader()
    {
        string baseImage = _dir.File("base.raw");
        File.WriteAllBytes(baseImage, Filled(1 << 20, 2));
        string img = _dir.File("o.qcow2");

        ImageOpener.Create(img, new ImageCreateOptions { ClusterSize = 512, BackingFile = "base.raw", BackingFormat = ImageFormat.Raw });
        using (IBlockImage image = ImageOpener.Open(img))
        {
            image.Write(1000, Filled(3000, 9));
        }

        AssertClean(img);
        QemuTools.RunChecked("qemu-io", "-c", "read -P 2 0 1000", "-c", "read -P 9 1000 3000", "-c", "read -P 2 4000 1044576", img);
    }

    [Fact]
    public void TheDefaultL2CacheCoversA64GiBImageAndHonoursAConfiguredSize()
    {
        string img = _dir.File("big.qcow2");
        ImageOpener.Create(img, new ImageCreateOptions { Size = 64L << 30, ClusterSize = 65536 });

        using (var image = (Qcow2Image)ImageOpener.Open(img, new ImageOpenOptions { ReadOnly = true }))
        {
            // 64 GiB / 64 KiB clusters / 8192 entries per table = 128 L2 tables
            Assert.True(image.L2CacheTables >= 128, $"{image.L2CacheTables} tables");
        }

        using (var image = (Qcow2Image)ImageOpener.Open(img, new ImageOpenOptions { ReadOnly = true, L2CacheBytes = 4 * 65536 }))
        {
            Assert.Equal(4, image.L2CacheTables);
        }
    }

    [Fact]
    public void AfterCorruptionIsFoundFlushFailsInsteadOfClaimingDurability()
    {
        string img = _dir.File("h.qcow2");
        QemuTools.RunChecked("qemu-img", "create", "-f", "qcow2", img, "16M");
        QemuTools.RunChecked("qemu-io", "-c", "write -P 1 0 64k", img);
        byte[] bytes = File.ReadAllBytes(img);
        long l1 = (long)System.Buffers.Binary.BinaryPrimitives.ReadUInt64BigEndian(bytes.AsSpan(40));
        long l2 = (long)(System.Buffers.Binary.BinaryPrimitives.ReadUInt64BigEndian(bytes.AsSpan((int)l1)) & 0x00fffffffffffe00UL);
        // the L2 entry of guest cluster 0 points at the L2 table itself: a guest write there would overwrite it
        System.Buffers.Binary.BinaryPrimitives.WriteUInt64BigEndian(bytes.AsSpan((int)l2), (1UL << 63) | (ulong)l2);
        File.WriteAllBytes(img, bytes);

        using (IBlockImage image = ImageOpener.Open(img))
        {
            image.Write(8 << 20, Filled(4096, 2)); // an ordinary allocation first
            var e = Assert.Throws<ImageCorruptException>(() => image.Write(0, Filled(4096, 3)));
            Assert.Equal(ErrorKind.Corrupt, e.Kind);
            Assert.True(image.IsReadOnly);
            Assert.Throws<ImageCorruptException>(image.Flush);
        }

        // no metadata was written after the corruption: header, L1 and the L2 table are as they were
        byte[] after = File.ReadAllBytes(img);
        Assert.Equal(bytes.AsSpan(0, 65536).ToArray(), after.AsSpan(0, 65536).ToArray());
        Assert.Equal(bytes.AsSpan((int)l1, 8).ToArray(), after.AsSpan((int)l1, 8).ToArray());
        Assert.Equal(bytes.AsSpan((int)l2, 65536).ToArray(), after.AsSpan((int)l2, 65536).ToArray());
    }

    private static byte[] Filled(int length, byte value)
    {
        var data = new byte[length];
        Array.Fill(data, value);
        return data;
    }

    private static void AssertClean(string img)
    {
        ToolResult check = QemuTools.Run("qemu-img", ["check", img]);
        Assert.True(check.ExitCode == 0, check.AllOutput);
    }
}
