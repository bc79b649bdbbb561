using System.Diagnostics;
using System.Text.Json;
using LibvirtStorage.TestSupport;

namespace LibvirtStorage.Daemon.Tests;

/// <summary>One private dbus-daemon for the process tests.</summary>
public sealed class BusFixture : IDisposable
{
    public PrivateBus? Bus { get; } = PrivateBus.MissingReason is null ? PrivateBus.Start() : null;

    public void Dispose() => Bus?.Dispose();
}

/// <summary>The built lvstord as a process against a real private bus, with a NOTIFY_SOCKET like systemd's.</summary>
public sealed class DaemonProcessTests(BusFixture fixture) : IClassFixture<BusFixture>, IDisposable
{
    private const string BusName = "org.lvstor.Storage1";
    private readonly string _dir = Directory.CreateTempSubdirectory("lvstord-test-").FullName;

    private string Address => fixture.Bus!.Address;

    private string StateDir => Path.Combine(_dir, "state");

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [BusFact]
    public async Task It_owns_the_name_reports_ready_and_stops_cleanly_on_SIGTERM()
    {
        string config = WriteConfig("tank");
        using var notify = new NotifySocket(Path.Combine(_dir, "notify"));
        using DaemonProcess daemon = DaemonProcess.Start(Arguments(config), notify.Path);

        await notify.WaitForAsync("READY=1", daemon);
        Assert.True(await NameHasOwnerAsync(), "READY=1 came before org.lvstor.Storage1 was owned");
        Assert.Equal(["tank"], PoolsInInventory());
        Assert.True(Directory.Exists(Path.Combine(_dir, "pools", "tank")));

        daemon.Signal(DaemonProcess.SigTerm);
        await notify.WaitForAsync("STOPPING=1", daemon);
        Assert.Equal(0, await daemon.WaitForExitAsync());

        Assert.Equal(["tank"], PoolsInInventory());
        Assert.False(await NameHasOwnerAsync());
        Assert.Contains("stopped", daemon.StandardOutput, StringComparison.Ordinal);
        Assert.Equal("", daemon.StandardError);
    }

    [BusFact]
    public async Task A_killed_daemon_starts_again_with_its_pools_and_leaves_them_alone()
    {
        string config = WriteConfig("tank");
        using var notify = new NotifySocket(Path.Combine(_dir, "notify"));
        using (DaemonProcess first = DaemonProcess.Start(Arguments(config), notify.Path))
        {
            await notify.WaitForAsync("READY=1", first);
            first.Signal(DaemonProcess.SigKill);
            Assert.Equal(137, await first.WaitForExitAsync());
        }

        using DaemonProcess second = DaemonProcess.Start(Arguments(config), notify.Path);
        await notify.WaitForAsync("READY=1", second);
        Assert.Equal(["tank"], PoolsInInventory());
        Assert.DoesNotContain("defined pool", second.StandardOutput, StringComparison.Ordinal);
        second.Signal(DaemonProcess.SigTerm);
        Assert.Equal(0, await second.WaitForExitAsync());
    }

    [BusFact]
    public async Task A_second_daemon_is_refused_while_the_name_is_owned()
    {
        using var notify = new NotifySocket(Path.Combine(_dir, "notify"));
        using DaemonProcess first = DaemonProcess.Start(Arguments(WriteConfig("tank")), notify.Path);
        await notify.WaitForAsync("READY=1", first);

        (int code, _, string stderr) = await DaemonProcess.RunAsync(
            "--config", WriteConfig("other", "other.yaml"), "--bus", Address, "--state-dir", Path.Combine(_dir, "state2"), "--runtime-dir", Path.Combine(_dir, "run2"));

        Assert.Equal(69, code);
        Assert.StartsWith($"lvstord: the bus name {BusName} is already owned by connection :", stderr.Trim(), StringComparison.Ordinal);
        Assert.EndsWith($"is another lvstord running? stop it first (bus {Address})", stderr.Trim(), StringComparison.Ordinal);
        Assert.True(await NameHasOwnerAsync());
        first.Signal(DaemonProcess.SigTerm);
        Assert.Equal(0, await first.WaitForExitAsync());
    }

    [BusFact]
    public async Task Pools_and_volumes_made_over_DBus_survive_kill_9_and_their_exports_listen_again()
    {
        string config = WriteConfig("tank");
        string socket = Path.Combine(_dir, "run", "tank", "vm1.sock");
        using var notify = new NotifySocket(Path.Combine(_dir, "notify"));
        using (DaemonProcess first = DaemonProcess.Start(Arguments(config), notify.Path))
        {
            await notify.WaitForAsync("READY=1", first);
            string extra = await BusctlAsync("call", BusName, "/org/lvstor/Storage1", "org.lvstor.Storage1.Manager", "DefinePool", "ss",
                "extra", Path.Combine(_dir, "pools", "extra"));
            Assert.Equal("o \"/org/lvstor/Storage1/pool/extra\"", extra);
            string volume = await BusctlAsync("call", BusName, "/org/lvstor/Storage1/pool/tank", "org.lvstor.Storage1.Pool", "CreateVolume", "sstsa{sv}",
                "vm1", "qcow2", "1048576", "", "0");
            Assert.Equal("o \"/org/lvstor/Storage1/pool/tank/vm1\"", volume);
            Assert.True(await ConnectsAsync(socket), "the new volume's export socket does not accept connections");

            first.Signal(DaemonProcess.SigKill);
            Assert.Equal(137, await first.WaitForExitAsync());
        }

        using DaemonProcess second = DaemonProcess.Start(Arguments(config), notify.Path);
        await notify.WaitForAsync("READY=1", second);
        Assert.Equal("ao 2 \"/org/lvstor/Storage1/pool/extra\" \"/org/lvstor/Storage1/pool/tank\"",
            await BusctlAsync("call", BusName, "/org/lvstor/Storage1", "org.lvstor.Storage1.Manager", "ListPools"));
        Assert.Equal("s \"listening\"",
            await BusctlAsync("get-property", BusName, "/org/lvstor/Storage1/pool/tank/vm1", "org.lvstor.Storage1.Volume", "ExportState"));
        Assert.True(await ConnectsAsync(socket), "after the restart the export socket does not accept connections");

        second.Signal(DaemonProcess.SigTerm);
        Assert.Equal(0, await second.WaitForExitAsync());
        Assert.False(File.Exists(socket), "SIGTERM left the export socket behind");
        Assert.Contains("closing 1 exports", second.StandardOutput, StringComparison.Ordinal);
        Assert.Equal(["extra", "tank"], PoolsInInventory().Order(StringComparer.Ordinal));
    }

    [BusFact]
    public async Task Losing_the_bus_stops_the_daemon_cleanly_with_69()
    {
        using var notify = new NotifySocket(Path.Combine(_dir, "notify"));
        DaemonProcess daemon;
        using (PrivateBus ownBus = PrivateBus.Start())
        {
            daemon = DaemonProcess.Start(Arguments(WriteConfig("tank"), ownBus.Address), notify.Path);
            await notify.WaitForAsync("READY=1", daemon);
        }

        using (daemon)
        {
            Assert.Equal(69, await daemon.WaitForExitAsync());
            Assert.Contains("lost the D-Bus connection", daemon.StandardOutput, StringComparison.Ordinal);
            Assert.Contains("stopped", daemon.StandardOutput, StringComparison.Ordinal);
            Assert.Equal(["tank"], PoolsInInventory());
        }
    }

    [Fact]
    public async Task A_bad_configuration_exits_78_naming_the_file_line_and_key_before_opening_anything()
    {
        string config = Path.Combine(_dir, "bad.yaml");
        File.WriteAllText(config, "bus: system\nio:\n  queues: many\n");

        (int code, string stdout, string stderr) = await DaemonProcess.RunAsync("--config", config, "--state-dir", StateDir);

        Assert.Equal(78, code);
        Assert.Equal($"lvstord: {config}:3:11: io.queues: expected an integer from 1 to 64, got \"many\"", stderr.Trim());
        Assert.Equal("", stdout);
        Assert.False(Directory.Exists(StateDir));
    }

    [Fact]
    public async Task Check_config_validates_and_print_default_config_prints_the_shipped_file()
    {
        (int code, string stdout, _) = await DaemonProcess.RunAsync("--print-default-config");
        Assert.Equal(0, code);
        Assert.Equal(File.ReadAllText(Path.Combine(ConfigLoaderTests.RepositoryRoot(), "packaging", "lvstord.yaml")), stdout.ReplaceLineEndings("\n").TrimEnd('\n') + "\n");

        string config = WriteConfig("tank");
        (code, stdout, _) = await DaemonProcess.RunAsync("--check-config", "--config", config);
        Assert.Equal(0, code);
        Assert.Contains($"{config}: configuration is valid (1 pools", stdout, StringComparison.Ordinal);
        Assert.False(Directory.Exists(StateDir));
    }

    [Fact]
    public async Task An_unreachable_bus_exits_69_with_what_to_do()
    {
        string missing = Path.Combine(_dir, "no-bus");
        (int code, _, string stderr) = await DaemonProcess.RunAsync(Arguments(WriteConfig("tank"), "unix:path=" + missing));

        Assert.Equal(69, code);
        Assert.StartsWith($"lvstord: cannot connect to the D-Bus bus at unix:path={missing}: ", stderr.Trim(), StringComparison.Ordinal);
        Assert.EndsWith("start dbus or set 'bus' in the configuration (or --bus)", stderr.Trim(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_state_directory_that_cannot_be_created_exits_73()
    {
        string blocker = Path.Combine(_dir, "file");
        File.WriteAllText(blocker, "");
        string stateDir = Path.Combine(blocker, "state");

        (int code, _, string stderr) = await DaemonProcess.RunAsync(
            "--config", WriteConfig("tank"), "--bus", "unix:path=/nonexistent", "--state-dir", stateDir, "--runtime-dir", Path.Combine(_dir, "run"));

        Assert.Equal(73, code);
        Assert.StartsWith($"lvstord: state_directory {stateDir} cannot be created or written (", stderr.Trim(), StringComparison.Ordinal);
        Assert.EndsWith("fix its ownership or set 'state_directory' (or --state-dir)", stderr.Trim(), StringComparison.Ordinal);
    }

    private string WriteConfig(string pool, string name = "lvstord.yaml")
    {
        string path = Path.Combine(_dir, name);
        File.WriteAllText(path, $"""
            admin_groups: [root]
            pools:
              - name: {pool}
                path: {Path.Combine(_dir, "pools", pool)}
                autostart: true
            logging: {"{"} level: information, format: simple {"}"}
            """);
        return path;
    }

    private string[] Arguments(string config, string? bus = null) =>
        ["--config", config, "--bus", bus ?? Address, "--state-dir", StateDir, "--runtime-dir", Path.Combine(_dir, "run")];

    private List<string> PoolsInInventory()
    {
        using JsonDocument inventory = JsonDocument.Parse(File.ReadAllText(Path.Combine(StateDir, "inventory.json")));
        return inventory.RootElement.GetProperty("pools").EnumerateArray().Select(p => p.GetProperty("name").GetString()!).ToList();
    }

    private async Task<bool> NameHasOwnerAsync() =>
        await BusctlAsync("call", "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "NameHasOwner", "s", BusName) == "b true";

    private async Task<string> BusctlAsync(params string[] args)
    {
        var start = new ProcessStartInfo("busctl", ["--address=" + Address, .. args])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        using Process busctl = Process.Start(start)!;
        Task<string> stdout = busctl.StandardOutput.ReadToEndAsync();
        Task<string> stderr = busctl.StandardError.ReadToEndAsync();
        await busctl.WaitForExitAsync();
        Assert.True(busctl.ExitCode == 0, $"busctl {string.Join(' ', args)} failed: {await stderr}");
        return (await stdout).Trim();
    }

    private static async Task<bool> ConnectsAsync(string socketPath)
    {
        using var client = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.Unix, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Unspecified);
        try
        {
            await client.ConnectAsync(new System.Net.Sockets.UnixDomainSocketEndPoint(socketPath));
            return true;
        }
        catch (System.Net.Sockets.SocketException)
        {
            return false;
        }
    }
}
