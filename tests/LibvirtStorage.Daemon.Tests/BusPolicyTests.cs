using System.Diagnostics;

namespace LibvirtStorage.Daemon.Tests;

/// <summary>Skips, naming what is missing, when the policy cannot be tested here.</summary>
public sealed class PolicyFactAttribute : FactAttribute
{
    public PolicyFactAttribute()
    {
        if (LibvirtStorage.TestSupport.PrivateBus.MissingReason is { } reason)
        {
            Skip = reason;
        }
        else if (!File.Exists("/usr/bin/gdbus") || !File.Exists("/usr/bin/setpriv"))
        {
            Skip = "gdbus and setpriv are needed (Debian packages libglib2.0-bin and util-linux)";
        }
        else if (Environment.UserName != "root")
        {
            Skip = "the policy test runs commands as root and as nobody, so it must run as root";
        }
    }
}

/// <summary>
/// The shipped packaging/dbus-1/system.d/org.lvstor.Storage1.conf on a dbus-daemon whose default policy is the
/// system bus's (deny owning and method calls), so only what the shipped file allows gets through.
/// (TestSupport's PrivateBus allows everything, which would hide the file's effect.)
/// </summary>
public sealed class BusPolicyTests : IDisposable
{
    private const string Name = "org.lvstor.Storage1";
    private const string Nobody = "65534";
    private readonly string _dir = Directory.CreateTempSubdirectory("lvstord-policy-").FullName;
    private readonly Process? _bus;
    private readonly string _address;

    public BusPolicyTests()
    {
        if (OperatingSystem.IsLinux())
        {
            File.SetUnixFileMode(_dir, (UnixFileMode)0b111_101_101); // nobody must reach the socket
        }
        string socket = Path.Combine(_dir, "bus");
        _address = "unix:path=" + socket;
        if (new PolicyFactAttribute().Skip is not null)
        {
            return;
        }

        string policy = Path.Combine(ConfigLoaderTests.RepositoryRoot(), "packaging", "dbus-1", "system.d", "org.lvstor.Storage1.conf");
        string defaults = Path.Combine(ConfigLoaderTests.RepositoryRoot(), "tests", "dbus", "system-default-policy.conf");
        string config = Path.Combine(_dir, "bus.conf");
        File.WriteAllText(config, $"""
            <!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
             "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
            <busconfig>
              <type>lvstor-policy-test</type>
              <listen>unix:path={socket}</listen>
              <auth>EXTERNAL</auth>
              <include>{defaults}</include>
              <include>{policy}</include>
            </busconfig>
            """);
        _bus = Process.Start(new ProcessStartInfo("dbus-daemon", ["--nofork", "--nopidfile", "--config-file=" + config, "--print-address"])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        })!;
        if (string.IsNullOrEmpty(_bus.StandardOutput.ReadLine()))
        {
            throw new InvalidOperationException("dbus-daemon refused the configuration with the shipped policy: " + _bus.StandardError.ReadToEnd());
        }
    }

    public void Dispose()
    {
        if (_bus is not null)
        {
            _bus.Kill();
            _bus.WaitForExit();
            _bus.Dispose();
        }

        Directory.Delete(_dir, recursive: true);
    }

    [PolicyFact]
    public async Task Root_may_own_the_name_and_an_unprivileged_user_may_not()
    {
        (int code, string stdout, string stderr) = await CallAsync(asUser: null, "org.freedesktop.DBus", "/org/freedesktop/DBus",
            "org.freedesktop.DBus.RequestName", Name, "4");
        Assert.True(code == 0, stderr);
        Assert.Equal("(uint32 1,)", stdout.Trim()); // DBUS_REQUEST_NAME_REPLY_PRIMARY_OWNER

        (code, _, stderr) = await CallAsync(Nobody, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus.RequestName", Name, "4");
        Assert.NotEqual(0, code);
        Assert.Contains("not allowed to own the service \"org.lvstor.Storage1\"", stderr, StringComparison.Ordinal);
    }

    [PolicyFact]
    public async Task With_lvstord_running_everyone_may_look_but_only_root_may_call_methods()
    {
        string state = Path.Combine(_dir, "state");
        using var notify = new NotifySocket(Path.Combine(_dir, "notify"));
        using DaemonProcess daemon = DaemonProcess.Start(
            ["--config", WriteEmptyConfig(), "--bus", _address, "--state-dir", state, "--runtime-dir", Path.Combine(_dir, "run")], notify.Path);
        await notify.WaitForAsync("READY=1", daemon);

        // Looking (introspection, properties) passes the bus for anyone: whatever lvstord answers, the bus did not refuse.
        (_, _, string stderr) = await CallAsync(Nobody, Name, "/org/lvstor/Storage1", "org.freedesktop.DBus.Introspectable.Introspect");
        Assert.DoesNotContain("Rejected send message", stderr, StringComparison.Ordinal);
        (_, _, stderr) = await CallAsync(Nobody, Name, "/org/lvstor/Storage1", "org.freedesktop.DBus.Properties.GetAll", "org.lvstor.Storage1.Manager");
        Assert.DoesNotContain("Rejected send message", stderr, StringComparison.Ordinal);

        // Calling a method of lvstord's own interfaces is refused by the bus for nobody, passed for root.
        (int code, _, stderr) = await CallAsync(Nobody, Name, "/org/lvstor/Storage1", "org.lvstor.Storage1.Manager.ListPools");
        Assert.NotEqual(0, code);
        Assert.Contains("Rejected send message", stderr, StringComparison.Ordinal);
        (_, _, stderr) = await CallAsync(null, Name, "/org/lvstor/Storage1", "org.lvstor.Storage1.Manager.ListPools");
        Assert.DoesNotContain("Rejected send message", stderr, StringComparison.Ordinal);

        daemon.Signal(DaemonProcess.SigTerm);
        Assert.Equal(0, await daemon.WaitForExitAsync());
    }

    private string WriteEmptyConfig()
    {
        string path = Path.Combine(_dir, "lvstord.yaml");
        File.WriteAllText(path, "admin_groups: [root]\nlogging: { format: simple }\n");
        return path;
    }

    // gdbus, not busctl: busctl prints only "Access denied", gdbus the bus's own "Rejected send message" text.
    private async Task<(int Code, string Stdout, string Stderr)> CallAsync(string? asUser, string destination, string path, string method, params string[] args)
    {
        string[] gdbus = ["/usr/bin/gdbus", "call", "--address", _address, "--dest", destination, "--object-path", path, "--method", method, .. args];
        ProcessStartInfo start = asUser is null
            ? new ProcessStartInfo(gdbus[0], gdbus[1..])
            : new ProcessStartInfo("/usr/bin/setpriv", ["--reuid=" + asUser, "--regid=" + asUser, "--clear-groups", .. gdbus]);
        start.RedirectStandardOutput = true;
        start.RedirectStandardError = true;
        using Process process = Process.Start(start)!;
        Task<string> stdout = process.StandardOutput.ReadToEndAsync();
        Task<string> stderr = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync();
        return (process.ExitCode, await stdout, await stderr);
    }
}
