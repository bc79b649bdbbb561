using System.Net.Sockets;
using System.Text.Json;
using LibvirtStorage.Service.Tests.Infrastructure;
using LibvirtStorage.Vhost.Frontend;
using LibvirtStorage.Vhost.Tests.Server;
using Xunit;

namespace LibvirtStorage.Service.Tests.Exports;

/// <summary>
/// Real exports of a started pool, driven by the C# front-end (QEMU's vhost-user-blk device in a test) and checked
/// with qemu-img and qemu-io.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class ExportTests
{
    private const int Chunk = 64 << 10;
    private const long Size = 64 << 20;
    private const ulong VirtioBlkFRo = 1ul << 5;

    [Fact]
    public async Task Every_volume_of_a_started_pool_listens_at_its_path_with_the_configured_mode_and_serves_data()
    {
        await using var h = new ExportHarness();
        VolumeInfo disk = h.Service.CreateVolume("p", new VolumeSpec("disk", "qcow2", Size));
        h.Service.CreateVolume("p", new VolumeSpec("raw", "raw", 1 << 20));
        Assert.Equal(h.Socket("disk"), disk.SocketPath);
        Assert.Equal([h.Socket("disk"), h.Socket("raw")], h.Exports.SocketPaths);
        Assert.Equal(ExportState.Listening, h.Exports.GetState(disk.Key));

        Assert.Equal(ExportHarness.SocketMode, System.IO.File.GetUnixFileMode(disk.SocketPath));
        Assert.Equal(ExportHarness.DirectoryMode, System.IO.File.GetUnixFileMode(Path.GetDirectoryName(disk.SocketPath)!));
        Assert.Equal(ExportHarness.DirectoryMode, System.IO.File.GetUnixFileMode(h.RuntimeDirectory));
        if (ExportHarness.CanChown)
        {
            Assert.Contains($" {ExportHarness.SocketGroup} ", Stat(disk.SocketPath), StringComparison.Ordinal);
            Assert.Contains($" {ExportHarness.SocketGroup} ", Stat(Path.GetDirectoryName(disk.SocketPath)!), StringComparison.Ordinal);
        }

        var changes = new List<Guid>();
        h.Exports.StateChanged += key => { lock (changes) { changes.Add(key); } };
        var chunks = Enumerable.Range(0, 16).Select(i => ((long)i * Chunk, (byte)(0x10 + i))).ToList();
        using (VhostUserBlkFrontend guest = h.Connect("disk"))
        {
            Assert.Equal(Size, guest.Device.CapacityBytes);
            Assert.Equal(0ul, guest.Device.Features & VirtioBlkFRo);
            h.WaitForState("disk", ExportState.Connected);
            VolumeUser user = Assert.Single(h.Service.Users.GetUsers(disk.Key));
            Assert.Equal("guest", user.Kind);
            Assert.StartsWith($"pid {Environment.ProcessId} (", user.Description, StringComparison.Ordinal);
            Assert.EndsWith($"on {disk.SocketPath}", user.Description, StringComparison.Ordinal);

            Parallel.For(0, 2, q => GuestIo.Write(guest.Queues[q], chunks.Where((_, i) => i % 2 == q).ToList(), Chunk));
            Parallel.For(0, 2, q => GuestIo.Verify(guest.Queues[1 - q], chunks.Where((_, i) => i % 2 == q).ToList(), Chunk));
            GuestIo.Flush(guest.Queues[0]);
        }

        h.WaitForState("disk", ExportState.Listening);
        Assert.Empty(h.Service.Users.GetUsers(disk.Key));
        lock (changes)
        {
            Assert.True(changes.Count(k => k == disk.Key) >= 2, "connect and disconnect were announced");
        }

        h.Service.StopPool("p");
        Assert.False(System.IO.File.Exists(disk.SocketPath));
        Assert.Equal(ExportState.Stopped, h.Exports.GetState(disk.Key));
        Tool.QemuImg(h.PoolPath, "check", "disk");
        foreach ((long offset, byte pattern) in chunks)
        {
            Tool.QemuIo(h.File("disk"), "qcow2", $"read -P {pattern} {offset} {Chunk}");
        }
    }

    [Fact]
    public async Task A_snapshot_while_the_guest_reads_and_writes_on_two_queues_switches_it_to_the_overlay_unnoticed()
    {
        await using var h = new ExportHarness();
        VolumeInfo disk = h.Service.CreateVolume("p", new VolumeSpec("disk", "qcow2", Size));
        const int RoundsAfter = 10;
        using var halfway = new CountdownEvent(2);
        using var snapshotTaken = new ManualResetEventSlim();
        int[] lastRound = new int[2];
        using (VhostUserBlkFrontend guest = h.Connect("disk"))
        {
            h.WaitForState("disk", ExportState.Connected);

            // Both queues keep writing and reading back until each has done 10 rounds after the snapshot returned.
            Task[] workers = Enumerable.Range(0, 2).Select(q => Task.Factory.StartNew(() =>
            {
                int after = 0;
                for (int round = 0; after < RoundsAfter; round++)
                {
                    bool snapshotDone = snapshotTaken.IsSet;
                    var chunks = RoundChunks(q, round);
                    GuestIo.Write(guest.Queues[q], chunks, Chunk);
                    GuestIo.Verify(guest.Queues[q], chunks, Chunk);
                    if (round == 20)
                    {
                        halfway.Signal();
                    }

                    after += snapshotDone ? 1 : 0;
                    lastRound[q] = round;
                }
            }, TaskCreationOptions.LongRunning)).ToArray();

            Assert.True(halfway.Wait(TimeSpan.FromSeconds(60)), "the guest did not get going");
            SnapshotInfo snapshot = h.Service.CreateSnapshot("p", "disk", "s1");
            snapshotTaken.Set();
            await Task.WhenAll(workers).WaitAsync(TimeSpan.FromSeconds(120));
            Assert.Equal(h.File("disk"), snapshot.File);
            Assert.Equal(ExportState.Connected, h.Exports.GetState(disk.Key));
            GuestIo.Flush(guest.Queues[0]);

            // Crosswise: each queue's last round, read through the other queue.
            for (int q = 0; q < 2; q++)
            {
                GuestIo.Verify(guest.Queues[1 - q], RoundChunks(q, lastRound[q]), Chunk);
            }
        }

        VolumeInfo after = h.Service.GetVolume("p", "disk");
        Assert.Equal(h.File(".disk.1"), after.File);
        h.WaitForState("disk", ExportState.Listening);
        h.Service.StopPool("p"); // closes the export, so QEMU's tools may open the files

        Tool.QemuImg(h.PoolPath, "check", ".disk.1");
        Tool.QemuImg(h.PoolPath, "check", "disk");
        using (JsonDocument chain = JsonDocument.Parse(Tool.QemuImg(h.PoolPath, "info", "--backing-chain", "--output=json", h.File(".disk.1"))))
        {
            JsonElement[] layers = [.. chain.RootElement.EnumerateArray()];
            Assert.Equal(2, layers.Length);
            Assert.Equal(h.File(".disk.1"), layers[0].GetProperty("filename").GetString());
            Assert.Equal("disk", layers[0].GetProperty("backing-filename").GetString());
            Assert.Equal(h.File("disk"), layers[1].GetProperty("filename").GetString());
            Assert.Equal(Size, layers[0].GetProperty("virtual-size").GetInt64());
        }

        for (int q = 0; q < 2; q++)
        {
            foreach ((long offset, byte pattern) in RoundChunks(q, lastRound[q]))
            {
                Tool.QemuIo(h.File(".disk.1"), "qcow2", $"read -P {pattern} {offset} {Chunk}");

                // The base does not have the last round's data: the writes after the snapshot went into the overlay.
                string baseRead = Tool.Run("qemu-io", h.PoolPath, "-r", "-f", "qcow2", "-c", $"read -P {pattern} {offset} {Chunk}", h.File("disk")).Output;
                Assert.Contains("Pattern verification failed", baseRead, StringComparison.Ordinal);
            }
        }
    }

    [Fact]
    public async Task Delete_and_stop_are_refused_naming_the_connected_guest_and_work_once_it_disconnects()
    {
        await using var h = new ExportHarness();
        VolumeInfo disk = h.Service.CreateVolume("p", new VolumeSpec("disk", "qcow2", Size));
        h.Service.CreateVolume("p", new VolumeSpec("other", "qcow2", Size));
        h.Service.CreateSnapshot("p", "disk", "s1");
        using (VhostUserBlkFrontend guest = h.Connect("disk"))
        {
            h.WaitForState("disk", ExportState.Connected);
            string pid = $"pid {Environment.ProcessId} (";
            Assert.Contains(pid, Expect.Error(StorageErrorKind.InUse, () => h.Service.DeleteVolume("p", "disk")).Message, StringComparison.Ordinal);
            Assert.Contains(pid, Expect.Error(StorageErrorKind.InUse, () => h.Service.StopPool("p")).Message, StringComparison.Ordinal);
            Assert.Contains(pid, Expect.Error(StorageErrorKind.InUse, () => h.Service.RevertToSnapshot("p", "disk", "s1")).Message, StringComparison.Ordinal);
            Assert.Contains(pid, (await Expect.ErrorAsync(StorageErrorKind.InUse, () => h.Service.WipeAsync("p", "disk"))).Message, StringComparison.Ordinal);
            using (var source = System.IO.File.OpenHandle(h.File("other")))
            {
                Assert.Contains(pid, (await Expect.ErrorAsync(StorageErrorKind.InUse, () => h.Service.UploadAsync("p", "disk", source))).Message, StringComparison.Ordinal);
            }

            Assert.Contains(pid, Expect.Error(StorageErrorKind.InUse, () => h.Service.CloneVolumeAsync("p", "disk", "linked", linked: true).GetAwaiter().GetResult()).Message, StringComparison.Ordinal);
            Assert.True(System.IO.File.Exists(disk.SocketPath));

            // The refusals changed nothing for the guest.
            var chunks = new List<(long, byte)> { (0, 0x42) };
            GuestIo.Write(guest.Queues[0], chunks, Chunk);
            GuestIo.Verify(guest.Queues[1], chunks, Chunk);

            // A volume nobody is connected to can go while another is in use; its socket goes with it.
            h.Service.DeleteVolume("p", "other");
            Assert.False(System.IO.File.Exists(h.Socket("other")));
        }

        h.WaitForState("disk", ExportState.Listening);
        h.Service.RevertToSnapshot("p", "disk", "s1");
        Assert.True(System.IO.File.Exists(disk.SocketPath), "the reverted volume is exported again");
        h.Service.DeleteVolume("p", "disk");
        Assert.False(System.IO.File.Exists(disk.SocketPath));
        Assert.Equal(ExportState.Stopped, h.Exports.GetState(disk.Key));
        Assert.Empty(Directory.GetFiles(h.PoolPath));
        h.Service.StopPool("p");
        Assert.Empty(h.Exports.SocketPaths);
    }

    [Fact]
    public async Task Growing_a_volume_tells_the_connected_guest_and_shrinking_it_under_the_guest_is_refused()
    {
        await using var h = new ExportHarness();
        VolumeInfo disk = h.Service.CreateVolume("p", new VolumeSpec("disk", "qcow2", 16 << 20));
        using (BlkGuest guest = BlkGuest.Connect(disk.SocketPath).Start())
        {
            h.WaitForState("disk", ExportState.Connected);
            guest.ConfigChanged.Reset();
            h.Service.ResizeVolume("p", "disk", 48 << 20);
            Assert.True(guest.ConfigChanged.Wait(TimeSpan.FromSeconds(10)), "no config change reached the guest");
            Assert.Equal((48L << 20) / 512, guest.ConfigCapacity);

            // The guest uses the new space at once (just past the old end).
            byte[] tail = new byte[4096];
            Array.Fill(tail, (byte)0x77);
            Assert.Equal(0, guest.Request(LibvirtStorage.Vhost.Blk.VirtioBlkRequestType.Out, (16ul << 20) / 512, tail).Status);
            Assert.Equal(tail, guest.Request(LibvirtStorage.Vhost.Blk.VirtioBlkRequestType.In, (16ul << 20) / 512, inputLength: 4096).Input);

            var ex = Expect.Error(StorageErrorKind.InUse, () => h.Service.ResizeVolume("p", "disk", 8 << 20, allowShrink: true));
            Assert.Contains($"pid {Environment.ProcessId}", ex.Message, StringComparison.Ordinal);
            Assert.Equal(48L << 20, h.Service.GetVolume("p", "disk").Capacity);
        }

        // Without a guest the export is rebuilt at the smaller size.
        h.WaitForState("disk", ExportState.Listening);
        h.Service.ResizeVolume("p", "disk", 32 << 20, allowShrink: true);
        using VhostUserBlkFrontend next = h.Connect("disk", queues: 1);
        Assert.Equal(32L << 20, next.Device.CapacityBytes);
        GuestIo.Verify(next.Queues[0], [(16 << 20, 0x77)], 4096);
    }

    [Fact]
    public async Task A_volume_that_backs_another_is_exported_read_only_and_writable_again_when_that_one_is_gone()
    {
        await using var h = new ExportHarness();
        h.Service.CreateVolume("p", new VolumeSpec("base", "qcow2", Size));
        using (VhostUserBlkFrontend guest = h.Connect("base", queues: 1))
        {
            GuestIo.Write(guest.Queues[0], [(0, 0x5b)], Chunk);
            GuestIo.Flush(guest.Queues[0]);
        }

        h.WaitForState("base", ExportState.Listening);
        await h.Service.CloneVolumeAsync("p", "base", "linked", linked: true);
        h.Service.CreateVolume("p", new VolumeSpec("over", "qcow2", null, BackingVolume: "base"));
        await h.Service.CloneVolumeAsync("p", "base", "full"); // reads base while two exports hold it read-only

        using (VhostUserBlkFrontend guest = h.Connect("base", queues: 1))
        {
            Assert.NotEqual(0ul, guest.Device.Features & VirtioBlkFRo);
            GuestIo.Verify(guest.Queues[0], [(0, 0x5b)], Chunk);
        }

        foreach (string volume in new[] { "linked", "over", "full" })
        {
            using VhostUserBlkFrontend guest = h.Connect(volume, queues: 1);
            Assert.Equal(0ul, guest.Device.Features & VirtioBlkFRo);
            GuestIo.Verify(guest.Queues[0], [(0, 0x5b)], Chunk);
            GuestIo.Write(guest.Queues[0], [(Chunk, 0x60)], Chunk);
            GuestIo.Flush(guest.Queues[0]);
        }

        h.WaitForState("full", ExportState.Listening);
        h.Service.DeleteVolume("p", "linked");
        h.Service.DeleteVolume("p", "over");
        using (VhostUserBlkFrontend guest = h.Connect("base", queues: 1))
        {
            Assert.Equal(0ul, guest.Device.Features & VirtioBlkFRo);
            GuestIo.Write(guest.Queues[0], [(Chunk, 0x61)], Chunk);
        }

        h.WaitForState("base", ExportState.Listening);
        h.Service.StopPool("p");
        Tool.QemuIo(h.File("base"), "qcow2", $"read -P 0x5b 0 {Chunk}", $"read -P 0x61 {Chunk} {Chunk}");
        Tool.QemuIo(h.File("full"), "qcow2", $"read -P 0x5b 0 {Chunk}", $"read -P 0x60 {Chunk} {Chunk}");
    }

    [Fact]
    public async Task A_full_clone_and_a_download_of_a_volume_in_use_copy_a_consistent_disk_while_its_guest_carries_on()
    {
        await using var h = new ExportHarness();
        h.Service.CreateVolume("p", new VolumeSpec("disk", "qcow2", 4 << 20));
        string download = Path.Combine(h.Root, "download.raw");
        using (VhostUserBlkFrontend guest = h.Connect("disk"))
        {
            h.WaitForState("disk", ExportState.Connected);
            GuestIo.Write(guest.Queues[0], [(0, 0x31)], Chunk);
            await h.Service.CloneVolumeAsync("p", "disk", "copy");
            using (var destination = System.IO.File.OpenHandle(download, FileMode.Create, FileAccess.Write))
            {
                await h.Service.DownloadAsync("p", "disk", destination);
            }

            // The guest carries on, and the copies hold what it had written.
            GuestIo.Write(guest.Queues[1], [(Chunk, 0x32)], Chunk);
            GuestIo.Verify(guest.Queues[0], [(0, 0x31), (Chunk, 0x32)], Chunk);
        }

        Tool.QemuIo(download, "raw", $"read -P 0x31 0 {Chunk}", $"read -P 0 {Chunk} {Chunk}");
        using (VhostUserBlkFrontend copy = h.Connect("copy", queues: 1))
        {
            GuestIo.Verify(copy.Queues[0], [(0, 0x31), (Chunk, 0)], Chunk);
        }
    }

    [Fact]
    public async Task Refresh_adopts_an_overlay_over_a_listening_volume_but_not_over_one_with_a_guest()
    {
        await using var h = new ExportHarness();
        h.Service.CreateVolume("p", new VolumeSpec("idle", "qcow2", Size));
        h.Service.CreateVolume("p", new VolumeSpec("busy", "qcow2", Size));
        Tool.QemuImg(h.PoolPath, "create", "-f", "qcow2", "-u", "-b", "idle", "-F", "qcow2", "idle-overlay", "64M");
        Tool.QemuImg(h.PoolPath, "create", "-f", "qcow2", "-u", "-b", "busy", "-F", "qcow2", "busy-overlay", "64M");
        using (VhostUserBlkFrontend guest = h.Connect("busy", queues: 1))
        {
            h.WaitForState("busy", ExportState.Connected);
            RefreshReport report = h.Service.RefreshPool("p");
            Assert.Equal(["idle-overlay"], report.Adopted);
            StorageProblem problem = Assert.Single(report.Problems);
            Assert.Equal("busy-overlay", problem.File);
            Assert.Contains($"pid {Environment.ProcessId}", problem.Message, StringComparison.Ordinal);
            Assert.True(System.IO.File.Exists(h.Socket("idle-overlay")));
            Assert.False(System.IO.File.Exists(h.Socket("busy-overlay")));
        }

        using (VhostUserBlkFrontend idle = h.Connect("idle", queues: 1))
        {
            Assert.NotEqual(0ul, idle.Device.Features & VirtioBlkFRo);
        }
    }

    [Fact]
    public async Task A_read_only_guest_keeps_its_mode_until_it_disconnects_then_the_volume_is_writable()
    {
        await using var h = new ExportHarness();
        h.Service.CreateVolume("p", new VolumeSpec("base", "qcow2", Size));
        await h.Service.CloneVolumeAsync("p", "base", "linked", linked: true);
        using (VhostUserBlkFrontend guest = h.Connect("base", queues: 1))
        {
            h.WaitForState("base", ExportState.Connected);
            Assert.NotEqual(0ul, guest.Device.Features & VirtioBlkFRo);
            h.Service.DeleteVolume("p", "linked");
            GuestIo.Verify(guest.Queues[0], [(0, 0)], Chunk);
        }

        Assert.True(SpinWait.SpinUntil(() =>
        {
            try
            {
                using VhostUserBlkFrontend again = h.Connect("base", queues: 1);
                return (again.Device.Features & VirtioBlkFRo) == 0;
            }
            catch (IOException)
            {
                return false; // between the old and the new server
            }
            catch (SocketException)
            {
                return false;
            }
        }, 10_000), "the export did not become writable");
    }

    [Fact]
    public async Task After_a_restart_the_exports_come_back_at_the_same_paths_with_the_data_and_stale_sockets_are_replaced()
    {
        await using var h = new ExportHarness();
        VolumeInfo disk = h.Service.CreateVolume("p", new VolumeSpec("disk", "qcow2", Size));
        h.Service.CreateVolume("p", new VolumeSpec("killed", "raw", 1 << 20));
        using (VhostUserBlkFrontend guest = h.Connect("disk"))
        {
            // The daemon stops under a connected guest (SIGTERM): the connection ends, the write is flushed.
            GuestIo.Write(guest.Queues[1], [(3 * Chunk, 0x3c)], Chunk);
            h.WaitForState("disk", ExportState.Connected);
            await h.Exports.DisposeAsync();
            Assert.Equal(ExportState.Stopped, h.Exports.GetState(disk.Key));
            Assert.Empty(h.Service.Users.GetUsers(disk.Key));
        }

        Assert.False(System.IO.File.Exists(disk.SocketPath), "a stopped daemon leaves no socket");
        Tool.QemuIo(h.File("disk"), "qcow2", $"read -P 0x3c {3 * Chunk} {Chunk}");

        // A killed daemon leaves its socket file behind; nobody listens on it any more.
        // (.NET unlinks the path it bound when the socket is disposed, so bind elsewhere and move it into place.)
        using (var stale = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified))
        {
            string bound = Path.Combine(h.Root, "stale.sock");
            stale.Bind(new UnixDomainSocketEndPoint(bound));
            System.IO.File.Move(bound, h.Socket("killed"));
        }

        Assert.True(System.IO.File.Exists(h.Socket("killed")));
        await h.RestartAsync();
        Assert.Equal([h.Socket("disk"), h.Socket("killed")], h.Exports.SocketPaths);
        using (VhostUserBlkFrontend guest = h.Connect("disk"))
        {
            GuestIo.Verify(guest.Queues[0], [(3 * Chunk, 0x3c)], Chunk);
        }

        using (VhostUserBlkFrontend guest = h.Connect("killed", queues: 1))
        {
            Assert.Equal(1L << 20, guest.Device.CapacityBytes);
        }
    }

    /// <summary>Queue q owns chunks q, q+2, ...; round r rewrites 4 of them (one of 8 groups) with a pattern of its own.</summary>
    private static List<(long Offset, byte Pattern)> RoundChunks(int queue, int round) =>
        Enumerable.Range(0, 4).Select(i => ((long)((round % 8) * 8 + i * 2 + queue) * Chunk, (byte)(1 + queue * 128 + round % 120))).ToList();

    private static string Stat(string path) => " " + Tool.Run("stat", "/", "-c", "%u %g %a", path).Output.Trim() + " ";
}
