using System.Diagnostics;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text;
using LibvirtStorage.TestSupport;

namespace LibvirtStorage.Daemon.Tests;

/// <summary>Skips, naming the missing package, when a private bus or busctl cannot be had here.</summary>
public sealed class BusFactAttribute : FactAttribute
{
    public BusFactAttribute()
    {
        if (PrivateBus.MissingReason is { } reason)
        {
            Skip = reason;
        }
        else if (!File.Exists("/usr/bin/busctl"))
        {
            Skip = "busctl is not installed (Debian package systemd)";
        }
    }
}

/// <summary>The built lvstord (copied next to the tests by the project reference), run as a child process.</summary>
internal sealed class DaemonProcess : IDisposable
{
    public const int SigTerm = 15;
    public const int SigKill = 9;

    /// <summary>Generous bound on start and stop, so a broken daemon fails the test instead of hanging it.</summary>
    public static readonly TimeSpan Patience = TimeSpan.FromSeconds(60);

    private readonly Process _process;
    private readonly StringBuilder _stdout = new();
    private readonly StringBuilder _stderr = new();

    private DaemonProcess(Process process)
    {
        _process = process;
        _process.OutputDataReceived += (_, e) => Append(_stdout, e.Data);
        _process.ErrorDataReceived += (_, e) => Append(_stderr, e.Data);
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
    }

    public static string Executable => Path.Combine(AppContext.BaseDirectory, "lvstord");

    public int Id => _process.Id;

    /// <summary>Completes when the process has exited.</summary>
    public Task Exited => _process.WaitForExitAsync();

    public string StandardOutput { get { lock (_stdout) { return _stdout.ToString(); } } }

    public string StandardError { get { lock (_stderr) { return _stderr.ToString(); } } }

    public static DaemonProcess Start(IEnumerable<string> args, string? notifySocket = null)
    {
        var start = new ProcessStartInfo(Executable, args)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        start.Environment.Remove("NOTIFY_SOCKET");
        if (notifySocket is not null)
        {
            start.Environment["NOTIFY_SOCKET"] = notifySocket;
        }

        return new DaemonProcess(Process.Start(start) ?? throw new InvalidOperationException("cannot start " + Executable));
    }

    /// <summary>Runs lvstord to completion: (exit code, stdout, stderr).</summary>
    public static async Task<(int ExitCode, string Stdout, string Stderr)> RunAsync(params string[] args)
    {
        using DaemonProcess daemon = Start(args);
        int code = await daemon.WaitForExitAsync();
        return (code, daemon.StandardOutput, daemon.StandardError);
    }

    public async Task<int> WaitForExitAsync()
    {
        using var timeout = new CancellationTokenSource(Patience);
        try
        {
            await _process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            throw new TimeoutException($"lvstord did not exit within {Patience}; stderr: {StandardError}; stdout: {StandardOutput}");
        }

        _process.WaitForExit(); // drains the redirected streams
        return _process.ExitCode;
    }

    public void Signal(int signal)
    {
        if (Kill(_process.Id, signal) != 0)
        {
            throw new InvalidOperationException($"kill({_process.Id}, {signal}) failed: errno {Marshal.GetLastPInvokeError()}");
        }
    }

    public void Dispose()
    {
        if (!_process.HasExited)
        {
            _process.Kill();
            _process.WaitForExit();
        }

        _process.Dispose();
    }

    private static void Append(StringBuilder to, string? line)
    {
        if (line is not null)
        {
            lock (to)
            {
                to.AppendLine(line);
            }
        }
    }

    [DllImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static extern int Kill(int pid, int signal);
}

/// <summary>A NOTIFY_SOCKET as systemd provides one: a datagram UNIX socket collecting sd_notify messages.</summary>
internal sealed class NotifySocket : IDisposable
{
    private readonly Socket _socket = new(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);

    public NotifySocket(string path)
    {
        Path = path;
        _socket.Bind(new UnixDomainSocketEndPoint(path));
    }

    public string Path { get; }

    /// <summary>Waits for a datagram containing the line <paramref name="line"/> (e.g. READY=1); fails if the daemon exits first.</summary>
    public async Task WaitForAsync(string line, DaemonProcess daemon)
    {
        using var timeout = new CancellationTokenSource(DaemonProcess.Patience);
        var buffer = new byte[4096];
        var seen = new List<string>();
        while (true)
        {
            int n;
            try
            {
                Task<int> receive = _socket.ReceiveAsync(buffer, SocketFlags.None, timeout.Token).AsTask();
                if (await Task.WhenAny(receive, daemon.Exited) != receive)
                {
                    throw new InvalidOperationException($"lvstord exited before {line}; stderr: {daemon.StandardError}; stdout: {daemon.StandardOutput}");
                }

                n = await receive;
            }
            catch (OperationCanceledException)
            {
                throw new TimeoutException($"no {line} within {DaemonProcess.Patience} (got: {string.Join(" | ", seen)}); stderr: {daemon.StandardError}; stdout: {daemon.StandardOutput}");
            }

            string message = Encoding.UTF8.GetString(buffer, 0, n);
            seen.Add(message);
            if (message.Split('\n').Contains(line))
            {
                return;
            }
        }
    }

    public void Dispose() => _socket.Dispose();
}
