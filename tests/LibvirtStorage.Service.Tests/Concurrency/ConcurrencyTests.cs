using LibvirtStorage.Service.Tests.Infrastructure;
using LibvirtStorage.Service.Tests.Transfers;
using Microsoft.Win32.SafeHandles;
using Xunit;

namespace LibvirtStorage.Service.Tests.Concurrency;

public sealed class ConcurrencyTests
{
    private const long MiB = 1 << 20;

    [Fact]
    public async Task A_long_operation_marks_only_its_volume_busy()
    {
        using var h = new ServiceHarness();
        h.Service.CreateVolume("p", new VolumeSpec("big", "raw", 4 * MiB));
        Tool.QemuIo(h.File("big"), "raw", "write -P 0x11 0 4M");
        h.Service.CreateVolume("p", new VolumeSpec("other", "raw", MiB));

        // The download stops inside its first progress report until released.
        using var started = new ManualResetEventSlim();
        using var release = new ManualResetEventSlim();
        var progress = new TransferTests.SynchronousProgress(_ =>
        {
            started.Set();
            release.Wait(TimeSpan.FromSeconds(30));
        });
        using SafeFileHandle output = System.IO.File.OpenHandle(Path.Combine(h.Root, "out"), FileMode.Create, FileAccess.ReadWrite);
        Task<TransferResult> download = h.Service.DownloadAsync("p", "big", output, progress: progress);
        Assert.True(started.Wait(TimeSpan.FromSeconds(30)));

        try
        {
            var busy = Expect.Error(StorageErrorKind.Busy, () => h.Service.DeleteVolume("p", "big"));
            Assert.Contains("download", busy.Message, StringComparison.Ordinal);
            Expect.Error(StorageErrorKind.Busy, () => h.Service.CreateSnapshot("p", "big", "s"));
            Expect.Error(StorageErrorKind.Busy, () => h.Service.StopPool("p"));
            Assert.Equal(4 * MiB, h.Service.GetVolume("p", "big").Capacity); // info still answers

            // Unrelated volumes and pools carry on.
            h.Service.CreateVolume("p", new VolumeSpec("new", "qcow2", MiB));
            h.Service.CreateSnapshot("p", "other", "s1");
            await h.Service.WipeAsync("p", "other");
            h.Service.DefinePool("q", h.PoolPath("q"));
            h.Service.StartPool("q");
            h.Service.CreateVolume("q", new VolumeSpec("d", "raw", MiB));
        }
        finally
        {
            release.Set();
        }

        Assert.Equal(4 * MiB, (await download).Length);
        h.Service.DeleteVolume("p", "big");
    }

    [Fact]
    public async Task Concurrent_calls_leave_a_consistent_inventory()
    {
        using var h = new ServiceHarness();
        h.Service.DefinePool("q", h.PoolPath("q"));
        h.Service.StartPool("q");
        var tasks = new List<Task>();
        for (int i = 0; i < 16; i++)
        {
            int n = i;
            string pool = n % 2 == 0 ? "p" : "q";
            tasks.Add(Task.Run(() =>
            {
                h.Service.CreateVolume(pool, new VolumeSpec($"v{n}", n % 3 == 0 ? "raw" : "qcow2", MiB));
                h.Service.CreateSnapshot(pool, $"v{n}", "s");
                h.Service.ResizeVolume(pool, $"v{n}", 2 * MiB);
            }));
        }

        // The same name from many threads: exactly one wins, the others get Exists.
        var racers = Enumerable.Range(0, 8).Select(_ => Task.Run(() =>
        {
            try
            {
                h.Service.CreateVolume("p", new VolumeSpec("same", "qcow2", MiB));
                return true;
            }
            catch (StorageServiceException ex) when (ex.Kind is StorageErrorKind.Exists)
            {
                return false;
            }
        })).ToList();

        await Task.WhenAll(tasks);
        Assert.Single(await Task.WhenAll(racers), won => won);

        string before = h.Fingerprint();
        h.Reopen();
        Assert.Equal(before, h.Fingerprint());
        Assert.Equal(9, h.Service.ListVolumes("p").Count);
        Assert.Equal(8, h.Service.ListVolumes("q").Count);
        Assert.All(h.Service.ListVolumes("q"), v => Assert.Equal(2 * MiB, v.Capacity));
    }
}
