using System.Text.Json;
using LibvirtStorage.Service.Tests.Exports;
using LibvirtStorage.Service.Tests.Infrastructure;
using LibvirtStorage.Service.Tests.Transfers;
using LibvirtStorage.Vhost.Frontend;
using Xunit;

namespace LibvirtStorage.Service.Tests.Clones;

/// <summary>
/// Clones of volumes whose guest (the C# front-end, two queues) keeps writing and verifying: a full clone of the running
/// volume through a temporary snapshot merged back, full and linked clones from a snapshot, and what a linked clone of a
/// snapshot refuses on its source. Clones are compared with qemu-img against a copy of the frozen layer taken at the
/// snapshot point; that the guest ran during a copy is shown by holding the copy (in its first progress report) until the
/// guest has completed more rounds: a paused guest would never complete them.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class LiveCloneTests
{
    private const int Chunk = 64 << 10;
    private const long Size = 64 << 20;

    /// <summary>Chunks written once before anything else (second half of the disk).</summary>
    private static readonly List<(long Offset, byte Pattern)> BaseOnly =
        [.. Enumerable.Range(0, 32).Select(i => (Size / 2 + (i * 3L * Chunk), (byte)(200 + (i % 50))))];

    [Fact]
    public async Task A_full_clone_of_a_volume_whose_guest_writes_copies_a_snapshot_point_while_the_guest_runs_and_merges_the_snapshot_back()
    {
        await using var h = new ExportHarness();
        h.Service.CreateVolume("p", new VolumeSpec("disk", "qcow2", Size));
        string reference = Path.Combine(h.Root, "reference.raw");
        IReadOnlyList<string>? snapshotsDuringCopy = null;
        int roundsDuringCopy = -1;
        int[] lastRound;
        using (VhostUserBlkFrontend frontend = h.Connect("disk"))
        {
            h.WaitForState("disk", ExportState.Connected);
            GuestIo.Write(frontend.Queues[0], BaseOnly, Chunk);
            using var guest = GuestWriter.Start(frontend);
            guest.WaitForRounds(4);

            var progress = new TransferTests.SynchronousProgress(p =>
            {
                if (roundsDuringCopy >= 0)
                {
                    return;
                }

                // The copy is under way: the guest writes into a temporary overlay, so the old top is the disk at the snapshot point.
                snapshotsDuringCopy = h.Service.ListSnapshots("p", "disk").Select(s => s.Name).ToList();
                Tool.QemuImg(h.Root, "convert", "-U", "-f", "qcow2", "-O", "raw", h.File("disk"), reference);
                int before = guest.Rounds;
                guest.WaitForRounds(before + 6);
                roundsDuringCopy = guest.Rounds - before;
            });
            VolumeInfo clone = await h.Service.CloneVolumeAsync("p", "disk", "copy", progress: progress);
            Assert.Equal(h.File("copy"), clone.File);
            Assert.Empty(clone.Chain);

            // Through a job too (the job is a user of the volume, which must not stop the temporary snapshot or its merge).
            using (var jobs = new JobManager(h.Service, TimeSpan.FromMinutes(1)))
            {
                StorageJob job = jobs.StartClone("p", "disk", "copy2", "raw", linked: false);
                await job.Completion.WaitAsync(TimeSpan.FromSeconds(120));
                Assert.True(job.State == StorageJobState.Completed, $"{job}: {job.Error?.Message}");
            }

            lastRound = guest.Stop();
        }

        Assert.Equal(["clone-copy"], snapshotsDuringCopy);
        Assert.True(roundsDuringCopy >= 6, $"the guest completed {roundsDuringCopy} rounds while the copy was held");

        // The volume's chain is as before: its first file is its top again, no snapshot, no file left over.
        h.WaitForState("disk", ExportState.Listening);
        VolumeInfo after = h.Service.GetVolume("p", "disk");
        Assert.Equal(h.File("disk"), after.File);
        Assert.Empty(after.Snapshots);
        Assert.Empty(after.Chain);
        Assert.Equal(["copy", "copy2", "disk"], Directory.GetFiles(h.PoolPath).Select(Path.GetFileName).Order(StringComparer.Ordinal));

        h.Service.StopPool("p");
        Tool.QemuImg(h.Root, "compare", "-f", "raw", "-F", "qcow2", reference, h.File("copy"));
        Tool.QemuImg(h.PoolPath, "check", "copy");
        Tool.QemuImg(h.PoolPath, "check", "disk");
        Assert.Single(Chain(h.PoolPath, "disk"));
        VerifyWithQemuIo(h.File("disk"), lastRound);
        Tool.QemuIo(h.File("copy2"), "raw", [.. BaseOnly.Select(c => $"read -P {c.Pattern} {c.Offset} {Chunk}")]);
    }

    [Fact]
    public async Task A_full_clone_from_a_snapshot_holds_exactly_the_snapshot_while_the_guest_keeps_writing()
    {
        await using var h = new ExportHarness();
        h.Service.CreateVolume("p", new VolumeSpec("disk", "qcow2", Size));
        string reference = Path.Combine(h.Root, "reference.raw");
        int roundsDuringCopy = -1;
        int[] lastRound;
        using (VhostUserBlkFrontend frontend = h.Connect("disk"))
        {
            h.WaitForState("disk", ExportState.Connected);
            using var guest = GuestWriter.Start(frontend);
            guest.WaitForRounds(4);
            h.Service.CreateSnapshot("p", "disk", "s1");
            Tool.QemuImg(h.Root, "convert", "-U", "-f", "qcow2", "-O", "raw", h.File("disk"), reference);
            guest.WaitForRounds(guest.Rounds + 4); // the top now differs from s1

            var progress = new TransferTests.SynchronousProgress(p =>
            {
                if (roundsDuringCopy < 0)
                {
                    int before = guest.Rounds;
                    guest.WaitForRounds(before + 6);
                    roundsDuringCopy = guest.Rounds - before;
                }
            });
            VolumeInfo clone = await h.Service.CloneVolumeAsync("p", "disk", "copy", progress: progress, fromSnapshot: "s1");
            Assert.Empty(clone.Chain);
            Assert.Equal(LibvirtStorage.Images.ImageFormat.Qcow2, clone.Format);
            lastRound = guest.Stop();
        }

        Assert.True(roundsDuringCopy >= 6, $"the guest completed {roundsDuringCopy} rounds while the copy was held");
        h.WaitForState("disk", ExportState.Listening);
        VolumeInfo after = h.Service.GetVolume("p", "disk");
        Assert.Equal(h.File(".disk.1"), after.File);
        Assert.Equal(["s1"], after.Snapshots.Select(s => s.Name));
        h.Service.StopPool("p");
        Tool.QemuImg(h.Root, "compare", "-f", "raw", "-F", "qcow2", reference, h.File("copy"));
        Tool.QemuImg(h.PoolPath, "check", "copy");
        Assert.Single(Chain(h.PoolPath, "copy"));
        Assert.Equal(2, Chain(h.PoolPath, ".disk.1").Length);
        VerifyWithQemuIo(h.File(".disk.1"), lastRound);
    }

    [Fact]
    public async Task A_linked_clone_from_a_snapshot_backs_onto_its_layer_while_the_guest_runs_and_the_source_refuses_to_drop_that_layer()
    {
        await using var h = new ExportHarness();
        h.Service.CreateVolume("p", new VolumeSpec("disk", "qcow2", Size));
        using (VhostUserBlkFrontend frontend = h.Connect("disk"))
        {
            h.WaitForState("disk", ExportState.Connected);
            GuestIo.Write(frontend.Queues[0], BaseOnly, Chunk);
            h.Service.CreateSnapshot("p", "disk", "s1");
            GuestIo.Write(frontend.Queues[0], [(BaseOnly[0].Offset, 0x55)], Chunk); // after s1: the clone must not see it
            using var guest = GuestWriter.Start(frontend);
            guest.WaitForRounds(4);

            VolumeInfo linked = await h.Service.CloneVolumeAsync("p", "disk", "lnk", linked: true, fromSnapshot: "s1");
            ChainLayer layer = Assert.Single(linked.Chain);
            Assert.Equal(("disk", "s1"), (layer.Volume, layer.Snapshot));
            Assert.False(h.Service.GetVolume("p", "disk").ReadOnly, "the source's top stays writable: only its snapshot layer is shared");
            guest.WaitForRounds(guest.Rounds + 4);

            using (VhostUserBlkFrontend clone = h.Connect("lnk", queues: 1))
            {
                GuestIo.Verify(clone.Queues[0], BaseOnly, Chunk);
                GuestIo.Write(clone.Queues[0], [(BaseOnly[1].Offset, 0x66)], Chunk);
                GuestIo.Verify(clone.Queues[0], [(BaseOnly[1].Offset, 0x66)], Chunk);
            }

            // What would drop or change s1's layer names the clone; the guest is not the reason.
            string users = "volume 'lnk'";
            Assert.Contains(users, (await Expect.ErrorAsync(StorageErrorKind.InUse, () => h.Service.CommitAsync("p", "disk", new CommitOptions()))).Message, StringComparison.Ordinal);
            Assert.Contains(users, (await Expect.ErrorAsync(StorageErrorKind.InUse, () => h.Service.StreamAsync("p", "disk", new StreamOptions()))).Message, StringComparison.Ordinal);
            Assert.Contains(users, Expect.Error(StorageErrorKind.InUse, () => h.Service.DeleteVolume("p", "disk")).Message, StringComparison.Ordinal);

            guest.WaitForRounds(guest.Rounds + 4);
            guest.Stop();
            GuestIo.Verify(frontend.Queues[0], [(BaseOnly[0].Offset, 0x55), .. BaseOnly.Skip(1)], Chunk);
        }

        h.WaitForState("disk", ExportState.Listening);
        h.Service.StopPool("p");
        Tool.QemuImg(h.PoolPath, "check", "lnk");
        Assert.Equal(["lnk", "disk"], Chain(h.PoolPath, "lnk").Select(e => Path.GetFileName(e.GetProperty("filename").GetString())));
        Tool.QemuIo(h.File("lnk"), "qcow2", [$"read -P 0x66 {BaseOnly[1].Offset} {Chunk}", .. BaseOnly.Where((_, i) => i != 1).Select(c => $"read -P {c.Pattern} {c.Offset} {Chunk}")]);
    }

    [Fact]
    public async Task A_linked_clone_from_an_older_snapshot_blocks_only_what_would_remove_that_layer()
    {
        using var h = new ServiceHarness();
        h.Service.CreateVolume("p", new VolumeSpec("disk", "qcow2", 4 << 20));
        string[] names = ["s0", "s1", "s2"];
        for (int i = 0; i < names.Length; i++)
        {
            Tool.QemuIo(h.Service.GetVolume("p", "disk").File, "qcow2", $"write -P {i + 1} {i}M 1M");
            h.Service.CreateSnapshot("p", "disk", names[i]);
        }

        VolumeInfo linked = await h.Service.CloneVolumeAsync("p", "disk", "lnk", linked: true, fromSnapshot: "s1");
        Assert.Equal([("disk", "s1"), ("disk", "s0")], linked.Chain.Select(l => (l.Volume, l.Snapshot)));
        Tool.QemuIo(h.File("lnk"), "qcow2", "read -P 1 0 1M", "read -P 2 1M 1M", "read -P 0 2M 2M");

        // A restart finds the chain the inventory records (a backing file that is another volume's snapshot layer).
        h.Reopen();
        Assert.Empty(h.Service.LoadProblems);
        Assert.Equal(linked.Chain, h.Service.GetVolume("p", "lnk").Chain);

        string before = h.Fingerprint();
        var e = await Expect.ErrorAsync(StorageErrorKind.NotFound, () => h.Service.CloneVolumeAsync("p", "disk", "x", fromSnapshot: "nope"));
        Assert.Contains("no snapshot named 'nope'", e.Message, StringComparison.Ordinal);
        await Expect.ErrorAsync(StorageErrorKind.NotFound, () => h.Service.CloneVolumeAsync("p", "disk", "x", linked: true, fromSnapshot: "nope"));
        await Expect.ErrorAsync(StorageErrorKind.Exists, () => h.Service.CloneVolumeAsync("p", "disk", "lnk", fromSnapshot: "s1"));
        await Expect.ErrorAsync(StorageErrorKind.Invalid, () => h.Service.CloneVolumeAsync("p", "disk", "x", "raw", linked: true, fromSnapshot: "s1"));
        foreach (Func<Task> dropsS1 in new Func<Task>[]
        {
            () => h.Service.CommitAsync("p", "disk", new CommitOptions { BaseSnapshot = "s1" }),
            () => h.Service.CommitAsync("p", "disk", new CommitOptions { BaseSnapshot = "s0" }),
            () => h.Service.StreamAsync("p", "disk", new StreamOptions()),
            () => h.Service.StreamAsync("p", "disk", new StreamOptions { BaseSnapshot = "s0" }),
            () => Task.Run(() => h.Service.RevertToSnapshot("p", "disk", "s0", discardNewer: true)),
            () => Task.Run(() => h.Service.DeleteVolume("p", "disk")),
        })
        {
            Assert.Contains("volume 'lnk'", (await Expect.ErrorAsync(StorageErrorKind.InUse, dropsS1)).Message, StringComparison.Ordinal);
        }

        Assert.Equal(before, h.Fingerprint());

        // Above s1 the source is free: commit into s2, revert to s1 (which keeps its layer).
        await h.Service.CommitAsync("p", "disk", new CommitOptions());
        h.Service.RevertToSnapshot("p", "disk", "s1");
        Assert.Equal(["s0", "s1"], h.Service.GetVolume("p", "disk").Snapshots.Select(s => s.Name));
        Tool.QemuIo(h.File("lnk"), "qcow2", "read -P 1 0 1M", "read -P 2 1M 1M", "read -P 0 2M 2M");
        Tool.QemuImg(h.PoolPath("p"), "check", "lnk");

        // Without the clone, s1's layer may go.
        h.Service.DeleteVolume("p", "lnk");
        await h.Service.CommitAsync("p", "disk", new CommitOptions { BaseSnapshot = "s0" });
        Assert.Empty(h.Service.GetVolume("p", "disk").Snapshots);
    }

    [Fact]
    public async Task A_cancelled_clone_of_a_running_volume_merges_its_snapshot_back_and_leaves_nothing()
    {
        await using var h = new ExportHarness();
        h.Service.CreateVolume("p", new VolumeSpec("disk", "qcow2", Size));
        int[] lastRound;
        using (VhostUserBlkFrontend frontend = h.Connect("disk"))
        {
            h.WaitForState("disk", ExportState.Connected);
            GuestIo.Write(frontend.Queues[0], BaseOnly, Chunk);
            using var guest = GuestWriter.Start(frontend);
            guest.WaitForRounds(4);
            using var cancel = new CancellationTokenSource();
            var progress = new TransferTests.SynchronousProgress(p =>
            {
                if (!cancel.IsCancellationRequested)
                {
                    guest.WaitForRounds(guest.Rounds + 4);
                    cancel.Cancel();
                }
            });
            var e = await Expect.ErrorAsync(StorageErrorKind.Cancelled, () => h.Service.CloneVolumeAsync("p", "disk", "copy", progress: progress, cancellationToken: cancel.Token));
            Assert.DoesNotContain("temporary snapshot", e.Message, StringComparison.Ordinal);
            guest.WaitForRounds(guest.Rounds + 4);
            lastRound = guest.Stop();
        }

        VolumeInfo after = h.Service.GetVolume("p", "disk");
        Assert.Equal(h.File("disk"), after.File);
        Assert.Empty(after.Snapshots);
        Assert.DoesNotContain(h.Service.ListVolumes("p"), v => v.Name == "copy");
        Assert.Equal(["disk"], Directory.GetFiles(h.PoolPath).Select(Path.GetFileName));
        h.WaitForState("disk", ExportState.Listening);
        h.Service.StopPool("p");
        Tool.QemuImg(h.PoolPath, "check", "disk");
        VerifyWithQemuIo(h.File("disk"), lastRound);
    }

    [Fact]
    public async Task When_merging_the_temporary_snapshot_back_fails_the_error_names_it_and_nothing_else_is_left()
    {
        string root = Directory.CreateTempSubdirectory("lvstor-clone-").FullName;
        try
        {
            string pool = Path.Combine(root, "pool");
            var exports = new FailingPivotExports();
            StorageService service = StorageService.Open(new StorageServiceOptions { StateDirectory = Path.Combine(root, "state"), Exports = exports });
            service.DefinePool("p", pool);
            service.StartPool("p");
            service.CreateVolume("p", new VolumeSpec("disk", "qcow2", 4 << 20));
            Tool.QemuIo(Path.Combine(pool, "disk"), "qcow2", "write -P 7 0 4M");

            // A guest is "connected", and the second hold of the export (the merge's pivot, after the snapshot's) fails.
            var e = await Expect.ErrorAsync(StorageErrorKind.Io, () => service.CloneVolumeAsync("p", "disk", "copy"));
            Assert.Contains("the temporary snapshot 'clone-copy' is left on volume 'disk'", e.Message, StringComparison.Ordinal);
            Assert.Contains("lvstor commit disk --pool p --base clone-copy", e.Message, StringComparison.Ordinal);
            Assert.Contains("the export broke", e.Message, StringComparison.Ordinal);
            Assert.Equal(["clone-copy"], service.GetVolume("p", "disk").Snapshots.Select(s => s.Name));
            Assert.Equal(["disk"], service.ListVolumes("p").Select(v => v.Name));
            Assert.Equal([".disk.1", "disk"], Directory.GetFiles(pool).Select(Path.GetFileName).Order(StringComparer.Ordinal));

            // What the error says to do puts the volume back as it was.
            await service.CommitAsync("p", "disk", new CommitOptions { BaseSnapshot = "clone-copy" });
            Assert.Equal(Path.Combine(pool, "disk"), service.GetVolume("p", "disk").File);
            Assert.Empty(service.GetVolume("p", "disk").Snapshots);
            Tool.QemuImg(pool, "check", "disk");
            Tool.QemuIo(Path.Combine(pool, "disk"), "qcow2", "read -P 7 0 4M");
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    /// <summary>Exports that report a connected guest and fail their second quiesce (a live clone's merge pivot).</summary>
    private sealed class FailingPivotExports : IVolumeExports
    {
        private int _quiesces;

        public event Action<Guid>? StateChanged
        {
            add { }
            remove { }
        }

        public ExportState GetState(Guid volumeKey) => ExportState.Connected;

        public IDisposable Quiesce(Guid volumeKey) => Interlocked.Increment(ref _quiesces) == 2
            ? throw new StorageServiceException(StorageErrorKind.Io, "the export broke")
            : NoVolumeExports.Instance.Quiesce(volumeKey);
    }

    private static void VerifyWithQemuIo(string image, int[] lastRound)
    {
        var reads = new List<string>();
        for (int q = 0; q < 2; q++)
        {
            reads.AddRange(GuestWriter.RoundChunks(q, lastRound[q]).Select(c => $"read -P {c.Pattern} {c.Offset} {Chunk}"));
        }

        Tool.QemuIo(image, "qcow2", [.. reads]);
    }

    private static JsonElement[] Chain(string poolPath, string file)
    {
        using JsonDocument chain = JsonDocument.Parse(Tool.QemuImg(poolPath, "info", "-U", "--backing-chain", "--output=json", Path.Combine(poolPath, file)));
        return [.. chain.RootElement.EnumerateArray().Select(e => e.Clone())];
    }

    /// <summary>
    /// The guest: each of two queues rewrites its own chunks of the first 4 MiB in rounds and reads every round back.
    /// <see cref="Stop"/> ends the rounds, checks each queue's last round through the other queue, and returns them.
    /// </summary>
    private sealed class GuestWriter : IDisposable
    {
        private readonly VhostUserBlkFrontend _frontend;
        private readonly CancellationTokenSource _stop = new();
        private readonly int[] _lastRound = new int[2];
        private Task[] _workers = [];
        private int _rounds;

        private GuestWriter(VhostUserBlkFrontend frontend) => _frontend = frontend;

        /// <summary>Rounds completed by both queues together.</summary>
        public int Rounds => Volatile.Read(ref _rounds);

        public static GuestWriter Start(VhostUserBlkFrontend frontend)
        {
            var writer = new GuestWriter(frontend);
            writer._workers = [.. Enumerable.Range(0, 2).Select(q => Task.Factory.StartNew(() => writer.Run(q), TaskCreationOptions.LongRunning))];
            return writer;
        }

        /// <summary>Queue q owns chunks q, q+2, ... of the first 4 MiB; round r rewrites 4 of them with a pattern of its own.</summary>
        public static List<(long Offset, byte Pattern)> RoundChunks(int queue, int round) =>
            [.. Enumerable.Range(0, 4).Select(i => ((long)((round % 8) * 8 + i * 2 + queue) * Chunk, (byte)(1 + queue * 100 + round % 90)))];

        /// <summary>Waits (up to 60 s: a guest held still never gets there) until <paramref name="rounds"/> rounds are done.</summary>
        public void WaitForRounds(int rounds)
        {
            Assert.True(SpinWait.SpinUntil(() => Rounds >= rounds || _workers.Any(w => w.IsCompleted), TimeSpan.FromSeconds(60)),
                $"the guest completed {Rounds} rounds, not {rounds}: it was held");
            if (_workers.FirstOrDefault(w => w.IsFaulted) is { } failed)
            {
                failed.GetAwaiter().GetResult();
            }
        }

        public int[] Stop()
        {
            _stop.Cancel();
            Assert.True(Task.WaitAll(_workers, TimeSpan.FromSeconds(120)), "the guest's queues did not stop");
            GuestIo.Flush(_frontend.Queues[0]);
            for (int q = 0; q < 2; q++)
            {
                GuestIo.Verify(_frontend.Queues[1 - q], RoundChunks(q, _lastRound[q]), Chunk);
            }

            return _lastRound;
        }

        public void Dispose()
        {
            _stop.Cancel();
            try
            {
                Task.WaitAll(_workers, TimeSpan.FromSeconds(120));
            }
            catch (AggregateException)
            {
                // Stop or WaitForRounds reported it already.
            }

            _stop.Dispose();
        }

        private void Run(int queue)
        {
            for (int round = 1; !_stop.IsCancellationRequested; round++)
            {
                var chunks = RoundChunks(queue, round);
                GuestIo.Write(_frontend.Queues[queue], chunks, Chunk);
                GuestIo.Verify(_frontend.Queues[queue], chunks, Chunk);
                _lastRound[queue] = round;
                Interlocked.Increment(ref _rounds);
            }
        }
    }
}
