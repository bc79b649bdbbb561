using System.Diagnostics;
using System.Globalization;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using LibvirtStorage.Vhost.Frontend;

// README's main job, end to end, with nothing outside the work directory:
//   a private dbus-daemon → lvstord (embedded default config) → lvstor CLI: pool and volume
//   → a C# vhost-user-blk front-end (QEMU's side of the socket) writes, flushes and verifies data
//   → a live snapshot, then a live commit of that snapshot, while it writes → lvstord stops on SIGTERM
//   → qemu-img check on every layer.
// Usage: lvstor-demo --work DIR --lvstord PATH --lvstor PATH   (make demo passes all three)

string work = Path.GetFullPath(Option("--work") ?? ".demo");
string lvstord = Option("--lvstord") ?? Fail<string>("--lvstord PATH is required");
string lvstor = Option("--lvstor") ?? Fail<string>("--lvstor PATH is required");
var demo = new Demo(work, lvstord, lvstor);
try
{
    return demo.Run();
}
catch (DemoFailure e)
{
    Console.Error.WriteLine($"\ndemo: FAILED: {e.Message}\n(lvstord's log: {Path.Combine(work, "lvstord.log")})");
    return 1;
}
finally
{
    demo.Cleanup();
}

string? Option(string name)
{
    int i = Array.IndexOf(args, name);
    return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
}

static T Fail<T>(string message)
{
    Console.Error.WriteLine("lvstor-demo: " + message);
    Environment.Exit(2);
    return default!;
}

internal sealed class Demo(string work, string lvstordPath, string lvstorPath)
{
    private const long VolumeBytes = 1L << 30;
    private const long RegionBytes = 64L << 20;
    private const int TotalSteps = 9;
    private Process? _bus;
    private Process? _daemon;
    private string _busAddress = "";
    private int _step;

    public int Run()
    {
        Console.WriteLine("lvstor demo: lvstord on a private bus, a pool and a volume made with the lvstor CLI, and a");
        Console.WriteLine("vhost-user-blk front-end (QEMU's side of the socket) doing verified I/O through the volume.");
        if (Directory.Exists(work))
            Directory.Delete(work, recursive: true);
        Directory.CreateDirectory(work);

        Step("a private D-Bus daemon (no system bus needed)");
        StartBus();
        Console.WriteLine($"  {_busAddress}");

        Step("lvstord with its embedded default configuration");
        TimeSpan ready = StartDaemon();
        Console.WriteLine($"  READY=1 from lvstord (pid {_daemon!.Id}) after {ready.TotalSeconds:0.00} s; state in {Rel("state")}, sockets in {Rel("run")}");

        Step("a pool and a 1 GiB qcow2 volume, through the lvstor CLI");
        Cli("pool-define-as", "demo", Path.Combine(work, "pool"));
        Cli("pool-start", "demo");
        Cli("vol-create-as", "demo", "vm1", "1G", "--format", "qcow2");
        string socket = Cli("vol-path", "vm1", "--pool", "demo").Trim();

        Step("a front-end connects to the volume's socket and writes");
        using var frontend = VhostUserBlkFrontend.Connect(socket, new VhostUserBlkFrontendOptions { Depth = 32, MaxRequestBytes = 4096 });
        VhostUserBlkQueue queue = frontend.Queues[0];
        Console.WriteLine($"  connected to {Rel(socket)}: {frontend.Device.CapacityBytes >> 20} MiB, {frontend.Device.NumQueues} queue(s), block size {frontend.Device.BlockSize}");
        Expect(frontend.Device.CapacityBytes == VolumeBytes, $"the device reports {frontend.Device.CapacityBytes} bytes, the volume has {VolumeBytes}");
        var workload = new PatternWorkload(0, RegionBytes);
        var clock = Stopwatch.StartNew();
        workload.WriteAll(queue);
        workload.WriteRandom(queue, 32_768);
        double seconds = clock.Elapsed.TotalSeconds;
        workload.Flush(queue);
        Console.WriteLine($"  {workload.WritesAcknowledged} writes of 4 KiB at queue depth 32 in {seconds:0.00} s ({workload.WritesAcknowledged / seconds:0} IOPS), then FLUSH");
        VerifyAll(workload, queue, "after the writes");

        Step("a live snapshot while the front-end keeps writing");
        long across = WhileWriting(workload, queue, () => Cli("snapshot", "vm1", "before-upgrade", "--pool", "demo"));
        Console.WriteLine($"  {across} writes ran across the switch to the new overlay");
        VerifyAll(workload, queue, "through the new chain (overlay over the snapshot layer)");

        Step("a live commit: the overlay merges back into the snapshot's layer while the front-end keeps writing");
        across = WhileWriting(workload, queue, () => Cli("commit", "vm1", "--pool", "demo"));
        Console.WriteLine($"  {across} writes ran during the copy and across the pivot to the merged layer");
        VerifyAll(workload, queue, "through the merged chain (one layer again)");

        Step("who uses what: the service sees the connected front-end");
        Cli("vol-info", "vm1", "--pool", "demo");
        Cli("status");
        (int code, string refused) = CliMayFail("vol-delete", "vm1", "--pool", "demo");
        Expect(code != 0 && refused.Contains("guest", StringComparison.Ordinal), $"vol-delete of a connected volume must be refused naming the guest (exit {code}): {refused}");
        Console.WriteLine($"  (refused as it should be, exit code {code})");
        string json = Cli(echo: false, "vol-info", "vm1", "--pool", "demo", "--json");

        Step("the front-end disconnects; lvstord stops on SIGTERM");
        frontend.Dispose();
        int exit = StopDaemon();
        Expect(exit == 0, $"lvstord exited with {exit} on SIGTERM");
        Console.WriteLine("  lvstord flushed, closed its exports and exited 0");

        Step("qemu-img check on every layer of the volume");
        foreach (string file in Layers(json))
        {
            (int rc, string output) = Tool("qemu-img", "check", file);
            Expect(rc == 0, $"qemu-img check {file}: {output}");
            Console.WriteLine($"  {Rel(file)}: {output.Trim().Split('\n')[0]}");
        }

        Console.WriteLine();
        Console.WriteLine("demo: every step verified");
        return 0;
    }

    public void Cleanup()
    {
        foreach (Process? p in new[] { _daemon, _bus })
        {
            if (p is { HasExited: false })
            {
                p.Kill();
                p.WaitForExit(5000);
            }

            p?.Dispose();
        }
    }

    /// <summary>Keeps the front-end writing (256 random 4 KiB writes at a time) while <paramref name="act"/> runs, then flushes; returns the writes done meanwhile.</summary>
    private static long WhileWriting(PatternWorkload workload, VhostUserBlkQueue queue, Action act)
    {
        using var stop = new CancellationTokenSource();
        long before = workload.WritesAcknowledged;
        Task writer = Task.Run(() =>
        {
            while (!stop.IsCancellationRequested)
                workload.WriteRandom(queue, 256);
        });
        Thread.Sleep(300);
        act();
        Thread.Sleep(300);
        stop.Cancel();
        writer.GetAwaiter().GetResult();
        workload.Flush(queue);
        return workload.WritesAcknowledged - before;
    }

    private void Step(string title) => Console.WriteLine($"\n[{++_step}/{TotalSteps}] {title}");

    private string Rel(string path) => Path.GetRelativePath(Environment.CurrentDirectory, Path.Combine(work, path));

    private void StartBus()
    {
        string dir = Path.Combine(work, "bus");
        Directory.CreateDirectory(dir);
        string config = Path.Combine(dir, "bus.conf");
        File.WriteAllText(config, $"""
            <!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
             "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
            <busconfig>
              <type>lvstor-demo</type>
              <listen>unix:path={Path.Combine(dir, "socket")}</listen>
              <auth>EXTERNAL</auth>
              <policy context="default">
                <allow user="*"/> <allow own="*"/> <allow send_destination="*"/>
                <allow send_type="*"/> <allow receive_type="*"/>
              </policy>
            </busconfig>
            """);
        _bus = Process.Start(new ProcessStartInfo("dbus-daemon", ["--nofork", "--nopidfile", "--config-file=" + config, "--print-address"])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,   // its warnings (fd limit when not root) go to bus/log, not the demo's output
        }) ?? throw new InvalidOperationException("cannot start dbus-daemon (apt-get install dbus-daemon)");
        var busLog = new StreamWriter(Path.Combine(dir, "log")) { AutoFlush = true };
        _bus.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (busLog) busLog.WriteLine(e.Data); };
        _bus.BeginErrorReadLine();
        string? printed = _bus.StandardOutput.ReadLine();
        Expect(!string.IsNullOrEmpty(printed), "dbus-daemon did not start");
        _busAddress = "unix:path=" + Path.Combine(dir, "socket");
    }

    /// <summary>Starts lvstord with NOTIFY_SOCKET pointing at a datagram socket of ours, and waits for READY=1.</summary>
    private TimeSpan StartDaemon()
    {
        string notifyPath = Path.Combine(work, "notify");
        using var notify = new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);
        notify.Bind(new UnixDomainSocketEndPoint(notifyPath));
        var start = new ProcessStartInfo(lvstordPath, ["--bus", _busAddress, "--state-dir", Path.Combine(work, "state"), "--runtime-dir", Path.Combine(work, "run")])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        start.Environment["NOTIFY_SOCKET"] = notifyPath;
        var log = new StreamWriter(Path.Combine(work, "lvstord.log")) { AutoFlush = true };
        var clock = Stopwatch.StartNew();
        _daemon = Process.Start(start) ?? throw new InvalidOperationException("cannot start " + lvstordPath);
        _daemon.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (log) log.WriteLine(e.Data); };
        _daemon.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (log) log.WriteLine(e.Data); };
        _daemon.BeginOutputReadLine();
        _daemon.BeginErrorReadLine();
        var buffer = new byte[4096];
        notify.ReceiveTimeout = 500;
        while (clock.Elapsed < TimeSpan.FromSeconds(60))
        {
            Expect(!_daemon.HasExited, $"lvstord exited with {(_daemon.HasExited ? _daemon.ExitCode : 0)} at start: see {Rel("lvstord.log")}");
            try
            {
                int n = notify.Receive(buffer);
                if (Encoding.UTF8.GetString(buffer, 0, n).Split('\n').Contains("READY=1"))
                    return clock.Elapsed;
            }
            catch (SocketException e) when (e.SocketErrorCode == SocketError.TimedOut || e.SocketErrorCode == SocketError.WouldBlock)
            {
            }
        }

        throw new DemoFailure("lvstord did not report READY=1 within 60 s");
    }

    private int StopDaemon()
    {
        Process daemon = _daemon!;
        Tool("kill", "-TERM", daemon.Id.ToString(CultureInfo.InvariantCulture));
        Expect(daemon.WaitForExit(30_000), "lvstord did not exit within 30 s of SIGTERM");
        return daemon.ExitCode;
    }

    private string Cli(params string[] args) => Cli(echo: true, args);

    private string Cli(bool echo, params string[] args)
    {
        (int code, string output) = CliMayFail(echo, args);
        Expect(code == 0, $"lvstor {string.Join(' ', args)} failed with exit code {code}: {output}");
        return output;
    }

    private (int Code, string Output) CliMayFail(params string[] args) => CliMayFail(echo: true, args);

    private (int Code, string Output) CliMayFail(bool echo, string[] args)
    {
        if (echo)
            Console.WriteLine("  $ lvstor " + string.Join(' ', args.Select(a => a.StartsWith(work, StringComparison.Ordinal) ? Rel(a) : a)));
        (int code, string output) = Tool(lvstorPath, ["--bus", _busAddress, .. args]);
        if (echo)
        {
            foreach (string line in output.TrimEnd().Split('\n'))
            {
                if (line.Length > 0)
                    Console.WriteLine("    " + line);
            }
        }

        return (code, output);
    }

    private static (int Code, string Output) Tool(string file, params string[] args)
    {
        var start = new ProcessStartInfo(file, args) { RedirectStandardOutput = true, RedirectStandardError = true };
        start.Environment["COLUMNS"] = "120";
        using Process p = Process.Start(start) ?? throw new InvalidOperationException("cannot start " + file);
        Task<string> stderr = p.StandardError.ReadToEndAsync();
        string stdout = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, stdout + stderr.GetAwaiter().GetResult());
    }

    private static void VerifyAll(PatternWorkload workload, VhostUserBlkQueue queue, string when)
    {
        PatternCheck check = workload.Verify(queue);
        Expect(check.IsOk, $"verify {when}: {check.Mismatches} sectors wrong, first: {check.FirstMismatch}");
        Console.WriteLine($"  read back all {check.Sectors} sectors of the {RegionBytes >> 20} MiB region {when}: every one holds the last acknowledged write");
    }

    private static IEnumerable<string> Layers(string volumeJson)
    {
        using JsonDocument doc = JsonDocument.Parse(volumeJson);
        yield return doc.RootElement.GetProperty("file").GetString()!;
        foreach (JsonElement layer in doc.RootElement.GetProperty("backing_chain").EnumerateArray())
            yield return layer.GetProperty("file").GetString()!;
    }

    private static void Expect(bool condition, string failure)
    {
        if (!condition)
            throw new DemoFailure(failure);
    }
}

internal sealed class DemoFailure(string message) : Exception(message);
