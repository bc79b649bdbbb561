using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using LibvirtStorage.Vhost.Frontend;

namespace LibvirtStorage.Daemon.Tests;

/// <summary>Skips like <see cref="GuestFactAttribute"/>.</summary>
public sealed class GuestTheoryAttribute : TheoryAttribute
{
    public GuestTheoryAttribute()
    {
        Skip = new GuestFactAttribute().Skip;
    }
}

/// <summary>
/// Issue 6's acceptance tests: <c>lvstor stream</c> and <c>lvstor commit</c> on a volume of the real lvstord while a
/// guest (the C# vhost-user-blk front-end running <see cref="PatternWorkload"/>) keeps writing and flushing. Every
/// write the guest had acknowledged reads back afterwards; the chain on disk is exactly the expected one, every layer
/// passes <c>qemu-img check</c>, and the layers that left the chain are deleted with their snapshots' records. A
/// kill -9 in the middle of a job loses nothing acknowledged before a flush, and the next lvstord finishes the job.
/// </summary>
public sealed class LiveJobTests(BusFixture fixture) : IClassFixture<BusFixture>, IDisposable
{
    private const long MiB = 1 << 20;
    private readonly string _dir = Directory.CreateTempSubdirectory("lvstord-live-").FullName;

    private string PoolDir => Path.Combine(_dir, "pools", "tank");

    private string Socket => Path.Combine(_dir, "run", "tank", "vm1.sock");

    private string JobDir => Path.Combine(_dir, "state", "jobs");

    /// <summary>Removes the temporary folder, unless LIVEJOBS_KEEP is set (to look at the images of a failed run).</summary>
    public void Dispose()
    {
        if (Environment.GetEnvironmentVariable("LIVEJOBS_KEEP") is null)
        {
            Directory.Delete(_dir, recursive: true);
        }
    }

    /// <summary>A full stream (one snapshot) and a stream down to the older of two snapshots, the guest writing throughout.</summary>
    [GuestTheory]
    [InlineData(null)]
    [InlineData("s1")]
    public async Task Stream_while_the_guest_writes_keeps_every_write_and_leaves_the_expected_chain(string? baseSnapshot)
    {
        using var notify = new NotifySocket(Path.Combine(_dir, "notify"));
        using DaemonProcess daemon = await StartDaemonAsync(notify);
        CreateVolume(64 * MiB);
        using var guest = Guest.Connect(Socket, new PatternWorkload(0, 64 * MiB, blockBytes: 4096));
        List<Snapshot> snapshots = TakeSnapshots(guest, baseSnapshot is null ? ["s1"] : ["s1", "s2"]);
        string top = Volume().GetProperty("file").GetString()!;

        long during = await RunWhileWritingAsync(guest, ["stream", "vm1", "--pool", "tank", "--speed", "16M", .. BaseArgs(baseSnapshot)]);
        Assert.True(during > 0, "the guest wrote nothing while the stream ran");

        PatternCheck check = guest.Workload.Verify(guest.Queue);
        Assert.True(check.IsOk, $"{check.Mismatches} sectors lost or damaged by the stream; first: {check.FirstMismatch}");
        List<Snapshot> kept = baseSnapshot is null ? [] : [.. snapshots.TakeWhile(s => s.Name != baseSnapshot), snapshots.Single(s => s.Name == baseSnapshot)];
        Assert.Equal(kept.Select(s => s.Name), Snapshots().Select(s => s.Name));
        Assert.Equal(top, Volume().GetProperty("file").GetString());

        await StopAsync(daemon, guest);
        AssertChain([top, .. kept.Select(s => s.File).Reverse()]);
        foreach (Snapshot gone in snapshots.Except(kept))
        {
            Assert.False(File.Exists(gone.File), $"the layer of snapshot {gone.Name}, merged by the stream, is still there: {gone.File}");
        }

        await VerifyAfterRestartAsync(notify, guest.Workload);
    }

    /// <summary>An active commit into the newest snapshot's layer, and into the older of two; the guest writes throughout.</summary>
    /// <remarks>A raw volume's first snapshot keeps the raw file as its layer: a commit into it makes the volume raw again.</remarks>
    [GuestTheory]
    [InlineData(null, "qcow2")]
    [InlineData("s1", "qcow2")]
    [InlineData("s1", "raw")]
    public async Task Commit_while_the_guest_writes_keeps_every_write_and_the_base_layer_becomes_the_top(string? baseSnapshot, string format)
    {
        using var notify = new NotifySocket(Path.Combine(_dir, "notify"));
        using DaemonProcess daemon = await StartDaemonAsync(notify);
        CreateVolume(64 * MiB, format);
        using var guest = Guest.Connect(Socket, new PatternWorkload(0, 64 * MiB, blockBytes: 4096));
        List<Snapshot> snapshots = TakeSnapshots(guest, ["s1", "s2"]);
        string top = Volume().GetProperty("file").GetString()!;

        long during = await RunWhileWritingAsync(guest, ["commit", "vm1", "--pool", "tank", "--speed", "16M", .. BaseArgs(baseSnapshot)]);
        Assert.True(during > 0, "the guest wrote nothing while the commit ran");

        PatternCheck check = guest.Workload.Verify(guest.Queue);
        Assert.True(check.IsOk, $"{check.Mismatches} sectors lost or damaged by the commit; first: {check.FirstMismatch}");
        Snapshot into = snapshots.Single(s => s.Name == (baseSnapshot ?? "s2"));
        List<Snapshot> kept = [.. snapshots.TakeWhile(s => s != into)];
        Assert.Equal(kept.Select(s => s.Name), Snapshots().Select(s => s.Name));
        Assert.Equal(into.File, Volume().GetProperty("file").GetString());
        Assert.Equal(into.Name == "s1" ? format : "qcow2", Volume().GetProperty("format").GetString());

        await StopAsync(daemon, guest);
        AssertChain([into.File, .. kept.Select(s => s.File).Reverse()]);
        Assert.False(File.Exists(top), $"the old top is still there after the commit: {top}");
        foreach (Snapshot gone in snapshots.Except(kept).Where(s => s != into))
        {
            Assert.False(File.Exists(gone.File), $"the layer of snapshot {gone.Name}, merged by the commit, is still there: {gone.File}");
        }

        await VerifyAfterRestartAsync(notify, guest.Workload);
    }

    /// <summary>
    /// kill -9 (or SIGTERM) of lvstord while a slowed stream or commit copies a 256 MiB volume and the guest writes and
    /// flushes: the next lvstord takes the job's record up and finishes the job, the guest reconnects and finds
    /// everything it had flushed, and the chain ends as after an uninterrupted job.
    /// </summary>
    [GuestTheory]
    [InlineData("stream", DaemonProcess.SigKill)]
    [InlineData("commit", DaemonProcess.SigKill)]
    [InlineData("stream", DaemonProcess.SigTerm)]
    [InlineData("commit", DaemonProcess.SigTerm)]
    public async Task Kill9_or_SIGTERM_in_the_middle_of_a_job_resumes_it_and_loses_nothing_flushed(string type, int signal)
    {
        const long size = 256 * MiB;
        using var notify = new NotifySocket(Path.Combine(_dir, "notify"));
        var workload = new PatternWorkload(0, size, blockBytes: 64 << 10);
        List<Snapshot> snapshots;
        string top;
        long id;
        using (DaemonProcess first = await StartDaemonAsync(notify))
        {
            CreateVolume(size);
            using var guest = Guest.Connect(Socket, workload, completionTimeoutMs: 3000);
            guest.Workload.WriteAll(guest.Queue);
            snapshots = TakeSnapshots(guest, ["s1"]);
            if (type == "commit")
            {
                // A commit copies what the top holds: make that the whole volume.
                guest.Workload.WriteAll(guest.Queue);
                guest.Workload.Flush(guest.Queue);
            }

            top = Volume().GetProperty("file").GetString()!;
            guest.StartWriting(batch: 4, restMs: 50);
            JsonElement started = LvstorJson(type, "vm1", "--pool", "tank", "--speed", "20M", "--async");
            id = JobId(started);
            Assert.Equal("running", started.GetProperty("state").GetString());
            Assert.True(File.Exists(Path.Combine(JobDir, $"{id}.json")), "the running job has no record in <state-dir>/jobs");
            JsonElement running = WaitForJob(id, j => j.GetProperty("bytes_done").GetUInt64() > 0);
            Assert.Equal("running", running.GetProperty("state").GetString());
            Assert.Equal(20UL * 1024 * 1024, running.GetProperty("speed").GetUInt64());

            // The resumed job keeps the speed it last had.
            Assert.Equal(24UL * 1024 * 1024, LvstorJson("job-speed", id.ToString(CultureInfo.InvariantCulture), "24M").GetProperty("speed").GetUInt64());
            long before = guest.Workload.WritesAcknowledged;
            Assert.True(SpinWait.SpinUntil(() => guest.Workload.WritesAcknowledged > before + 64, TimeSpan.FromSeconds(60)), "the guest stopped writing during the job");
            first.Signal(signal);
            Assert.Equal(signal == DaemonProcess.SigKill ? 137 : 0, await first.WaitForExitAsync());
            await guest.StopWritingAsync(crashed: true);
        }

        Assert.True(File.Exists(Path.Combine(JobDir, $"{id}.json")), "the interrupted job's record is gone");
        using DaemonProcess second = await StartDaemonAsync(notify);
        Assert.Contains($"resumed {type} job {id} on volume 'vm1'", second.StandardOutput, StringComparison.Ordinal);
        JsonElement resumed = Job(id) ?? throw new InvalidOperationException($"job {id} is not listed after the restart: {Lvstor("job-list").Stdout}");
        Assert.Equal(type, resumed.GetProperty("type").GetString());
        Assert.Equal(24UL * 1024 * 1024, resumed.GetProperty("speed").GetUInt64());

        Assert.True(SpinWait.SpinUntil(() => File.Exists(Socket), TimeSpan.FromSeconds(30)), "the export did not come back");
        using (var guest = Guest.Connect(Socket, workload))
        {
            PatternCheck check = guest.Workload.Verify(guest.Queue, afterCrash: true);
            Assert.True(check.IsOk, $"{check.Mismatches} sectors lost or damaged by the signal {signal}; first: {check.FirstMismatch}");

            // Writes acknowledged but not flushed before the kill may or may not have landed: rewrite every block, so the
            // workload knows each block's content again (its next FLUSH would otherwise demand those lost writes), while
            // the resumed job runs. Then the rest of the job, unthrottled, with the guest writing and flushing.
            guest.Workload.WriteAll(guest.Queue);
            guest.Workload.Flush(guest.Queue);
            guest.StartWriting(batch: 4, restMs: 50);
            if (Job(id)?.GetProperty("state").GetString() == "running")
            {
                // The job may end between the look and the call: then lvstor says so (exit 6), which is fine here.
                (int code, string stdout, string stderr) = Lvstor("job-speed", id.ToString(CultureInfo.InvariantCulture), "0", "--json");
                Assert.True(code == 0 ? JsonDocument.Parse(stdout).RootElement.GetProperty("speed").GetUInt64() == 0 : stderr.Contains("it has ended", StringComparison.Ordinal),
                    $"lvstor job-speed exited {code}: {stderr}{stdout}");
            }

            JsonElement done = WaitForJob(id, j => j.GetProperty("state").GetString() != "running");
            Assert.True(done.GetProperty("state").GetString() == "completed", $"the resumed job ended {done}");
            await guest.StopWritingAsync();
            check = guest.Workload.Verify(guest.Queue);
            Assert.True(check.IsOk, $"{check.Mismatches} sectors lost or damaged by the resumed job; first: {check.FirstMismatch}");
            Assert.False(File.Exists(Path.Combine(JobDir, $"{id}.json")), "the finished job's record is still there");
            Assert.Empty(Snapshots());
            await StopAsync(second, guest);
        }

        if (type == "stream")
        {
            AssertChain([top], crashed: true);
            Assert.False(File.Exists(snapshots[0].File), "the streamed snapshot's layer is still there");
        }
        else
        {
            AssertChain([snapshots[0].File], crashed: true);
            Assert.False(File.Exists(top), "the committed top is still there");
        }

        await VerifyAfterRestartAsync(notify, workload);
    }

    /// <summary>
    /// job-pause, job-speed, job-resume and job-cancel of a running stream: Paused and Speed change as asked, a paused
    /// stream makes no progress, and a cancelled one leaves the chain and the snapshot as they were, the data intact.
    /// </summary>
    [GuestFact]
    public async Task A_running_stream_pauses_resumes_changes_speed_and_cancels_leaving_the_chain_unchanged()
    {
        const long size = 128 * MiB;
        using var notify = new NotifySocket(Path.Combine(_dir, "notify"));
        using DaemonProcess daemon = await StartDaemonAsync(notify);
        CreateVolume(size);
        using var guest = Guest.Connect(Socket, new PatternWorkload(0, size, blockBytes: 64 << 10));
        guest.Workload.WriteAll(guest.Queue);
        List<Snapshot> snapshots = TakeSnapshots(guest, ["s1"]);
        string top = Volume().GetProperty("file").GetString()!;
        guest.StartWriting(batch: 4, restMs: 50);

        long id = JobId(LvstorJson("stream", "vm1", "--pool", "tank", "--speed", "10M", "--async"));
        string job = id.ToString(CultureInfo.InvariantCulture);
        WaitForJob(id, j => j.GetProperty("bytes_done").GetUInt64() > 0);

        JsonElement paused = LvstorJson("job-pause", job);
        Assert.True(paused.GetProperty("paused").GetBoolean(), $"job-pause answered {paused}");
        Assert.Equal("running", paused.GetProperty("state").GetString());
        // Held at a chunk boundary: once there, no byte moves.
        ulong held = WaitForStableBytes(id);
        Thread.Sleep(1000);
        JsonElement still = Job(id)!.Value;
        Assert.Equal(held, still.GetProperty("bytes_done").GetUInt64());
        Assert.True(still.GetProperty("paused").GetBoolean());

        // The volume is the job's while it runs, paused or not: other chain changes are refused and change nothing.
        foreach (string[] other in (string[][])[
            ["commit", "vm1", "--pool", "tank"], ["snapshot", "vm1", "s2", "--pool", "tank"], ["stream", "vm1", "--pool", "tank"],
            ["vol-resize", "vm1", "256M", "--pool", "tank"], ["revert", "vm1", "s1", "--pool", "tank"], ["vol-delete", "vm1", "--pool", "tank"], ["pool-destroy", "tank"]])
        {
            (int busyCode, _, string busy) = Lvstor(other);
            Assert.True(busyCode != 0 && busy.StartsWith("lvstor: error: ", StringComparison.Ordinal), $"lvstor {string.Join(' ', other)} during the stream: {busyCode} {busy}");
        }

        JsonElement slower = LvstorJson("job-speed", job, "5M");
        Assert.Equal(5UL * 1024 * 1024, slower.GetProperty("speed").GetUInt64());
        Assert.True(slower.GetProperty("paused").GetBoolean(), "job-speed resumed the paused job");

        JsonElement resumed = LvstorJson("job-resume", job);
        Assert.False(resumed.GetProperty("paused").GetBoolean(), $"job-resume answered {resumed}");
        WaitForJob(id, j => j.GetProperty("bytes_done").GetUInt64() > held);

        JsonElement cancelled = LvstorJson("job-cancel", job);
        Assert.True(cancelled.GetProperty("state").GetString() is "running" or "cancelled", $"job-cancel answered {cancelled}");
        JsonElement ended = WaitForJob(id, j => j.GetProperty("state").GetString() != "running");
        Assert.True(ended.GetProperty("state").GetString() == "cancelled", $"the cancelled stream ended {ended}");
        (int code, _, string refused) = Lvstor("job-resume", job);
        Assert.True(code != 0 && refused.StartsWith("lvstor: error: ", StringComparison.Ordinal), $"job-resume of an ended job: {code} {refused}");

        await guest.StopWritingAsync();
        PatternCheck check = guest.Workload.Verify(guest.Queue);
        Assert.True(check.IsOk, $"{check.Mismatches} sectors lost or damaged by the cancelled stream; first: {check.FirstMismatch}");
        Assert.Equal(["s1"], Snapshots().Select(s => s.Name));
        Assert.Equal(top, Volume().GetProperty("file").GetString());
        Assert.False(File.Exists(Path.Combine(JobDir, $"{id}.json")), "the cancelled job's record is still there");

        await StopAsync(daemon, guest);
        AssertChain([top, snapshots[0].File]);
        await VerifyAfterRestartAsync(notify, guest.Workload);
    }

    /// <summary>
    /// A linked clone with a snapshot of its own, streamed whole while its guest writes: the clone ends with no backing
    /// file, its snapshot's layer is merged and deleted, and the backing volume, used by nothing any more, stays intact
    /// and becomes writable again.
    /// </summary>
    [GuestFact]
    public async Task Stream_of_a_linked_clone_detaches_it_from_its_backing_volume()
    {
        using var notify = new NotifySocket(Path.Combine(_dir, "notify"));
        using DaemonProcess daemon = await StartDaemonAsync(notify);
        LvstorOk("vol-create-as", "tank", "base", (64 * MiB).ToString(CultureInfo.InvariantCulture), "--format", "qcow2");
        var workload = new PatternWorkload(0, 64 * MiB, blockBytes: 4096);
        using (var writer = Guest.Connect(Path.Combine(_dir, "run", "tank", "base.sock"), workload))
        {
            writer.Workload.WriteAll(writer.Queue);
            writer.Workload.Flush(writer.Queue);
        }

        string baseFile = LvstorJson("vol-info", "base", "--pool", "tank").GetProperty("file").GetString()!;
        LvstorOk("vol-clone", "base", "vm1", "--pool", "tank", "--linked");
        Assert.True(SpinWait.SpinUntil(() => File.Exists(Socket), TimeSpan.FromSeconds(30)), "the clone's export did not appear");
        using var guest = Guest.Connect(Socket, workload);
        List<Snapshot> snapshots = TakeSnapshots(guest, ["s1"]);
        string top = Volume().GetProperty("file").GetString()!;
        AssertChainNames(Volume(), [snapshots[0].File, baseFile]);

        long during = await RunWhileWritingAsync(guest, ["stream", "vm1", "--pool", "tank", "--speed", "16M"]);
        Assert.True(during > 0, "the guest wrote nothing while the stream ran");
        PatternCheck check = guest.Workload.Verify(guest.Queue);
        Assert.True(check.IsOk, $"{check.Mismatches} sectors lost or damaged by the stream; first: {check.FirstMismatch}");
        JsonElement volume = Volume();
        AssertChainNames(volume, []);
        Assert.Empty(Snapshots());
        JsonElement backing = LvstorJson("vol-info", "base", "--pool", "tank");
        Assert.False(backing.GetProperty("read_only").GetBoolean(), $"the former backing volume is still read-only: {backing}");
        Assert.DoesNotContain(backing.GetProperty("users").EnumerateArray(), u => u.GetProperty("kind").GetString() == "backing");

        await StopAsync(daemon, guest);
        AssertChain([top]);
        AssertChain([baseFile]);
        Assert.False(File.Exists(snapshots[0].File), "the clone's merged snapshot layer is still there");
        await VerifyAfterRestartAsync(notify, workload);
    }

    /// <summary>
    /// A volume grown after its snapshot: its top is larger than the layer below. A stream copies what the smaller
    /// layer holds and keeps the grown part; a commit grows the base layer and carries the grown part into it.
    /// </summary>
    [GuestTheory]
    [InlineData("stream")]
    [InlineData("commit")]
    public async Task A_volume_grown_after_its_snapshot_streams_and_commits_with_its_new_size(string type)
    {
        using var notify = new NotifySocket(Path.Combine(_dir, "notify"));
        using DaemonProcess daemon = await StartDaemonAsync(notify);
        CreateVolume(32 * MiB);
        var low = new PatternWorkload(0, 32 * MiB, blockBytes: 4096);
        var high = new PatternWorkload(32 * MiB, 16 * MiB, blockBytes: 4096, seed: 2);
        var untouched = new PatternWorkload(48 * MiB, 16 * MiB, blockBytes: 4096); // never written: must read as zeroes
        List<Snapshot> snapshots;
        using (var before = Guest.Connect(Socket, low))
        {
            before.Workload.WriteAll(before.Queue);
            snapshots = TakeSnapshots(before, ["s1"]);
        }

        LvstorOk("vol-resize", "vm1", "64M", "--pool", "tank");
        string top = Volume().GetProperty("file").GetString()!;
        using var guest = Guest.Connect(Socket, low);
        high.WriteAll(guest.Queue);
        high.Flush(guest.Queue);

        long during = await RunWhileWritingAsync(guest, [type, "vm1", "--pool", "tank", "--speed", "16M"]);
        Assert.True(during > 0, $"the guest wrote nothing while the {type} ran");
        foreach (PatternWorkload workload in (PatternWorkload[])[low, high, untouched])
        {
            PatternCheck check = workload.Verify(guest.Queue);
            Assert.True(check.IsOk, $"{check.Mismatches} sectors lost or damaged by the {type}; first: {check.FirstMismatch}");
        }

        Assert.Equal(64UL * MiB, Volume().GetProperty("capacity").GetUInt64());
        await StopAsync(daemon, guest);
        string remaining = type == "stream" ? top : snapshots[0].File;
        AssertChain([remaining]);
        (int code, string info) = Tool("qemu-img", "info", "--output=json", remaining);
        Assert.True(code == 0, info);
        Assert.Equal(64 * MiB, JsonDocument.Parse(info).RootElement.GetProperty("virtual-size").GetInt64());
    }

    /// <summary>
    /// lvstord killed after a stream down to a base had switched the top's backing file but before it recorded the new
    /// chain (simulated: the job's record is left by a kill, and qemu-img rebase does what the stream's copy and switch
    /// do). The next lvstord resumes the job, which finds the switch done and records it.
    /// </summary>
    [GuestFact]
    public async Task A_stream_killed_between_switching_the_backing_file_and_recording_it_completes_after_a_restart()
    {
        using var notify = new NotifySocket(Path.Combine(_dir, "notify"));
        var workload = new PatternWorkload(0, 16 * MiB, blockBytes: 4096);
        List<Snapshot> snapshots;
        string top;
        long id;
        using (DaemonProcess first = await StartDaemonAsync(notify))
        {
            CreateVolume(16 * MiB);
            using (var guest = Guest.Connect(Socket, workload))
            {
                guest.Workload.WriteAll(guest.Queue);
                snapshots = TakeSnapshots(guest, ["s1", "s2"]);
            }

            top = Volume().GetProperty("file").GetString()!;
            // s2 adds only the few clusters the top does not rewrite (a few hundred KiB): at 32 KiB/s the job outlives the kill.
            id = JobId(LvstorJson("stream", "vm1", "--pool", "tank", "--base", "s1", "--speed", "32K", "--async"));
            first.Signal(DaemonProcess.SigKill);
            await first.WaitForExitAsync();
        }

        Assert.True(File.Exists(Path.Combine(JobDir, $"{id}.json")), "the killed stream left no record");
        (int code, string output) = Tool("qemu-img", "rebase", "-f", "qcow2", "-F", "qcow2", "-b", Path.GetFileName(snapshots[0].File), top);
        Assert.True(code == 0, output);

        using (DaemonProcess second = await StartDaemonAsync(notify))
        {
            JsonElement done = WaitForJob(id, j => j.GetProperty("state").GetString() != "running");
            Assert.True(done.GetProperty("state").GetString() == "completed", $"the resumed stream ended {done}; {second.StandardOutput}");
            Assert.Equal(["s1"], Snapshots().Select(s => s.Name));
            second.Signal(DaemonProcess.SigTerm);
            Assert.Equal(0, await second.WaitForExitAsync());
        }

        AssertChain([top, snapshots[0].File]);
        Assert.False(File.Exists(snapshots[1].File), "the merged layer of s2 is still there");
        await VerifyAfterRestartAsync(notify, workload);
    }

    /// <summary>
    /// Two queues written at once by two threads (lvstord runs their requests in parallel) through a commit and then a
    /// stream: each queue's blocks read back as last written, and the chain ends as expected.
    /// </summary>
    [GuestFact]
    public async Task Two_queues_writing_at_once_through_a_commit_and_a_stream_lose_nothing()
    {
        using var notify = new NotifySocket(Path.Combine(_dir, "notify"));
        using DaemonProcess daemon = await StartDaemonAsync(notify, "io: { queues: 2 }\n");
        CreateVolume(64 * MiB);
        using var frontend = VhostUserBlkFrontend.Connect(Socket, new VhostUserBlkFrontendOptions
        {
            Queues = 2, QueueSize = 64, Depth = 16, MaxRequestBytes = 64 << 10, CompletionTimeoutMs = 60_000,
        });
        PatternWorkload[] workloads = [new(0, 32 * MiB, blockBytes: 4096, seed: 1), new(32 * MiB, 32 * MiB, blockBytes: 4096, seed: 2)];
        for (int q = 0; q < 2; q++)
        {
            workloads[q].WriteAll(frontend.Queues[q]);
            workloads[q].Flush(frontend.Queues[q]);
        }

        foreach ((string type, string snapshot) in ((string, string)[])[("commit", "s1"), ("stream", "s2")])
        {
            LvstorOk("snapshot", "vm1", snapshot, "--pool", "tank");
            bool stop = false;
            Task[] writers = [.. Enumerable.Range(0, 2).Select(q => Task.Run(() =>
            {
                while (!Volatile.Read(ref stop))
                {
                    workloads[q].WriteRandom(frontend.Queues[q], 8);
                    workloads[q].Flush(frontend.Queues[q]);
                    Thread.Sleep(10);
                }
            }))];
            long before = workloads.Sum(w => w.WritesAcknowledged);
            (int code, string stdout, string stderr) = await Task.Run(() => Lvstor(type, "vm1", "--pool", "tank", "--speed", "16M"));
            long during = workloads.Sum(w => w.WritesAcknowledged) - before;
            Volatile.Write(ref stop, true);
            await Task.WhenAll(writers);
            Assert.True(code == 0, $"lvstor {type} exited {code}: {stderr}{stdout}");
            Assert.True(during > 0, $"the queues wrote nothing during the {type}");
            for (int q = 0; q < 2; q++)
            {
                PatternCheck check = workloads[q].Verify(frontend.Queues[q]);
                Assert.True(check.IsOk, $"queue {q}: {check.Mismatches} sectors lost or damaged by the {type}; first: {check.FirstMismatch}");
            }

            Assert.Empty(Snapshots());
        }

        string top = Volume().GetProperty("file").GetString()!;
        daemon.Signal(DaemonProcess.SigTerm);
        Assert.Equal(0, await daemon.WaitForExitAsync());
        AssertChain([top]);
    }

    /// <summary>
    /// A cancelled commit leaves the volume's chain and snapshot as they were and the guest's data intact; running the
    /// commit again finishes it.
    /// </summary>
    [GuestFact]
    public async Task A_cancelled_commit_leaves_the_chain_and_a_second_commit_finishes_it()
    {
        const long size = 64 * MiB;
        using var notify = new NotifySocket(Path.Combine(_dir, "notify"));
        using DaemonProcess daemon = await StartDaemonAsync(notify);
        CreateVolume(size);
        using var guest = Guest.Connect(Socket, new PatternWorkload(0, size, blockBytes: 64 << 10));
        guest.Workload.WriteAll(guest.Queue);
        List<Snapshot> snapshots = TakeSnapshots(guest, ["s1"]);
        guest.Workload.WriteAll(guest.Queue);
        guest.Workload.Flush(guest.Queue);
        string top = Volume().GetProperty("file").GetString()!;
        guest.StartWriting(batch: 4, restMs: 50);

        long id = JobId(LvstorJson("commit", "vm1", "--pool", "tank", "--speed", "4M", "--async"));
        WaitForJob(id, j => j.GetProperty("bytes_done").GetUInt64() > 0);
        LvstorOk("job-cancel", id.ToString(CultureInfo.InvariantCulture));
        JsonElement ended = WaitForJob(id, j => j.GetProperty("state").GetString() != "running");
        Assert.True(ended.GetProperty("state").GetString() == "cancelled", $"the cancelled commit ended {ended}");
        Assert.Equal(["s1"], Snapshots().Select(s => s.Name));
        Assert.Equal(top, Volume().GetProperty("file").GetString());
        Assert.True(File.Exists(top), "the cancelled commit deleted the top");
        await guest.StopWritingAsync();
        PatternCheck check = guest.Workload.Verify(guest.Queue);
        Assert.True(check.IsOk, $"{check.Mismatches} sectors lost or damaged by the cancelled commit; first: {check.FirstMismatch}");

        long during = await RunWhileWritingAsync(guest, ["commit", "vm1", "--pool", "tank", "--speed", "32M"]);
        Assert.True(during > 0, "the guest wrote nothing while the second commit ran");
        check = guest.Workload.Verify(guest.Queue);
        Assert.True(check.IsOk, $"{check.Mismatches} sectors lost or damaged by the second commit; first: {check.FirstMismatch}");
        Assert.Empty(Snapshots());
        Assert.Equal(snapshots[0].File, Volume().GetProperty("file").GetString());

        await StopAsync(daemon, guest);
        AssertChain([snapshots[0].File]);
        Assert.False(File.Exists(top), "the committed top is still there");
        await VerifyAfterRestartAsync(notify, guest.Workload);
    }

    /// <summary>Bad stream, commit and job-control calls fail with a clear error, start no job and change nothing.</summary>
    [GuestFact]
    public async Task Bad_live_job_calls_are_refused_and_change_nothing()
    {
        using var notify = new NotifySocket(Path.Combine(_dir, "notify"));
        using DaemonProcess daemon = await StartDaemonAsync(notify);
        CreateVolume(8 * MiB);
        LvstorOk("vol-create-as", "tank", "plain", (8 * MiB).ToString(CultureInfo.InvariantCulture), "--format", "qcow2");
        LvstorOk("snapshot", "vm1", "s1", "--pool", "tank");
        string top = Volume().GetProperty("file").GetString()!;

        (string[] Args, string Message)[] refused =
        [
            (["stream", "vm1", "--pool", "tank", "--base", "nope"], "no snapshot named 'nope'"),
            (["commit", "vm1", "--pool", "tank", "--base", "nope"], "no snapshot named 'nope'"),
            (["commit", "plain", "--pool", "tank"], "has no snapshot"),
            (["stream", "vm1", "--pool", "tank", "--speed", "fast"], "invalid speed 'fast'"),
            (["stream", "nope", "--pool", "tank"], "nope"),
            (["job-pause", "999"], "job/999"),
            (["job-speed", "999", "1M"], "job/999"),
            (["job-cancel", "x"], "job id 'x' is not a number"),
        ];
        foreach ((string[] args, string message) in refused)
        {
            (int code, string stdout, string stderr) = Lvstor(args);
            Assert.True(code != 0, $"lvstor {string.Join(' ', args)} succeeded: {stdout}");
            Assert.StartsWith("lvstor: error: ", stderr, StringComparison.Ordinal);
            Assert.True(stderr.Contains(message, StringComparison.Ordinal), $"lvstor {string.Join(' ', args)}: {stderr}");
        }

        // The same through D-Bus: unknown options and wrong types are refused before any job starts.
        string volumePath = Volume().GetProperty("object_path").GetString()!;
        foreach (string[] options in (string[][])[["1", "bogus", "b", "true"], ["1", "speed", "s", "fast"], ["1", "base", "t", "1"], ["1", "base", "s", "nope"]])
        {
            foreach (string method in (string[])["Stream", "Commit"])
            {
                (int code, string output) = Tool("busctl", ["--address=" + fixture.Bus!.Address, "call", "org.lvstor.Storage1", volumePath,
                    "org.lvstor.Storage1.Volume", method, "a{sv}", .. options]);
                Assert.True(code != 0 && output.Length > 0, $"{method}({string.Join(' ', options)}) answered: {output}");
            }
        }

        Assert.Empty(LvstorJson("job-list").EnumerateArray());
        Assert.Empty(Directory.Exists(JobDir) ? Directory.GetFiles(JobDir) : []);
        Assert.Equal(["s1"], Snapshots().Select(s => s.Name));
        Assert.Equal(top, Volume().GetProperty("file").GetString());

        // A job that is not a stream or commit has no speed and cannot pause.
        JsonElement wipe = LvstorJson("vol-wipe", "plain", "--pool", "tank");
        string wipeId = JobId(wipe).ToString(CultureInfo.InvariantCulture);
        (int pauseCode, _, string pauseError) = Lvstor("job-pause", wipeId);
        Assert.True(pauseCode != 0 && pauseError.StartsWith("lvstor: error: ", StringComparison.Ordinal), $"job-pause of a wipe: {pauseCode} {pauseError}");

        daemon.Signal(DaemonProcess.SigTerm);
        Assert.Equal(0, await daemon.WaitForExitAsync());
    }

    private static void AssertChainNames(JsonElement volume, string[] files) =>
        Assert.Equal(files, volume.GetProperty("backing_chain").EnumerateArray().Select(l => l.GetProperty("file").GetString()!));

    private static string[] BaseArgs(string? baseSnapshot) => baseSnapshot is null ? [] : ["--base", baseSnapshot];

    private async Task<DaemonProcess> StartDaemonAsync(NotifySocket notify, string extraConfig = "")
    {
        string config = Path.Combine(_dir, "lvstord.yaml");
        File.WriteAllText(config, $"admin_groups: [root]\npools: [ {{ name: tank, path: {PoolDir} }} ]\nlogging: {{ format: simple }}\n{extraConfig}");
        string[] args = ["--config", config, "--bus", fixture.Bus!.Address, "--state-dir", Path.Combine(_dir, "state"), "--runtime-dir", Path.Combine(_dir, "run")];
        DaemonProcess daemon = DaemonProcess.Start(args, notify.Path);
        try
        {
            await notify.WaitForAsync("READY=1", daemon);
            return daemon;
        }
        catch
        {
            daemon.Dispose();
            throw;
        }
    }

    private void CreateVolume(long size, string format = "qcow2") =>
        LvstorOk("vol-create-as", "tank", "vm1", size.ToString(CultureInfo.InvariantCulture), "--format", format);

    /// <summary>
    /// For each name: the guest rewrites a quarter of the volume and flushes, then the snapshot is taken with the
    /// guest connected; afterwards the guest writes again, so every layer holds data of its own.
    /// </summary>
    private List<Snapshot> TakeSnapshots(Guest guest, string[] names)
    {
        foreach (string name in names)
        {
            guest.Workload.WriteRandom(guest.Queue, guest.Workload.Blocks / 4);
            guest.Workload.Flush(guest.Queue);
            LvstorOk("snapshot", "vm1", name, "--pool", "tank");
        }

        guest.Workload.WriteRandom(guest.Queue, guest.Workload.Blocks / 4);
        guest.Workload.Flush(guest.Queue);
        List<Snapshot> snapshots = Snapshots();
        Assert.Equal(names, snapshots.Select(s => s.Name));
        return snapshots;
    }

    /// <summary>Runs lvstor (waiting for its job) while the guest writes; returns the writes acknowledged meanwhile.</summary>
    private async Task<long> RunWhileWritingAsync(Guest guest, params string[] args)
    {
        guest.StartWriting();
        long before = guest.Workload.WritesAcknowledged;
        (int code, string stdout, string stderr) = await Task.Run(() => Lvstor(args));
        long during = guest.Workload.WritesAcknowledged - before;
        await guest.StopWritingAsync();
        Assert.True(code == 0, $"lvstor {string.Join(' ', args)} exited {code}: {stderr}{stdout}");
        return during;
    }

    /// <summary>Stops lvstord with SIGTERM (the guest disconnects first, so its last writes are flushed by its own FLUSH).</summary>
    private static async Task StopAsync(DaemonProcess daemon, Guest guest)
    {
        guest.Disconnect();
        daemon.Signal(DaemonProcess.SigTerm);
        Assert.Equal(0, await daemon.WaitForExitAsync());
    }

    /// <summary>Starts lvstord again on the final chain and reads everything back through a new connection.</summary>
    private async Task VerifyAfterRestartAsync(NotifySocket notify, PatternWorkload workload)
    {
        using DaemonProcess daemon = await StartDaemonAsync(notify);
        Assert.True(SpinWait.SpinUntil(() => File.Exists(Socket), TimeSpan.FromSeconds(30)), "the export did not come back");
        using (var guest = Guest.Connect(Socket, workload))
        {
            PatternCheck check = workload.Verify(guest.Queue);
            Assert.True(check.IsOk, $"after a restart on the new chain, {check.Mismatches} sectors lost or damaged; first: {check.FirstMismatch}");
        }

        daemon.Signal(DaemonProcess.SigTerm);
        Assert.Equal(0, await daemon.WaitForExitAsync());
    }

    /// <summary>
    /// The chain qemu-img sees from <paramref name="files"/>[0] is exactly <paramref name="files"/>, and every qcow2
    /// layer passes qemu-img check (after a crash, leaked clusters, exit 3, are allowed: they are not corruption).
    /// </summary>
    private static void AssertChain(string[] files, bool crashed = false)
    {
        (int code, string output) = Tool("qemu-img", "info", "--backing-chain", "--output=json", files[0]);
        Assert.True(code == 0, output);
        using JsonDocument chain = JsonDocument.Parse(output);
        string[] found = [.. chain.RootElement.EnumerateArray().Select(layer => Path.GetFullPath(layer.GetProperty("filename").GetString()!))];
        Assert.Equal(files.Select(Path.GetFullPath), found);
        Assert.False(chain.RootElement[files.Length - 1].TryGetProperty("backing-filename", out _), $"the last layer has a backing file: {output}");
        foreach (string file in chain.RootElement.EnumerateArray().Where(l => l.GetProperty("format").GetString() == "qcow2").Select(l => l.GetProperty("filename").GetString()!))
        {
            (int checkCode, string checkOutput) = Tool("qemu-img", "check", "-f", "qcow2", file);
            Assert.True(checkCode == 0 || (crashed && checkCode == 3), $"qemu-img check {file} exit {checkCode}: {checkOutput}");
        }
    }

    private JsonElement Volume() => LvstorJson("vol-info", "vm1", "--pool", "tank");

    private List<Snapshot> Snapshots() =>
        [.. LvstorJson("snapshot-list", "vm1", "--pool", "tank").EnumerateArray()
            .Select(s => new Snapshot(s.GetProperty("name").GetString()!, s.GetProperty("file").GetString()!))];

    private JsonElement? Job(long id)
    {
        foreach (JsonElement job in LvstorJson("job-list").EnumerateArray())
        {
            if (JobId(job) == id)
            {
                return job;
            }
        }

        return null;
    }

    private static long JobId(JsonElement job)
    {
        string path = job.GetProperty("object_path").GetString()!;
        return long.Parse(path[(path.LastIndexOf('/') + 1)..], CultureInfo.InvariantCulture);
    }

    /// <summary>Polls job-list until the job satisfies <paramref name="condition"/> (a generous bound fails a stuck job).</summary>
    private JsonElement WaitForJob(long id, Func<JsonElement, bool> condition)
    {
        var clock = Stopwatch.StartNew();
        JsonElement? last = null;
        while (clock.Elapsed < TimeSpan.FromMinutes(5))
        {
            last = Job(id);
            if (last is { } job && condition(job))
            {
                return job;
            }

            Thread.Sleep(200);
        }

        throw new TimeoutException($"job {id} did not get there within 5 minutes; last seen: {last}");
    }

    /// <summary>The job's bytes_done once two readings in a row agree (a pause takes hold at the next chunk boundary).</summary>
    private ulong WaitForStableBytes(long id)
    {
        ulong previous = Job(id)!.Value.GetProperty("bytes_done").GetUInt64();
        for (int i = 0; i < 100; i++)
        {
            Thread.Sleep(300);
            ulong now = Job(id)!.Value.GetProperty("bytes_done").GetUInt64();
            if (now == previous)
            {
                return now;
            }

            previous = now;
        }

        throw new TimeoutException($"job {id} kept copying after job-pause");
    }

    private JsonElement LvstorJson(params string[] args)
    {
        (int code, string stdout, string stderr) = Lvstor([.. args, "--json"]);
        Assert.True(code == 0, $"lvstor {string.Join(' ', args)} --json exited {code}: {stderr}");
        using JsonDocument document = JsonDocument.Parse(stdout);
        return document.RootElement.Clone();
    }

    private void LvstorOk(params string[] args)
    {
        (int code, string stdout, string stderr) = Lvstor(args);
        Assert.True(code == 0, $"lvstor {string.Join(' ', args)} exited {code}: {stderr}{stdout}");
    }

    /// <summary>Runs the built lvstor against the private bus.</summary>
    private (int Code, string Stdout, string Stderr) Lvstor(params string[] args)
    {
        var start = new ProcessStartInfo(Path.Combine(AppContext.BaseDirectory, "lvstor"), args)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        start.Environment["LVSTOR_BUS_ADDRESS"] = fixture.Bus!.Address;
        using Process process = Process.Start(start)!;
        Task<string> stdout = process.StandardOutput.ReadToEndAsync();
        Task<string> stderr = process.StandardError.ReadToEndAsync();
        process.WaitForExit();
        return (process.ExitCode, stdout.Result, stderr.Result);
    }

    private static (int Code, string Output) Tool(string program, params string[] args)
    {
        var start = new ProcessStartInfo(program, args) { RedirectStandardOutput = true, RedirectStandardError = true };
        using Process process = Process.Start(start)!;
        Task<string> stdout = process.StandardOutput.ReadToEndAsync();
        Task<string> stderr = process.StandardError.ReadToEndAsync();
        process.WaitForExit();
        return (process.ExitCode, stdout.Result + stderr.Result);
    }

    private sealed record Snapshot(string Name, string File);

    /// <summary>
    /// The front-end connected to vm1 with one queue, driving a workload; in the background it writes random blocks
    /// and flushes after each batch, like a guest that syncs now and then.
    /// </summary>
    private sealed class Guest : IDisposable
    {
        private readonly VhostUserBlkFrontend _frontend;
        private Task? _writer;
        private volatile bool _stop;
        private bool _disconnected;

        private Guest(VhostUserBlkFrontend frontend, PatternWorkload workload)
        {
            _frontend = frontend;
            Workload = workload;
        }

        public PatternWorkload Workload { get; }

        public VhostUserBlkQueue Queue => _frontend.Queues[0];

        /// <summary>Connects; <paramref name="completionTimeoutMs"/> is how soon a request to a killed lvstord gives up.</summary>
        public static Guest Connect(string socket, PatternWorkload workload, int completionTimeoutMs = 60_000) =>
            new(VhostUserBlkFrontend.Connect(socket, new VhostUserBlkFrontendOptions
            {
                Queues = 1,
                QueueSize = 64,
                Depth = 16,
                MaxRequestBytes = 64 << 10,
                CompletionTimeoutMs = completionTimeoutMs,
            }), workload);

        /// <summary>
        /// Writes <paramref name="batch"/> random blocks, flushes, rests <paramref name="restMs"/>, until stopped. Paced,
        /// so that the guest's writes do not fill the whole top before a stream gets to copy anything.
        /// </summary>
        public void StartWriting(int batch = 8, int restMs = 20)
        {
            _stop = false;
            _writer = Task.Run(() =>
            {
                while (!_stop)
                {
                    Workload.WriteRandom(Queue, batch);
                    Workload.Flush(Queue);
                    Thread.Sleep(restMs);
                }
            });
        }

        /// <summary>Stops the writer; after a crash the writer's failure (the back-end vanished) is expected.</summary>
        public async Task StopWritingAsync(bool crashed = false)
        {
            _stop = true;
            try
            {
                await _writer!;
            }
            catch (Exception e) when (crashed && e is TimeoutException or IOException or InvalidDataException)
            {
                // Requests in flight when lvstord died never complete.
            }
        }

        public void Disconnect()
        {
            if (!_disconnected)
            {
                _disconnected = true;
                _frontend.Dispose();
            }
        }

        public void Dispose()
        {
            _stop = true;
            try
            {
                _writer?.Wait(TimeSpan.FromSeconds(90));
            }
            catch (AggregateException)
            {
                // The test has failed already, or the writer's failure was reported.
            }

            Disconnect();
        }
    }
}
