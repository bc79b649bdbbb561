using System.Text.Json;
using LibvirtStorage.Images.Tests.Infrastructure;
using Xunit;

namespace LibvirtStorage.Images.Tests.Interop;

/// <summary>Resize, reopen, refcount growth, cache eviction and concurrent allocation.</summary>
public sealed partial class Qcow2WriteInteropTests
{
    [Theory]
    [InlineData(65536)]
    [InlineData(512)]
    public void ResizeGrowReadsZeroesInTheNewTail(int clusterSize)
    {
        using var dir = new TempDir();
        string img = dir.File("img.qcow2");
        long size = 1L << 20;
        long grown = clusterSize == 512 ? 64L << 20 : (3L << 20) + 512;
        ImageOpener.Create(img, new ImageCreateOptions { Size = size, ClusterSize = clusterSize });
        var model = new DiskModel(size);
        using (var s = new EngineSession(img, model))
        {
            s.Apply(new WriteOp(size - 5000, 5000, 1));
            s.Apply(new ResizeOp(grown));
            Assert.Equal(grown, s.Image.VirtualSize);
            s.Apply(new WriteOp(grown - 700, 700, 2));
            s.Apply(new WriteOp(size + 100, 100, 3));
            s.Apply(new ReopenOp());
            Assert.Equal(grown, s.Image.VirtualSize);
        }

        Assert.Equal(grown, QemuVirtualSize(img));
        VerifyEverywhere(img, "qcow2", model, dir);
    }

    [Fact]
    public void ResizeShrinksAnUnusedTail()
    {
        using var dir = new TempDir();
        string img = dir.File("img.qcow2");
        ImageOpener.Create(img, new ImageCreateOptions { Size = 4L << 20, ClusterSize = 65536 });
        var model = new DiskModel(4L << 20);
        using (var s = new EngineSession(img, model))
        {
            s.Apply(new WriteOp(0, 100_000, 1));
            s.Apply(new ResizeOp(2L << 20));
            Assert.Equal(2L << 20, s.Image.VirtualSize);
        }

        Assert.Equal(2L << 20, QemuVirtualSize(img));
        VerifyEverywhere(img, "qcow2", model, dir);
    }

    [Fact]
    public void ResizeRefusesToShrinkATailHoldingData()
    {
        using var dir = new TempDir();
        string img = dir.File("img.qcow2");
        const long size = 4L << 20;
        ImageOpener.Create(img, new ImageCreateOptions { Size = size, ClusterSize = 65536 });
        var model = new DiskModel(size);
        using (var s = new EngineSession(img, model))
        {
            s.Apply(new WriteOp(size - 70_000, 1000, 1));
            ImageException e = Assert.ThrowsAny<ImageException>(() => s.Image.Resize(2L << 20));
            Assert.Equal(ErrorKind.InvalidArgument, e.Kind);
            Assert.Equal(size, s.Image.VirtualSize);
        }

        Assert.Equal(size, QemuVirtualSize(img));
        VerifyEverywhere(img, "qcow2", model, dir);
    }

    [Theory]
    [InlineData(4096, 3)]
    [InlineData(65536, 2)]
    public void FlushThenReopenKeepsEveryWrite(int clusterSize, int version)
    {
        using var dir = new TempDir();
        string img = dir.File("img.qcow2");
        const long size = 4L << 20;
        ImageOpener.Create(img, new ImageCreateOptions { Size = size, ClusterSize = clusterSize, Version = version });
        var model = new DiskModel(size);
        using (var s = new EngineSession(img, model))
        {
            for (int round = 0; round < 3; round++)
            {
                s.Apply(new WriteOp((round * 1_000_000L) + 333, 150_000, (uint)round));
                s.Apply(new ZeroOp((round * 1_000_000L) + 40_000, 9000, Unmap: round % 2 == 0));
                s.Apply(new FlushOp());
                s.Apply(new ReopenOp());
                model.AssertMatches(ImageAssert.ReadAll(s.Image), 0, $"after reopen {round}");
            }
        }

        VerifyEverywhere(img, "qcow2", model, dir);
    }

    [Theory]
    [InlineData(1, 6)]
    [InlineData(64, 6)]
    public void ManySmallWritesGrowTheRefcountTable(int refcountBits, int sizeMiB)
    {
        using var dir = new TempDir();
        string img = dir.File("img.qcow2");
        long size = (long)sizeMiB << 20;
        ImageOpener.Create(img, new ImageCreateOptions { Size = size, ClusterSize = 512, RefcountBits = refcountBits });
        var model = new DiskModel(size);
        using (var s = new EngineSession(img, model))
        {
            // Every other 512-byte cluster in a scattered order: thousands of allocations. At 64 bits a refcount
            // block covers 64 clusters (32 KiB) and a one-cluster table 2 MiB of file, so the table must
            // grow and move several times; at 1 bit the file needs many refcount blocks.
            for (long k = 0; k < size / 512; k += 2)
            {
                long cluster = (k * 7919) % (size / 512);
                s.Image.Write(cluster * 512, Pattern.Make((uint)k, cluster * 512, 512));
                model.Write(cluster * 512, Pattern.Make((uint)k, cluster * 512, 512));
            }

            s.Apply(new FlushOp());
        }

        VerifyEverywhere(img, "qcow2", model, dir);
    }

    [Theory]
    [InlineData(512)]
    [InlineData(4096)]
    [InlineData(65536)]
    public void TinyL2CacheEvictsWithoutLosingWrites(int clusterSize)
    {
        using var dir = new TempDir();
        string img = dir.File("img.qcow2");
        long size = clusterSize == 65536 ? 64L << 20 : 8L << 20;
        ImageOpener.Create(img, new ImageCreateOptions { Size = size, ClusterSize = clusterSize });
        var model = new DiskModel(size);
        var options = new ImageOpenOptions { L2CacheBytes = clusterSize, RefcountCacheBytes = clusterSize };
        var rng = new Random(clusterSize);
        using (var s = new EngineSession(img, model, options))
        {
            for (int i = 0; i < 400; i++)
            {
                int len = rng.Next(1, 3 * clusterSize);
                long off = rng.NextInt64(0, size - len);
                s.Apply(i % 17 == 0 ? new ZeroOp(off, len, Unmap: i % 2 == 0) : new WriteOp(off, len, (uint)i));
                if (i % 100 == 99)
                {
                    s.Apply(new ReopenOp());
                }
            }
        }

        ImageAssert.EngineMatchesModel(img, model, "with a tiny cache", options);
        VerifyEverywhere(img, "qcow2", model, dir);
    }

    [Fact]
    public void ConcurrentAllocatingWritesToDistinctRangesAllLand()
    {
        using var dir = new TempDir();
        string img = dir.File("img.qcow2");
        const long size = 16L << 20;
        ImageOpener.Create(img, new ImageCreateOptions { Size = size, ClusterSize = 4096 });
        var model = new DiskModel(size);
        var writes = new List<WriteOp>();
        for (int i = 0; i < 256; i++)
        {
            // 64 KiB slots, each write 1..3 clusters at an unaligned offset inside its own slot.
            long slot = ((i * 37L) % 256) * 65536;
            writes.Add(new WriteOp(slot + (i % 7 * 1000), 4096 + (i * 131 % 8000), (uint)i));
        }

        using (IBlockImage image = ImageOpener.Open(img))
        {
            Parallel.ForEach(writes, new ParallelOptions { MaxDegreeOfParallelism = 4 }, w => w.Apply(image));
            image.Flush();
        }

        writes.ForEach(w => w.Apply(model));
        VerifyEverywhere(img, "qcow2", model, dir);
    }

    [Theory]
    [InlineData(65536, false)]
    [InlineData(65536, true)]
    [InlineData(4096, false)]
    public void ConcurrentWritesToDisjointPartsOfOneUnallocatedClusterAllSurvive(int clusterSize, bool withBacking)
    {
        // Four threads write disjoint quarters of the same unallocated clusters at once: the first
        // allocates and copies on write, the others must not allocate again or lose each other's data.
        using var dir = new TempDir();
        var model = new DiskModel(4L << 20);
        string img = CreateTop(dir, model, clusterSize, withBacking);
        int quarter = clusterSize / 4;
        var writes = new List<WriteOp>[4];
        for (int t = 0; t < 4; t++)
        {
            writes[t] = [];
            for (long c = 0; c < 32; c++)
            {
                writes[t].Add(new WriteOp((c * clusterSize) + (t * quarter) + 1, quarter - 2, (uint)((t * 100) + c)));
            }
        }

        using (IBlockImage image = ImageOpener.Open(img))
        {
            using var start = new Barrier(4);
            Parallel.For(0, 4, new ParallelOptions { MaxDegreeOfParallelism = 4 }, t =>
            {
                start.SignalAndWait();
                writes[t].ForEach(w => w.Apply(image));
            });
        }

        foreach (List<WriteOp> list in writes)
        {
            list.ForEach(w => w.Apply(model));
        }

        VerifyEverywhere(img, "qcow2", model, dir);
    }

    [Fact]
    public async Task ReadsOfAClusterBeingWrittenSeeOldOrNewNeverAMix()
    {
        using var dir = new TempDir();
        const int cs = 65536;
        var model = new DiskModel(4L << 20);
        string img = CreateTop(dir, model, cs, withBacking: true);
        byte[] old = new byte[model.Size];
        model.Read(0, old);
        var writes = new List<WriteOp>();
        for (int c = 0; c < 48; c++)
        {
            // whole clusters (allocation) and partial ones (copy-on-write from the backing)
            writes.Add(c % 2 == 0 ? new WriteOp((long)c * cs, cs, (uint)c) : new WriteOp(((long)c * cs) + 1000, 3000, (uint)c));
        }

        var failures = new System.Collections.Concurrent.ConcurrentQueue<string>();
        using (IBlockImage image = ImageOpener.Open(img))
        {
            using var done = new ManualResetEventSlim();
            Task[] readers = Enumerable.Range(0, 3).Select(r => Task.Run(() =>
            {
                var rng = new Random(r);
                byte[] buffer = new byte[cs];
                while (!done.IsSet && failures.IsEmpty)
                {
                    WriteOp w = writes[rng.Next(writes.Count)];
                    long clusterStart = w.Offset / cs * cs;
                    image.Read(clusterStart, buffer);
                    byte[] updated = old.AsSpan((int)clusterStart, cs).ToArray();
                    w.Data().CopyTo(updated, (int)(w.Offset - clusterStart));
                    if (!buffer.AsSpan().SequenceEqual(old.AsSpan((int)clusterStart, cs)) && !buffer.AsSpan().SequenceEqual(updated))
                    {
                        failures.Enqueue($"cluster at 0x{clusterStart:x} read as neither its old nor its new contents while {w} was in flight or done");
                    }
                }
            })).ToArray();
            writes.ForEach(w => w.Apply(image));
            done.Set();
            await Task.WhenAll(readers);
        }

        Assert.True(failures.IsEmpty, string.Join("\n", failures.Take(5)));
        writes.ForEach(w => w.Apply(model));
        VerifyEverywhere(img, "qcow2", model, dir);
    }

    [Theory]
    [InlineData(512, 64, 32 << 10)]
    [InlineData(512, 16, 1 << 20)]
    [InlineData(65536, 64, 8 << 20)]
    public void OneLargeWriteSpanningManyRefcountBlocksFinishes(int clusterSize, int refcountBits, int length)
    {
        // A single write allocating more clusters than one refcount block describes, with wide refcounts.
        // (An engine that loops here grows the file without bound, so the limit is short and the cases few.)
        using var dir = new TempDir();
        string img = dir.File("img.qcow2");
        const long size = 8L << 20;
        ImageOpener.Create(img, new ImageCreateOptions { Size = size, ClusterSize = clusterSize, RefcountBits = refcountBits });
        var model = new DiskModel(size);
        var write = new WriteOp(0, length, 5);
        Outcome o = Guard.Run(() =>
        {
            using IBlockImage image = ImageOpener.Open(img);
            write.Apply(image);
        }, TimeSpan.FromSeconds(20));
        Assert.True(o.Kind == OutcomeKind.Success, $"{write} on a fresh {clusterSize}-byte-cluster image with {refcountBits}-bit refcounts: {o}; file now {new FileInfo(img).Length} bytes");
        write.Apply(model);
        VerifyEverywhere(img, "qcow2", model, dir);
    }

    [Theory]
    [InlineData(512, 3)]
    [InlineData(512, 2)]
    [InlineData(1024, 3)]
    public void SmallClusterOverlayRecordsItsBackingFileLikeQemu(int clusterSize, int version)
    {
        // qemu-img creates these (it leaves out the optional feature name table when the header
        // cluster is too small for it); the engine must too.
        using var dir = new TempDir();
        const long size = 1L << 20;
        var model = new DiskModel(size);
        model.Write(0, Pattern.Make(8, 0, (int)size));
        model.SaveRaw(dir.File("base.raw"));
        string top = dir.File("top.qcow2");
        ImageOpener.Create(top, new ImageCreateOptions { ClusterSize = clusterSize, Version = version, BackingFile = "base.raw", BackingFormat = ImageFormat.Raw });
        using (var s = new EngineSession(top, model))
        {
            s.Apply(new WriteOp(1000, 3000, 9));
        }

        using (JsonDocument info = Qemu.Info(top))
        {
            Assert.Equal("base.raw", info.RootElement.GetProperty("backing-filename").GetString());
        }

        VerifyEverywhere(top, "qcow2", model, dir);
    }

    private static long QemuVirtualSize(string img)
    {
        using JsonDocument info = Qemu.Info(img);
        return info.RootElement.GetProperty("virtual-size").GetInt64();
    }
}
