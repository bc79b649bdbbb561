using System.Diagnostics;
using LibvirtStorage.Vhost.Frontend;

namespace LibvirtStorage.Daemon.Tests;

/// <summary>Skips, naming the package, without a private bus or qemu-img/qemu-io.</summary>
public sealed class GuestFactAttribute : FactAttribute
{
    public GuestFactAttribute()
    {
        Skip = new BusFactAttribute().Skip
            ?? (File.Exists("/usr/bin/qemu-io") && File.Exists("/usr/bin/qemu-img") ? null : "qemu-io and qemu-img are needed (Debian package qemu-utils)");
    }
}

/// <summary>
/// A guest (the C# vhost-user-blk front-end) writing to a volume of the running daemon: SIGTERM with the guest
/// connected must flush its writes into the image and close the export; after a restart the guest reconnects
/// to the same socket path and reads them back.
/// </summary>
public sealed class DaemonGuestTests(BusFixture fixture) : IClassFixture<BusFixture>, IDisposable
{
    private const int Chunk = 64 << 10;
    private readonly string _dir = Directory.CreateTempSubdirectory("lvstord-guest-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [GuestFact]
    public async Task SIGTERM_under_a_connected_guest_flushes_its_writes_and_the_guest_reconnects_after_a_restart()
    {
        (string[] args, string pool, string socket) = DaemonSetup();
        (long Offset, byte Pattern)[] chunks = [.. Enumerable.Range(0, 16).Select(i => ((long)i * 3 * Chunk, (byte)(0x11 + i)))];
        using var notify = new NotifySocket(Path.Combine(_dir, "notify"));

        using (DaemonProcess first = DaemonProcess.Start(args, notify.Path))
        {
            await notify.WaitForAsync("READY=1", first);
            Busctl("call", "org.lvstor.Storage1", "/org/lvstor/Storage1/pool/tank", "org.lvstor.Storage1.Pool", "CreateVolume", "sstsa{sv}",
                "vm1", "qcow2", (4L << 20).ToString(System.Globalization.CultureInfo.InvariantCulture), "", "0");
            using VhostUserBlkFrontend guest = Connect(socket);
            Run(guest.Queues[0], chunks, write: true); // no FLUSH: the daemon's stop must do it

            first.Signal(DaemonProcess.SigTerm);
            Assert.Equal(0, await first.WaitForExitAsync());
            Assert.False(File.Exists(socket), "the export socket was left behind");
        }

        string image = Path.Combine(pool, "vm1");
        Assert.Equal(0, Tool("qemu-img", "check", "-f", "qcow2", image).Code);
        foreach ((long offset, byte pattern) in chunks)
        {
            (int code, string output) = Tool("qemu-io", "-f", "qcow2", "-r", "-c", $"read -P {pattern} {offset} {Chunk}", image);
            Assert.True(code == 0 && !output.Contains("Pattern verification failed", StringComparison.Ordinal), output);
        }

        using DaemonProcess second = DaemonProcess.Start(args, notify.Path);
        await notify.WaitForAsync("READY=1", second);
        using (VhostUserBlkFrontend again = Connect(socket))
        {
            Run(again.Queues[0], chunks, write: false);
        }

        second.Signal(DaemonProcess.SigTerm);
        Assert.Equal(0, await second.WaitForExitAsync());
    }

    /// <summary>
    /// kill -9 of lvstord while a guest writes: after a restart the pool and volume are there, the export is back
    /// at the same path, every write acknowledged before the last FLUSH reads back (writes after it may or may not
    /// have landed, each sector whole: old or new), and qemu-img finds no corruption.
    /// </summary>
    [GuestFact]
    public async Task Kill9_during_guest_writes_loses_nothing_acknowledged_before_a_flush()
    {
        (string[] args, string pool, string socket) = DaemonSetup();
        using var notify = new NotifySocket(Path.Combine(_dir, "notify"));
        var workload = new PatternWorkload(0, 16L << 20);
        var options = new VhostUserBlkFrontendOptions { Depth = 32, MaxRequestBytes = 4096, CompletionTimeoutMs = 3000 };

        using (DaemonProcess first = DaemonProcess.Start(args, notify.Path))
        {
            await notify.WaitForAsync("READY=1", first);
            Busctl("call", "org.lvstor.Storage1", "/org/lvstor/Storage1/pool/tank", "org.lvstor.Storage1.Pool", "CreateVolume", "sstsa{sv}",
                "vm1", "qcow2", (64L << 20).ToString(System.Globalization.CultureInfo.InvariantCulture), "", "0");
            using VhostUserBlkFrontend guest = VhostUserBlkFrontend.Connect(socket, options);
            VhostUserBlkQueue queue = guest.Queues[0];
            workload.WriteAll(queue);
            workload.WriteRandom(queue, 4096);
            workload.Flush(queue);
            long flushed = workload.WritesAcknowledged;

            // Unflushed writes keep the queue full until the daemon dies under them.
            Task writer = Task.Run(() =>
            {
                try
                {
                    while (true)
                        workload.WriteRandom(queue, 512);
                }
                catch (Exception e) when (e is TimeoutException or IOException or InvalidDataException)
                {
                    // The back-end is gone: requests in flight never complete.
                }
            });
            SpinWait.SpinUntil(() => workload.WritesAcknowledged > flushed + 2000, TimeSpan.FromSeconds(30));
            first.Signal(DaemonProcess.SigKill);
            await first.WaitForExitAsync();
            await writer;
            Assert.True(workload.WritesAcknowledged > flushed, "no write ran between the flush and the kill");
        }

        using DaemonProcess second = DaemonProcess.Start(args, notify.Path);
        await notify.WaitForAsync("READY=1", second);
        Assert.True(SpinWait.SpinUntil(() => File.Exists(socket), TimeSpan.FromSeconds(30)), "the export did not come back");
        using (VhostUserBlkFrontend again = VhostUserBlkFrontend.Connect(socket, options))
        {
            PatternCheck check = workload.Verify(again.Queues[0], afterCrash: true);
            Assert.True(check.IsOk, $"{check.Mismatches} sectors lost or damaged; first: {check.FirstMismatch}");
        }

        second.Signal(DaemonProcess.SigTerm);
        Assert.Equal(0, await second.WaitForExitAsync());
        // Exit 3 is leaked clusters only (an interrupted allocation), which qemu-img does not call corruption.
        (int code, string output) = Tool("qemu-img", "check", "-f", "qcow2", Path.Combine(pool, "vm1"));
        Assert.True(code is 0 or 3, $"qemu-img check exit {code}: {output}");
    }

    /// <summary>A config with pool "tank" in the temporary folder; lvstord's arguments, the pool directory, vm1's socket.</summary>
    private (string[] Args, string Pool, string Socket) DaemonSetup()
    {
        string config = Path.Combine(_dir, "lvstord.yaml");
        string pool = Path.Combine(_dir, "pools", "tank");
        File.WriteAllText(config, $"admin_groups: [root]\npools: [ {{ name: tank, path: {pool} }} ]\nlogging: {{ format: simple }}\n");
        string[] args = ["--config", config, "--bus", fixture.Bus!.Address, "--state-dir", Path.Combine(_dir, "state"), "--runtime-dir", Path.Combine(_dir, "run")];
        return (args, pool, Path.Combine(_dir, "run", "tank", "vm1.sock"));
    }

    private static VhostUserBlkFrontend Connect(string socket) =>
        VhostUserBlkFrontend.Connect(socket, new VhostUserBlkFrontendOptions { Queues = 1, QueueSize = 64, Depth = 8, MaxRequestBytes = Chunk });

    // Keeps the queue full: writes fill each chunk with its pattern; reads check it.
    private static void Run(VhostUserBlkQueue queue, (long Offset, byte Pattern)[] chunks, bool write)
    {
        var inFlight = new (long Offset, byte Pattern)[queue.Depth];
        var done = new BlkCompletion[queue.Depth];
        int submitted = 0, completed = 0;
        while (completed < chunks.Length)
        {
            while (submitted < chunks.Length && queue.TryAcquireSlot(out int slot))
            {
                inFlight[slot] = chunks[submitted++];
                queue.Data(slot)[..Chunk].Fill(write ? inFlight[slot].Pattern : (byte)0);
                queue.Submit(slot, write ? BlkRequestType.Write : BlkRequestType.Read, (ulong)(inFlight[slot].Offset / 512), Chunk);
            }

            int n = queue.WaitForCompletions(done);
            for (int i = 0; i < n; i++)
            {
                (long offset, byte pattern) = inFlight[done[i].Slot];
                Assert.True(done[i].IsOk, $"{(write ? "write" : "read")} at {offset}: {done[i]}");
                Assert.True(write || queue.Data(done[i].Slot)[..Chunk].IndexOfAnyExcept(pattern) < 0, $"read at {offset} does not hold 0x{pattern:x2}");
            }

            completed += n;
        }
    }

    private void Busctl(params string[] args)
    {
        (int code, string output) = Tool("busctl", ["--address=" + fixture.Bus!.Address, .. args]);
        Assert.True(code == 0, $"busctl {string.Join(' ', args)}: {output}");
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
}
