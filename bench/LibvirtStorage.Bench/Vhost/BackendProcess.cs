using System.Diagnostics;
using System.Globalization;
using System.Text;

namespace LibvirtStorage.Bench.Vhost;

/// <summary>A vhost-user-blk back-end as a child process serving one image on a socket: ours or QSD.</summary>
internal sealed class BackendProcess : IDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _log = new();

    private BackendProcess(string name, string socketPath, string commandLine, ProcessStartInfo info)
    {
        Name = name;
        SocketPath = socketPath;
        CommandLine = commandLine;
        File.Delete(socketPath);
        info.RedirectStandardError = true;
        info.RedirectStandardOutput = true;
        info.UseShellExecute = false;
        _process = Process.Start(info) ?? throw new InvalidOperationException($"could not start {info.FileName}");
        _process.ErrorDataReceived += (_, e) => Keep(e.Data);
        _process.OutputDataReceived += (_, e) => Keep(e.Data);
        _process.BeginErrorReadLine();
        _process.BeginOutputReadLine();
        var clock = Stopwatch.StartNew();
        while (!File.Exists(socketPath))
        {
            if (_process.HasExited || clock.Elapsed > TimeSpan.FromSeconds(30))
                throw new InvalidOperationException($"{name} did not create {socketPath}: {Log}");
            Thread.Sleep(20);
        }
    }

    public string Name { get; }

    public string SocketPath { get; }

    /// <summary>The command line, paths shortened to file names, for the report.</summary>
    public string CommandLine { get; }

    public string Log
    {
        get
        {
            lock (_log)
                return _log.ToString();
        }
    }

    /// <summary>User + system CPU time the back-end has used so far.</summary>
    public TimeSpan CpuTime
    {
        get
        {
            _process.Refresh();
            return _process.TotalProcessorTime;
        }
    }

    /// <summary>lvstor-vhost-blk (Release build) with O_DIRECT.</summary>
    public static BackendProcess StartOurs(string dll, string image, string format, string socket, int queues, IReadOnlyList<string> extraArgs)
    {
        string[] args = ["--socket-path", socket, "--image", image, "--format", format, "--num-queues", queues.ToString(CultureInfo.InvariantCulture), "--direct", .. extraArgs];
        var info = new ProcessStartInfo("dotnet");
        info.ArgumentList.Add(dll);
        foreach (string a in args)
            info.ArgumentList.Add(a);
        return new BackendProcess("lvstor-vhost-blk", socket, Shorten("lvstor-vhost-blk " + string.Join(' ', args)), info);
    }

    /// <summary>qemu-storage-daemon with cache.direct=on and the given aio engine.</summary>
    public static BackendProcess StartQsd(string image, string format, string socket, int queues, string aio)
    {
        string[] args =
        [
            "--blockdev", $"driver=file,node-name=file0,filename={image},cache.direct=on,aio={aio}",
            "--blockdev", $"driver={format},node-name=disk0,file=file0",
            "--export", $"type=vhost-user-blk,id=exp0,node-name=disk0,addr.type=unix,addr.path={socket},writable=on,num-queues={queues}",
        ];
        var info = new ProcessStartInfo("qemu-storage-daemon");
        foreach (string a in args)
            info.ArgumentList.Add(a);
        return new BackendProcess("qemu-storage-daemon", socket, Shorten("qemu-storage-daemon " + string.Join(' ', args)), info);
    }

    /// <summary>qemu-storage-daemon with <paramref name="args"/> as given; ready once <paramref name="waitForSocket"/> (a QMP or export socket) exists.</summary>
    public static BackendProcess StartQsd(IReadOnlyList<string> args, string waitForSocket)
    {
        var info = new ProcessStartInfo("qemu-storage-daemon");
        foreach (string a in args)
            info.ArgumentList.Add(a);
        return new BackendProcess("qemu-storage-daemon", waitForSocket, Shorten("qemu-storage-daemon " + string.Join(' ', args)), info);
    }

    /// <summary>Waits up to <paramref name="timeout"/> for the process to exit by itself (after QMP quit).</summary>
    public bool WaitForExit(TimeSpan timeout) => _process.WaitForExit(timeout);

    /// <summary>SIGTERM, then SIGKILL after 10 s.</summary>
    public void Dispose()
    {
        if (!_process.HasExited)
        {
            using (Process? kill = Process.Start("kill", ["-TERM", _process.Id.ToString(CultureInfo.InvariantCulture)]))
                kill?.WaitForExit();
            if (!_process.WaitForExit(10_000))
                _process.Kill();
        }

        _process.WaitForExit();
        _process.Dispose();
        File.Delete(SocketPath);
    }

    private void Keep(string? line)
    {
        if (line is null)
            return;
        lock (_log)
        {
            if (_log.Length < 16_384)
                _log.AppendLine(line);
        }
    }

    private static string Shorten(string commandLine)
    {
        // Scratch paths are noise in the report: keep file names only.
        var parts = commandLine.Split(' ');
        for (int i = 0; i < parts.Length; i++)
            parts[i] = System.Text.RegularExpressions.Regex.Replace(parts[i], @"/[^,= ]*/([^/,= ]+)", "$1");
        return string.Join(' ', parts);
    }
}
