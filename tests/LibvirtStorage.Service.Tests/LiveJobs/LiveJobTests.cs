using System.Text.Json;
using LibvirtStorage.Service.Tests.Exports;
using LibvirtStorage.Service.Tests.Infrastructure;
using LibvirtStorage.Vhost.Frontend;
using Xunit;

namespace LibvirtStorage.Service.Tests.LiveJobs;

/// <summary>
/// Stream and commit on real exports while the C# front-end writes and reads back on two queues, and without exports
/// on deeper chains checked against a copy made by qemu-img before the job; chains and images checked with qemu-img.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class LiveJobTests
{
    private const int Chunk = 64 << 10;
    private const long Size = 64 << 20;

    /// <summary>Chunks only the base layer holds (second half of the disk), written before the snapshot.</summary>
    private static readonly List<(long Offset, byte Pattern)> BaseOnly =
        [.. Enumerable.Range(0, 32).Select(i => (Size / 2 + (i * 3L * Chunk), (byte)(200 + (i % 50))))];

    [Fact]
    public async Task Stream_while_the_guest_writes_copies_the_base_into_the_top_and_drops_it_unnoticed()
    {
        await using var h = new ExportHarness();
        h.Service.CreateVolume("p", new VolumeSpec("disk", "qcow2", Size));
        int[] lastRound = await RunWhileGuestWrites(h, () => h.Service.StreamAsync("p", "disk", new StreamOptions()));

        VolumeInfo after = h.Service.GetVolume("p", "disk");
        Assert.Equal(h.File(".disk.1"), after.File);
        Assert.Empty(after.Snapshots);
        Assert.Empty(after.Chain);
        Assert.False(File.Exists(h.File("disk")), "the streamed-out base layer is deleted with its snapshot");
        h.Service.StopPool("p");
        Tool.QemuImg(h.PoolPath, "check", ".disk.1");
        Assert.Single(Chain(h, ".disk.1"));
        VerifyWithQemuIo(h.File(".disk.1"), lastRound);
    }

    [Fact]
    public async Task Commit_while_the_guest_writes_merges_the_top_into_the_snapshot_layer_which_becomes_the_top()
    {
        await using var h = new ExportHarness();
        h.Service.CreateVolume("p", new VolumeSpec("disk", "qcow2", Size));
        int[] lastRound = await RunWhileGuestWrites(h, () => h.Service.CommitAsync("p", "disk", new CommitOptions()));

        VolumeInfo after = h.Service.GetVolume("p", "disk");
        Assert.Equal(h.File("disk"), after.File);
        Assert.Empty(after.Snapshots);
        Assert.False(File.Exists(h.File(".disk.1")), "the old top is deleted");
        h.Service.StopPool("p");
        Tool.QemuImg(h.PoolPath, "check", "disk");
        Assert.Single(Chain(h, "disk"));
        VerifyWithQemuIo(h.File("disk"), lastRound);
    }

    [Fact]
    public async Task Stream_to_a_base_and_commit_into_an_older_layer_leave_what_the_volume_reads_unchanged()
    {
        using var h = new ServiceHarness();
        h.Service.CreateVolume("p", new VolumeSpec("disk", "qcow2", 8 << 20));
        // Four layers, each overwriting a different part: disk <- .disk.1 <- .disk.2 <- .disk.3 (top).
        string[] names = ["s1", "s2", "s3"];
        Tool.QemuIo(h.File("disk"), "qcow2", "write -P 1 0 8M");
        for (int i = 0; i < names.Length; i++)
        {
            h.Service.CreateSnapshot("p", "disk", names[i]);
            string top = h.Service.GetVolume("p", "disk").File;
            Tool.QemuIo(top, "qcow2", $"write -P {i + 2} {i}M 1M", $"write -z {i + 4}M 512k");
        }

        string reference = Path.Combine(h.Root, "reference.raw");
        Tool.QemuImg(h.Root, "convert", "-O", "raw", h.Service.GetVolume("p", "disk").File, reference);

        await h.Service.StreamAsync("p", "disk", new StreamOptions { BaseSnapshot = "s2" });
        VolumeInfo streamed = h.Service.GetVolume("p", "disk");
        Assert.Equal(["s1", "s2"], streamed.Snapshots.Select(s => s.Name));
        Assert.False(File.Exists(h.File(".disk.2")), "s3's layer left the chain");
        Assert.Equal(2, streamed.Chain.Count);
        Tool.QemuImg(h.Root, "compare", "-f", "raw", reference, streamed.File);
        Tool.QemuImg(h.PoolPath("p"), "check", streamed.File);

        await h.Service.CommitAsync("p", "disk", new CommitOptions { BaseSnapshot = "s1" });
        VolumeInfo committed = h.Service.GetVolume("p", "disk");
        Assert.Equal(h.File("disk"), committed.File);
        Assert.Empty(committed.Snapshots);
        Assert.Empty(committed.Chain);
        Tool.QemuImg(h.Root, "compare", "-f", "raw", reference, committed.File);
        Tool.QemuImg(h.PoolPath("p"), "check", "disk");
        Assert.Equal(["disk"], Directory.GetFiles(h.PoolPath("p")).Select(Path.GetFileName));
    }

    [Fact]
    public async Task A_full_stream_of_a_linked_clone_makes_it_independent_and_its_base_writable_again()
    {
        using var h = new ServiceHarness();
        h.Service.CreateVolume("p", new VolumeSpec("golden", "qcow2", 4 << 20));
        Tool.QemuIo(h.File("golden"), "qcow2", "write -P 7 0 4M");
        h.Service.CreateVolume("p", new VolumeSpec("vm1", "qcow2", null, "golden"));
        Tool.QemuIo(h.File("vm1"), "qcow2", "write -P 9 1M 64k");
        Assert.True(h.Service.GetVolume("p", "golden").ReadOnly);

        await h.Service.StreamAsync("p", "vm1", new StreamOptions());

        Assert.Empty(h.Service.GetVolume("p", "vm1").Chain);
        Assert.False(h.Service.GetVolume("p", "golden").ReadOnly);
        Assert.Single(Chain(h.PoolPath("p"), "vm1"));
        Tool.QemuIo(h.File("vm1"), "qcow2", "read -P 7 0 1M", "read -P 9 1M 64k", "read -P 7 1088k 2944k");
        h.Service.DeleteVolume("p", "golden");
    }

    [Fact]
    public async Task Bad_requests_are_refused_with_clear_errors_and_change_nothing()
    {
        using var h = new ServiceHarness();
        h.Service.CreateVolume("p", new VolumeSpec("disk", "qcow2", 1 << 20));
        h.Service.CreateVolume("p", new VolumeSpec("plain", "raw", 1 << 20));
        h.Service.CreateVolume("p", new VolumeSpec("golden", "qcow2", 1 << 20));
        h.Service.CreateVolume("p", new VolumeSpec("clone", "qcow2", null, "golden"));
        h.Service.CreateSnapshot("p", "disk", "s1");
        string before = h.Fingerprint();

        var e = await Expect.ErrorAsync(StorageErrorKind.NotFound, () => h.Service.StreamAsync("p", "disk", new StreamOptions { BaseSnapshot = "nope" }));
        Assert.Contains("no snapshot named 'nope'", e.Message, StringComparison.Ordinal);
        e = await Expect.ErrorAsync(StorageErrorKind.Invalid, () => h.Service.CommitAsync("p", "plain", new CommitOptions()));
        Assert.Contains("no layer to commit into", e.Message, StringComparison.Ordinal);
        e = await Expect.ErrorAsync(StorageErrorKind.Invalid, () => h.Service.CommitAsync("p", "clone", new CommitOptions()));
        Assert.Contains("every volume that shares it", e.Message, StringComparison.Ordinal);
        e = await Expect.ErrorAsync(StorageErrorKind.InUse, () => h.Service.StreamAsync("p", "golden", new StreamOptions()));
        Assert.Contains("volume 'clone'", e.Message, StringComparison.Ordinal);
        await Expect.ErrorAsync(StorageErrorKind.NotFound, () => h.Service.StreamAsync("p", "missing", new StreamOptions()));

        // Nothing below the top: a stream has nothing to do and succeeds without touching anything.
        await h.Service.StreamAsync("p", "plain", new StreamOptions());
        await h.Service.StreamAsync("p", "disk", new StreamOptions { BaseSnapshot = "s1" });
        Assert.Equal(before, h.Fingerprint());
    }

    [Fact]
    public async Task A_stream_stopped_by_shutdown_stays_recorded_and_the_next_job_manager_finishes_it()
    {
        using var h = new ServiceHarness();
        h.Service.CreateVolume("p", new VolumeSpec("disk", "qcow2", 32 << 20));
        Tool.QemuIo(h.File("disk"), "qcow2", "write -P 3 0 32M");
        h.Service.CreateSnapshot("p", "disk", "s1");

        var first = new JobManager(h.Service, TimeSpan.FromMinutes(1));
        StorageJob job = first.StartStream("p", "disk", new StreamOptions { SpeedLimit = 4 << 20 });
        string record = Path.Combine(first.JobDirectory, $"{job.Id}.json");
        Assert.True(File.Exists(record));
        Assert.Equal(4 << 20, job.SpeedLimit);
        first.Pause(job.Id);
        Assert.True(job.IsPaused);
        first.Resume(job.Id);
        Assert.True(SpinWait.SpinUntil(() => job.BytesDone > 0, TimeSpan.FromSeconds(30)), "the stream made no progress");
        first.Dispose(); // lvstord stopping: the job is cancelled, its record kept
        Assert.Equal(StorageJobState.Cancelled, job.State);
        Assert.True(File.Exists(record), "a job stopped by shutdown keeps its record");
        Assert.Single(h.Service.GetVolume("p", "disk").Snapshots);

        using var second = new JobManager(h.Service, TimeSpan.FromMinutes(1));
        IReadOnlyList<string> report = second.ResumeRecorded();
        Assert.Contains($"resumed stream job {job.Id} on volume 'disk' in pool 'p'", report);
        StorageJob resumed = Assert.Single(second.List());
        Assert.Equal(job.Id, resumed.Id);
        second.SetSpeed(resumed.Id, 0);
        await resumed.Completion.WaitAsync(TimeSpan.FromSeconds(60));
        Assert.Equal(StorageJobState.Completed, resumed.State);
        Assert.False(File.Exists(record), "a finished job's record is removed");
        Assert.Empty(h.Service.GetVolume("p", "disk").Snapshots);
        Tool.QemuIo(h.Service.GetVolume("p", "disk").File, "qcow2", "read -P 3 0 32M");

        // A record whose commit pivoted before the crash is removed without running anything.
        Directory.CreateDirectory(second.JobDirectory);
        File.WriteAllText(Path.Combine(second.JobDirectory, "77.json"),
            $$"""{"id":77,"type":"Commit","pool":"p","volume":"disk","topFile":"/gone","baseSnapshot":"s1","speedLimit":0,"created":"2026-01-01T00:00:00Z"}""");
        File.WriteAllText(Path.Combine(second.JobDirectory, "78.json"), "{ not json");
        IReadOnlyList<string> again = second.ResumeRecorded();
        Assert.Contains(again, line => line.Contains("had finished before the restart", StringComparison.Ordinal));
        Assert.Contains(again, line => line.Contains("ignored a damaged job record", StringComparison.Ordinal));
        Assert.False(File.Exists(Path.Combine(second.JobDirectory, "77.json")));
    }

    [Fact]
    public async Task A_live_clone_interrupted_by_a_restart_is_rolled_back_by_merging_its_temporary_snapshot()
    {
        using var h = new ServiceHarness();
        h.Service.CreateVolume("p", new VolumeSpec("disk", "qcow2", 8 << 20));
        Tool.QemuIo(h.File("disk"), "qcow2", "write -P 3 0 8M");
        h.Service.CreateSnapshot("p", "disk", "clone-copy1");
        Tool.QemuIo(h.Service.GetVolume("p", "disk").File, "qcow2", "write -P 4 1M 1M");

        // What lvstord leaves when it dies during a live clone to 'copy1': the temporary snapshot (marked in the
        // inventory with its clone's name) and a hidden partial copy.
        string state = File.ReadAllText(h.StateFile);
        Assert.Contains("\"name\": \"clone-copy1\",", state, StringComparison.Ordinal);
        File.WriteAllText(h.StateFile, state.Replace("\"name\": \"clone-copy1\",", "\"name\": \"clone-copy1\", \"cloneTarget\": \"copy1\",", StringComparison.Ordinal));
        string partial = h.File(".copy1.creating-00112233445566778899aabbccddeeff");
        File.WriteAllText(partial, "half a copy");
        h.Reopen();

        using var jobs = new JobManager(h.Service, TimeSpan.FromMinutes(1));
        IReadOnlyList<string> report = jobs.ResumeRecorded();
        Assert.Contains(report, line => line.Contains("rolling back an interrupted clone", StringComparison.Ordinal) && line.Contains("'clone-copy1'", StringComparison.Ordinal));
        StorageJob merge = Assert.Single(jobs.List());
        await merge.Completion.WaitAsync(TimeSpan.FromSeconds(60));
        Assert.True(merge.State == StorageJobState.Completed, merge.Error?.Message);

        VolumeInfo disk = h.Service.GetVolume("p", "disk");
        Assert.Equal(h.File("disk"), disk.File);
        Assert.Empty(disk.Snapshots);
        Assert.False(File.Exists(partial), "the partial copy of the interrupted clone is deleted");
        Assert.DoesNotContain(h.Service.ListVolumes("p"), v => v.Name == "copy1");
        Tool.QemuIo(h.File("disk"), "qcow2", "read -P 3 0 1M", "read -P 4 1M 1M", "read -P 3 2M 6M");
        Tool.QemuImg(h.PoolPath("p"), "check", "disk");
    }

    /// <summary>
    /// Writes BaseOnly and round 0 into the base, snapshots, then keeps both queues writing and reading back until ten
    /// rounds each after <paramref name="job"/> returned. Returns each queue's last round (verified crosswise here).
    /// </summary>
    private static async Task<int[]> RunWhileGuestWrites(ExportHarness h, Func<Task> job)
    {
        const int RoundsAfter = 10;
        using var going = new CountdownEvent(2);
        using var jobDone = new ManualResetEventSlim();
        int[] lastRound = new int[2];
        using (VhostUserBlkFrontend guest = h.Connect("disk"))
        {
            h.WaitForState("disk", ExportState.Connected);
            GuestIo.Write(guest.Queues[0], BaseOnly, Chunk);
            GuestIo.Write(guest.Queues[0], RoundChunks(0, 0), Chunk);
            GuestIo.Write(guest.Queues[1], RoundChunks(1, 0), Chunk);
            GuestIo.Flush(guest.Queues[0]);
            h.Service.CreateSnapshot("p", "disk", "s1");

            Task[] workers = Enumerable.Range(0, 2).Select(q => Task.Factory.StartNew(() =>
            {
                int after = 0;
                for (int round = 1; after < RoundsAfter; round++)
                {
                    bool done = jobDone.IsSet;
                    var chunks = RoundChunks(q, round);
                    GuestIo.Write(guest.Queues[q], chunks, Chunk);
                    GuestIo.Verify(guest.Queues[q], chunks, Chunk);
                    if (round == 5)
                    {
                        going.Signal();
                    }

                    after += done ? 1 : 0;
                    lastRound[q] = round;
                }
            }, TaskCreationOptions.LongRunning)).ToArray();

            Assert.True(going.Wait(TimeSpan.FromSeconds(60)), "the guest did not get going");
            await job();
            jobDone.Set();
            await Task.WhenAll(workers).WaitAsync(TimeSpan.FromSeconds(120));
            GuestIo.Flush(guest.Queues[0]);
            for (int q = 0; q < 2; q++)
            {
                GuestIo.Verify(guest.Queues[1 - q], RoundChunks(q, lastRound[q]), Chunk);
            }

            GuestIo.Verify(guest.Queues[0], BaseOnly, Chunk);
        }

        h.WaitForState("disk", ExportState.Listening);
        return lastRound;
    }

    private static void VerifyWithQemuIo(string image, int[] lastRound)
    {
        var reads = new List<string>();
        for (int q = 0; q < 2; q++)
        {
            reads.AddRange(RoundChunks(q, lastRound[q]).Select(c => $"read -P {c.Pattern} {c.Offset} {Chunk}"));
        }

        reads.AddRange(BaseOnly.Select(c => $"read -P {c.Pattern} {c.Offset} {Chunk}"));
        Tool.QemuIo(image, "qcow2", [.. reads]);
    }

    private static JsonElement[] Chain(ExportHarness h, string file) => Chain(h.PoolPath, file);

    private static JsonElement[] Chain(string poolPath, string file)
    {
        using JsonDocument chain = JsonDocument.Parse(Tool.QemuImg(poolPath, "info", "-U", "--backing-chain", "--output=json", Path.Combine(poolPath, file)));
        return [.. chain.RootElement.EnumerateArray().Select(e => e.Clone())];
    }

    /// <summary>Queue q owns chunks q, q+2, ... of the first half; round r rewrites 4 of them with a pattern of its own.</summary>
    private static List<(long Offset, byte Pattern)> RoundChunks(int queue, int round) =>
        [.. Enumerable.Range(0, 4).Select(i => ((long)((round % 8) * 8 + i * 2 + queue) * Chunk, (byte)(1 + queue * 100 + round % 90)))];
}

public sealed class LiveJobControlTests
{
    [Fact]
    public void At_idle_priority_a_job_polls_until_the_guest_has_nothing_in_flight_and_at_normal_priority_not_at_all()
    {
        using var control = new LiveJobControl();
        int polls = 0;
        control.WaitForGuest(() => { polls++; return true; }, CancellationToken.None);
        Assert.Equal(0, polls);

        control.IdlePriority = true;
        int busyFor = 5;
        control.WaitForGuest(() => { polls++; return busyFor-- > 0; }, CancellationToken.None);
        Assert.Equal(6, polls); // five busy answers (the first look and four in the loop), then the idle one that ends it

        // A guest that never pauses delays each chunk by at most IdleWait; then the job goes on.
        polls = 0;
        control.WaitForGuest(() => { polls++; return true; }, CancellationToken.None);
        Assert.True(polls > 1);
        using var cancelled = new CancellationTokenSource();
        cancelled.Cancel();
        Assert.Throws<OperationCanceledException>(() => control.WaitForGuest(() => true, cancelled.Token));
    }

    [Fact]
    public async Task Paused_jobs_wait_and_a_negative_speed_is_refused()
    {
        using var control = new LiveJobControl(speedLimit: 0);
        Assert.Throws<ArgumentOutOfRangeException>(() => control.SpeedLimit = -1);
        control.Pause();
        Assert.True(control.IsPaused);
        var yielded = Task.Run(() => control.Yield(1 << 20, CancellationToken.None));
        Assert.NotSame(yielded, await Task.WhenAny(yielded, Task.Delay(200))); // a paused job does not pass its chunk boundary
        control.Resume();
        await yielded.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.False(control.IsPaused);
    }
}
