using System.Text.Json;
using LibvirtStorage.Images.Tests.Infrastructure;
using LibvirtStorage.TestSupport;
using Xunit;

namespace LibvirtStorage.Cli.Tests.Service;

/// <summary>lvstor (in-process, Program.Run with --bus) against the real StorageBusServer on a private dbus-daemon.</summary>
public sealed class ServiceCliEndToEndTests
{
    private const long M = 1 << 20;

    private sealed class Cli(string address)
    {
        public (int Code, string Out, string Err) Run(params string[] args)
        {
            using var output = new StringWriter();
            using var error = new StringWriter();
            int code = Program.Run([.. args, "--bus", address], output, error, isTerminal: false);
            return (code, output.ToString(), error.ToString());
        }

        /// <summary>Runs a command that must succeed and returns its stdout.</summary>
        public string Ok(params string[] args)
        {
            var r = Run(args);
            Assert.True(r.Code == 0, $"lvstor {string.Join(' ', args)} exited {r.Code}: {r.Err}");
            Assert.Equal(string.Empty, r.Err);
            return r.Out;
        }

        public JsonElement Json(params string[] args)
        {
            using JsonDocument doc = JsonDocument.Parse(Ok([.. args, "--json"]));
            return doc.RootElement.Clone();
        }
    }

    [BusFact]
    public async Task Pools_define_start_list_info_autostart_destroy_undefine()
    {
        await using LvstordHost host = await LvstordHost.StartAsync();
        var cli = new Cli(host.Address);
        string dir = host.PoolDirectory("p1");

        Assert.Equal("Pool p1 defined\n", cli.Ok("pool-define-as", "p1", dir));
        Assert.True(Directory.Exists(dir));
        Assert.Equal(0, cli.Json("pool-list").GetArrayLength());
        JsonElement all = cli.Json("pool-list", "--all");
        Assert.Equal("p1", all[0].GetProperty("name").GetString());
        Assert.False(all[0].GetProperty("active").GetBoolean());
        Assert.Contains("inactive", cli.Ok("pool-list", "--inactive"), StringComparison.Ordinal);

        Assert.Equal("Pool p1 started\n", cli.Ok("pool-start", "p1"));
        JsonElement info = cli.Json("pool-info", "p1");
        Assert.True(info.GetProperty("active").GetBoolean());
        Assert.Equal(dir, info.GetProperty("path").GetString());
        Assert.True(info.GetProperty("capacity").GetUInt64() > 0);
        string human = cli.Ok("pool-info", "p1");
        Assert.Contains("State:", human, StringComparison.Ordinal);
        Assert.Contains("running", human, StringComparison.Ordinal);
        string list = cli.Ok("pool-list");
        Assert.Contains("p1", list, StringComparison.Ordinal);
        Assert.Contains("active", list, StringComparison.Ordinal);

        // pool-refresh adopts a new image file and reports one whose backing file is missing.
        ProcessRunner.QemuImg(dir, "create", "-q", "-f", "qcow2", "extra", "1M");
        ProcessRunner.QemuImg(dir, "create", "-q", "-f", "qcow2", "-u", "-b", "gone", "-F", "raw", "orphan", "1M");
        JsonElement refreshed = cli.Json("pool-refresh", "p1");
        Assert.Equal(["extra"], refreshed.GetProperty("adopted").EnumerateArray().Select(x => x.GetString()!).ToArray());
        Assert.Contains("orphan", refreshed.GetProperty("problems")[0].GetProperty("file").GetString(), StringComparison.Ordinal);
        Assert.False(string.IsNullOrEmpty(refreshed.GetProperty("problems")[0].GetProperty("message").GetString()));
        Assert.Contains("left alone", cli.Ok("pool-refresh", "p1"), StringComparison.Ordinal);
        Assert.Equal("qcow2", cli.Json("vol-info", "extra", "--pool", "p1").GetProperty("format").GetString());

        // A local file that cannot be opened: exit 1, the OS's message, no job.
        var noFile = cli.Run("vol-upload", "extra", Path.Combine(dir, "..", "missing.img"), "--pool", "p1");
        Assert.Equal(1, noFile.Code);
        Assert.StartsWith("lvstor: error: ", noFile.Err, StringComparison.Ordinal);
        Assert.Contains("missing.img", noFile.Err, StringComparison.Ordinal);

        Assert.True(cli.Json("pool-autostart", "p1").GetProperty("autostart").GetBoolean());
        Assert.False(cli.Json("pool-autostart", "p1", "--disable").GetProperty("autostart").GetBoolean());

        // Undefine is refused while the pool runs: Invalid (exit 6) with lvstord's message.
        var refused = cli.Run("pool-undefine", "p1");
        Assert.Equal(6, refused.Code);
        Assert.StartsWith("lvstor: error: ", refused.Err, StringComparison.Ordinal);

        Assert.Equal("Pool p1 destroyed\n", cli.Ok("pool-destroy", "p1"));
        Assert.Equal(6, cli.Run("vol-create-as", "p1", "late", "1M").Code); // pool not active: Invalid
        Assert.Equal("Pool p1 has been undefined\n", cli.Ok("pool-undefine", "p1"));
        Assert.Equal(0, cli.Json("pool-list", "--all").GetArrayLength());
        Assert.True(Directory.Exists(dir), "undefine leaves the directory");
    }

    [BusFact]
    public async Task Unknown_pool_is_not_found_and_an_absent_lvstord_is_service_unavailable()
    {
        await using LvstordHost host = await LvstordHost.StartAsync();
        var cli = new Cli(host.Address);
        var r = cli.Run("pool-info", "nope");
        Assert.Equal(3, r.Code);
        Assert.StartsWith("lvstor: error: ", r.Err, StringComparison.Ordinal);
        Assert.Contains("nope", r.Err, StringComparison.Ordinal);
        Assert.Equal(string.Empty, r.Out);

        r = cli.Run("vol-list", "nope", "--json");
        Assert.Equal(3, r.Code);

        r = cli.Run("vol-create-as", "nope", "v", "0");
        Assert.Equal(2, r.Code);
        Assert.Equal("lvstor: error: capacity must be greater than 0\n", r.Err);

        using PrivateBus empty = PrivateBus.Start();
        var absent = new Cli(empty.Address).Run("status");
        Assert.Equal(13, absent.Code);
        Assert.Equal($"lvstor: error: lvstord is not running on {empty.Address}: start it with `systemctl start lvstord`\n", absent.Err);
    }

    [BusFact]
    public async Task Vol_clone_with_a_snapshot_copies_or_links_the_volume_as_it_was_then()
    {
        await using LvstordHost host = await LvstordHost.StartAsync();
        var cli = new Cli(host.Address);
        cli.Ok("pool-define-as", "p", host.PoolDirectory("p"));
        cli.Ok("pool-start", "p");
        cli.Ok("vol-create-as", "p", "disk", "4M", "--format", "qcow2");
        string then = Path.Combine(host.Root, "then.img");
        string now = Path.Combine(host.Root, "now.img");
        File.WriteAllBytes(then, Pattern((int)(4 * M), 1));
        File.WriteAllBytes(now, Pattern((int)(4 * M), 2));
        cli.Ok("vol-upload", "disk", then, "--pool", "p");
        cli.Ok("snapshot", "disk", "s1", "--pool", "p");
        cli.Ok("vol-upload", "disk", now, "--pool", "p");

        Assert.Equal("Vol old cloned from disk at snapshot s1\n", cli.Ok("vol-clone", "disk", "old", "--pool", "p", "--snapshot", "s1", "--format", "raw"));
        JsonElement lnk = cli.Json("vol-clone", "disk", "old-lnk", "--pool", "p", "--snapshot", "s1", "--linked");
        Assert.Equal("disk", lnk.GetProperty("backing_chain")[0].GetProperty("volume").GetString());
        Assert.Equal("s1", lnk.GetProperty("backing_chain")[0].GetProperty("snapshot").GetString());
        Assert.Equal("raw", cli.Json("vol-info", "old", "--pool", "p").GetProperty("format").GetString());
        foreach (string clone in new[] { "old", "old-lnk" })
        {
            string copy = Path.Combine(host.Root, clone + ".img");
            cli.Ok("vol-download", clone, copy, "--pool", "p");
            Assert.Equal(File.ReadAllBytes(then), File.ReadAllBytes(copy));
        }

        // The source reads its newer data, and an unknown snapshot is NotFound (exit 3) with nothing made.
        string current = Path.Combine(host.Root, "current.img");
        cli.Ok("vol-download", "disk", current, "--pool", "p");
        Assert.Equal(File.ReadAllBytes(now), File.ReadAllBytes(current));
        var missing = cli.Run("vol-clone", "disk", "x", "--pool", "p", "--snapshot", "nope");
        Assert.Equal(3, missing.Code);
        Assert.Contains("nope", missing.Err, StringComparison.Ordinal);
        Assert.Equal(3, cli.Run("vol-info", "x", "--pool", "p").Code);
    }

    private static byte[] Pattern(int length, int seed)
    {
        var bytes = new byte[length];
        new Random(seed).NextBytes(bytes);
        return bytes;
    }

    /// <summary>Bytes the file occupies on disk (st_blocks * 512).</summary>
    private static long Allocated(string path) =>
        long.Parse(ProcessRunner.Run("stat", ["-c", "%b", path]).Expect().StdOut.Trim(), System.Globalization.CultureInfo.InvariantCulture) * 512;

    [BusFact]
    public async Task Volumes_snapshots_clones_transfers_and_users_through_the_cli()
    {
        await using LvstordHost host = await LvstordHost.StartAsync();
        var cli = new Cli(host.Address);
        string dir = host.PoolDirectory("p");
        cli.Ok("pool-define-as", "p", dir);
        cli.Ok("pool-start", "p");

        // vol-create-as: raw, qcow2, and qcow2 on a backing volume (format defaults to qcow2 then).
        Assert.Equal("Vol base created\n", cli.Ok("vol-create-as", "p", "base", "8M"));
        JsonElement disk = cli.Json("vol-create-as", "p", "disk", "16M", "--format", "qcow2");
        Assert.Equal("qcow2", disk.GetProperty("format").GetString());
        Assert.Equal((ulong)(16 * M), disk.GetProperty("capacity").GetUInt64());
        JsonElement child = cli.Json("vol-create-as", "p", "child", "8M", "--backing-vol", "base");
        Assert.Equal("qcow2", child.GetProperty("format").GetString());
        Assert.Equal("base", child.GetProperty("backing_chain")[0].GetProperty("volume").GetString());
        Assert.True(cli.Json("vol-info", "base", "--pool", "p").GetProperty("read_only").GetBoolean());
        Assert.Equal(4, cli.Run("vol-create-as", "p", "disk", "1M").Code); // Exists

        JsonElement raw = cli.Json("vol-info", "base", "--pool", "p");
        Assert.Equal("raw", raw.GetProperty("format").GetString());
        using (JsonDocument qemu = JsonDocument.Parse(ProcessRunner.QemuImg(dir, "info", "-U", "--output=json", raw.GetProperty("file").GetString()!)))
        {
            Assert.Equal(8 * M, qemu.RootElement.GetProperty("virtual-size").GetInt64());
            Assert.Equal("raw", qemu.RootElement.GetProperty("format").GetString());
        }

        // vol-list, and vol-info by name, key and path agree.
        JsonElement volumes = cli.Json("vol-list", "p");
        Assert.Equal(["base", "child", "disk"], volumes.EnumerateArray().Select(v => v.GetProperty("name").GetString()!).ToArray());
        string listed = cli.Ok("vol-list", "p");
        Assert.Contains(disk.GetProperty("path").GetString()!, listed, StringComparison.Ordinal);
        Assert.Contains("16.00 MiB", cli.Ok("vol-list", "p", "--details"), StringComparison.Ordinal);
        string key = cli.Ok("vol-key", "disk", "--pool", "p").Trim();
        string socket = cli.Ok("vol-path", "disk", "--pool", "p").Trim();
        Assert.Equal(disk.GetProperty("key").GetString(), key);
        Assert.Equal(disk.GetProperty("path").GetString(), socket);
        Assert.Equal("disk", cli.Json("vol-info", key).GetProperty("name").GetString());
        Assert.Equal("disk", cli.Json("vol-info", socket).GetProperty("name").GetString());
        Assert.Contains("Capacity:", cli.Ok("vol-info", "disk", "--pool", "p"), StringComparison.Ordinal);
        Assert.Equal(3, cli.Run("vol-info", "nope", "--pool", "p").Code);

        // vol-resize: absolute, --delta, and shrinking refused without --shrink (lvstord's Invalid).
        Assert.Equal((ulong)(24 * M), cli.Json("vol-resize", "disk", "8M", "--delta", "--pool", "p").GetProperty("capacity").GetUInt64());
        var shrink = cli.Run("vol-resize", "disk", "16M", "--pool", "p");
        Assert.Equal(6, shrink.Code);
        Assert.StartsWith("lvstor: error: ", shrink.Err, StringComparison.Ordinal);
        Assert.Equal((ulong)(24 * M), cli.Json("vol-info", "disk", "--pool", "p").GetProperty("capacity").GetUInt64());
        var readOnly = cli.Run("vol-resize", "base", "4M", "--delta", "--pool", "p");
        Assert.Equal(5, readOnly.Code); // base backs child: InUse, naming it
        Assert.Contains("child", readOnly.Err, StringComparison.Ordinal);
        Assert.Equal((ulong)(20 * M), cli.Json("vol-resize", "disk", "-4M", "--shrink", "--pool", "p").GetProperty("capacity").GetUInt64());

        // snapshot + snapshot-list.
        cli.Ok("snapshot", "disk", "s1", "--pool", "p");
        JsonElement snapshots = cli.Json("snapshot-list", "disk", "--pool", "p");
        Assert.Equal("s1", snapshots[0].GetProperty("name").GetString());
        Assert.Contains("s1", cli.Ok("snapshot-list", "disk", "--pool", "p"), StringComparison.Ordinal);

        // vol-upload / vol-download round trip: data in two places of a sparse local file.
        string local = Path.Combine(host.Root, "up.img");
        byte[] a = Pattern((int)M, 1), b = Pattern((int)M / 2, 2);
        using (FileStream f = File.Create(local))
        {
            f.SetLength(20 * M);
            f.Position = M;
            f.Write(a);
            f.Position = 15 * M;
            f.Write(b);
        }

        JsonElement up = cli.Json("vol-upload", "disk", local, "--pool", "p");
        Assert.Equal("completed", up.GetProperty("state").GetString());
        Assert.Equal("upload", up.GetProperty("type").GetString());
        Assert.Equal((ulong)(20 * M), up.GetProperty("bytes_done").GetUInt64());
        string down = Path.Combine(host.Root, "down.img");
        Assert.StartsWith("Downloaded ", cli.Ok("vol-download", "disk", down, "--pool", "p"), StringComparison.Ordinal);
        Assert.Equal(File.ReadAllBytes(local), File.ReadAllBytes(down));
        Assert.True(Allocated(down) < 4 * M, $"download is not sparse: {Allocated(down)} bytes allocated");

        // A part: --offset and --length.
        string part = Path.Combine(host.Root, "part.img");
        cli.Ok("vol-download", "disk", part, "--pool", "p", "--offset", "1M", "--length", "1M");
        Assert.Equal(a, File.ReadAllBytes(part));

        // revert: refused while a newer snapshot exists, then with --discard-newer the uploaded data is gone.
        cli.Ok("snapshot", "disk", "s2", "--pool", "p");
        var revert = cli.Run("revert", "disk", "s1", "--pool", "p");
        Assert.Equal(6, revert.Code);
        Assert.Contains("s2", revert.Err, StringComparison.Ordinal);
        Assert.Equal("Volume reverted to snapshot s1\n", cli.Ok("revert", "disk", "s1", "--pool", "p", "--discard-newer"));
        Assert.Equal(["s1"], cli.Json("snapshot-list", "disk", "--pool", "p").EnumerateArray().Select(s => s.GetProperty("name").GetString()!).ToArray());
        cli.Ok("vol-download", "disk", down, "--pool", "p");
        Assert.All(File.ReadAllBytes(down), x => Assert.Equal(0, x));

        // vol-clone: full (as raw) and linked.
        cli.Ok("vol-upload", "disk", local, "--pool", "p");
        JsonElement full = cli.Json("vol-clone", "disk", "full", "--pool", "p", "--format", "raw");
        Assert.Equal("raw", full.GetProperty("format").GetString());
        Assert.Equal(0, full.GetProperty("backing_chain").GetArrayLength());
        Assert.Equal("Vol lnk cloned from disk\n", cli.Ok("vol-clone", "disk", "lnk", "--pool", "p", "--linked"));
        JsonElement lnk = cli.Json("vol-info", "lnk", "--pool", "p");
        Assert.Equal("disk", lnk.GetProperty("backing_chain")[0].GetProperty("volume").GetString());
        foreach (string clone in new[] { "full", "lnk" })
        {
            string copy = Path.Combine(host.Root, clone + ".img");
            cli.Ok("vol-download", clone, copy, "--pool", "p");
            Assert.Equal(File.ReadAllBytes(local), File.ReadAllBytes(copy));
        }

        // vol-delete is refused while the linked clone backs onto disk: InUse, naming the user.
        var delete = cli.Run("vol-delete", "disk", "--pool", "p");
        Assert.Equal(5, delete.Code);
        Assert.StartsWith("lvstor: error: ", delete.Err, StringComparison.Ordinal);
        Assert.Contains("lnk", delete.Err, StringComparison.Ordinal);

        // status: counters and who uses what.
        JsonElement status = cli.Json("status");
        Assert.Equal(1u, status.GetProperty("pools").GetUInt32());
        Assert.Equal(1u, status.GetProperty("active_pools").GetUInt32());
        Assert.Equal(5u, status.GetProperty("volumes").GetUInt32());
        Assert.Contains(status.GetProperty("users").EnumerateArray(), u =>
            u.GetProperty("volume").GetString() == "disk" && u.GetProperty("kind").GetString() == "backing" && u.GetProperty("who").GetString()!.Contains("lnk", StringComparison.Ordinal));
        string humanStatus = cli.Ok("status");
        Assert.Contains("backing", humanStatus, StringComparison.Ordinal);
        Assert.Contains("lnk", humanStatus, StringComparison.Ordinal);

        // vol-wipe: zeroes everywhere.
        JsonElement wipe = cli.Json("vol-wipe", "full", "--pool", "p");
        Assert.Equal("wipe", wipe.GetProperty("type").GetString());
        Assert.Equal("completed", wipe.GetProperty("state").GetString());
        string wiped = Path.Combine(host.Root, "wiped.img");
        cli.Ok("vol-download", "full", wiped, "--pool", "p");
        Assert.All(File.ReadAllBytes(wiped), x => Assert.Equal(0, x));

        // job-list shows the recent jobs.
        JsonElement jobs = cli.Json("job-list");
        string[] types = jobs.EnumerateArray().Select(j => j.GetProperty("type").GetString()!).Distinct().Order().ToArray();
        Assert.Equal(["clone", "download", "upload", "wipe"], types);
        Assert.Contains("completed", cli.Ok("job-list"), StringComparison.Ordinal);

        // Deleting in dependency order works.
        Assert.Equal("Vol lnk deleted\n", cli.Ok("vol-delete", "lnk", "--pool", "p"));
        Assert.True(cli.Json("vol-delete", "disk", "--pool", "p").GetProperty("deleted").GetBoolean());
        Assert.Equal(3, cli.Run("vol-info", key).Code);
    }
}
