using System.Diagnostics;

namespace LibvirtStorage.Images.Tests.Infrastructure;

/// <summary>The result of one finished tool run.</summary>
public sealed record ToolResult(int ExitCode, string StandardOutput, string StandardError)
{
    /// <summary>Standard output and standard error together, for assertions on messages.</summary>
    public string AllOutput => StandardOutput + StandardError;
}

/// <summary>Runs external tools (qemu-img, qemu-io, ...) with a timeout and captured output.</summary>
public static class QemuTools
{
    /// <summary>Default time a tool may take before it is killed and the test fails.</summary>
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(60);

    /// <summary>Runs <paramref name="tool"/> to completion; kills it and throws <see cref="TimeoutException"/> when it overruns.</summary>
    public static ToolResult Run(string tool, IEnumerable<string> args, TimeSpan? timeout = null)
    {
        using Process process = Start(tool, args, redirectInput: false);
        Task<string> stdout = process.StandardOutput.ReadToEndAsync();
        Task<string> stderr = process.StandardError.ReadToEndAsync();
        TimeSpan limit = timeout ?? DefaultTimeout;
        if (!process.WaitForExit(limit))
        {
            process.Kill(entireProcessTree: true);
            process.WaitForExit();
            throw new TimeoutException($"{tool} {string.Join(' ', args)} did not finish within {limit}");
        }

        process.WaitForExit();
        return new ToolResult(process.ExitCode, stdout.GetAwaiter().GetResult(), stderr.GetAwaiter().GetResult());
    }

    /// <summary>Runs a tool and returns its standard output; throws when it exits non-zero.</summary>
    public static string RunChecked(string tool, params string[] args)
    {
        ToolResult result = Run(tool, args);
        if (result.ExitCode != 0)
        {
            throw new InvalidOperationException($"{tool} {string.Join(' ', args)} exited with {result.ExitCode}: {result.AllOutput}");
        }

        return result.StandardOutput;
    }

    /// <summary>Starts a long-running tool (for example <c>qemu-io</c> holding an image open); dispose to kill it.</summary>
    public static BackgroundTool StartBackground(string tool, params string[] args) =>
        new(Start(tool, args, redirectInput: true));

    private static Process Start(string tool, IEnumerable<string> args, bool redirectInput)
    {
        var info = new ProcessStartInfo(tool)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = redirectInput,
            UseShellExecute = false,
        };
        foreach (string arg in args)
        {
            info.ArgumentList.Add(arg);
        }

        return Process.Start(info) ?? throw new InvalidOperationException($"cannot start {tool}");
    }
}

/// <summary>A tool running in the background; disposing kills it (only this process, by its id).</summary>
public sealed class BackgroundTool : IDisposable
{
    private readonly Process _process;
    private readonly Task<string> _stdout;
    private readonly Task<string> _stderr;

    internal BackgroundTool(Process process)
    {
        _process = process;
        _stdout = process.StandardOutput.ReadToEndAsync();
        _stderr = process.StandardError.ReadToEndAsync();
    }

    /// <summary>True while the process runs.</summary>
    public bool IsRunning => !_process.HasExited;

    /// <summary>The process's standard input (for interactive tools such as qemu-io).</summary>
    public StreamWriter Input => _process.StandardInput;

    /// <summary>Output so far, once the process has exited (empty while it runs).</summary>
    public string OutputIfExited => _process.HasExited ? _stdout.Result + _stderr.Result : string.Empty;

    /// <summary>Kills the process if it still runs and waits for it.</summary>
    public void Dispose()
    {
        try
        {
            if (!_process.HasExited)
            {
                _process.Kill();
            }

            _process.WaitForExit();
        }
        finally
        {
            _process.Dispose();
        }
    }
}
