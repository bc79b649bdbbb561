using System.Diagnostics;

namespace LibvirtStorage.TestSupport;

/// <summary>
/// A real dbus-daemon on a private UNIX socket, in a temporary directory, for one test class. Its policy lets
/// every user connect, own names and call methods, so what the tests see is lvstord's own authorisation
/// (the bus policy we ship is tested separately by passing it as <paramref name="extraConfig"/>).
/// </summary>
public sealed class PrivateBus : IDisposable
{
    private readonly Process _daemon;

    private PrivateBus(string directory, Process daemon, string address)
    {
        Directory = directory;
        _daemon = daemon;
        Address = address;
    }

    /// <summary>The directory holding the socket and the config; removed on dispose.</summary>
    public string Directory { get; }

    /// <summary>The D-Bus address clients connect to, for example <c>unix:path=/tmp/x/bus</c>.</summary>
    public string Address { get; }

    /// <summary>Why a bus cannot be started here (names the missing program), or null when it can.</summary>
    public static string? MissingReason =>
        File.Exists("/usr/bin/dbus-daemon") ? null : "dbus-daemon is not installed (Debian package dbus-daemon)";

    /// <summary>Starts dbus-daemon and waits until it accepts connections.</summary>
    /// <param name="extraConfig">Extra busconfig elements (for example an &lt;include&gt; of a policy file).</param>
    public static PrivateBus Start(string extraConfig = "")
    {
        string directory = System.IO.Directory.CreateTempSubdirectory("lvstor-bus-").FullName;
        // World-searchable so that tests can connect as an unprivileged user.
        File.SetUnixFileMode(directory, (UnixFileMode)0b111_101_101);
        string socket = Path.Combine(directory, "bus");
        string config = Path.Combine(directory, "bus.conf");
        File.WriteAllText(config, $"""
            <!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
             "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
            <busconfig>
              <type>lvstor-test</type>
              <listen>unix:path={socket}</listen>
              <auth>EXTERNAL</auth>
              <policy context="default">
                <allow user="*"/>
                <allow own="*"/>
                <allow send_destination="*"/>
                <allow send_type="*"/>
                <allow receive_type="*"/>
              </policy>
              {extraConfig}
            </busconfig>
            """);

        var start = new ProcessStartInfo("dbus-daemon", ["--nofork", "--nopidfile", "--config-file=" + config, "--print-address"])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        Process daemon = Process.Start(start) ?? throw new InvalidOperationException("cannot start dbus-daemon");
        string? address = daemon.StandardOutput.ReadLine();
        if (string.IsNullOrEmpty(address))
        {
            string error = daemon.StandardError.ReadToEnd();
            daemon.Kill();
            daemon.Dispose();
            throw new InvalidOperationException("dbus-daemon did not start: " + error);
        }

        return new PrivateBus(directory, daemon, "unix:path=" + socket);
    }

    /// <summary>Environment for child processes (clients, lvstord) that should use this bus as the system bus.</summary>
    public IReadOnlyDictionary<string, string> Environment => new Dictionary<string, string>
    {
        ["DBUS_SYSTEM_BUS_ADDRESS"] = Address,
        ["DBUS_SESSION_BUS_ADDRESS"] = Address,
    };

    /// <inheritdoc/>
    public void Dispose()
    {
        try
        {
            _daemon.Kill();
            _daemon.WaitForExit(5000);
        }
        catch (InvalidOperationException)
        {
            // Already gone.
        }

        _daemon.Dispose();
        try
        {
            System.IO.Directory.Delete(Directory, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
