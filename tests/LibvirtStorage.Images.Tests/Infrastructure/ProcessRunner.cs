using System.Diagnostics;
using System.Text;

namespace LibvirtStorage.Images.Tests.Infrastructure;

/// <summary>The outcome of a finished process.</summary>
public sealed record ProcessResult(int ExitCode, string StdOut, string StdErr)
{
    /// <summary>Throws with both streams when the exit code is not <paramref name="expected"/>.</summary>
    public ProcessResult Expect(int expected = 0)
    {
        if (ExitCode != expected)
        {
            throw new InvalidOperationException($"exit code {ExitCode} (expected {expected})\nstdout:\n{StdOut}\nstderr:\n{StdErr}");
        }

        return this;
    }
}

/// <summary>Runs a program with a timeout, capturing its output; kills the whole process tree on timeout.</summary>
public static class ProcessRunner
{
    public static ProcessResult Run(string fileName, IEnumerable<string> arguments, string? workingDirectory = null, TimeSpan? timeout = null)
    {
        var psi = new ProcessStartInfo(fileName)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = workingDirectory ?? Environment.CurrentDirectory,
        };
        foreach (string a in arguments)
        {
            psi.ArgumentList.Add(a);
        }

        using var process = new Process { StartInfo = psi };
        var stdout = new StringBuilder();
        var stderr = new StringBuilder();
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) { lock (stdout) { stdout.Append(e.Data).Append('\n'); } } };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) { lock (stderr) { stderr.Append(e.Data).Append('\n'); } } };
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        TimeSpan limit = timeout ?? TimeSpan.FromSeconds(120);
        if (!process.WaitForExit(limit))
        {
            process.Kill(entireProcessTree: true);
            process.WaitForExit();
            throw new TimeoutException($"{fileName} {string.Join(' ', arguments)} did not finish within {limit}");
        }

        process.WaitForExit();
        return new ProcessResult(process.ExitCode, stdout.ToString(), stderr.ToString());
    }

    /// <summary>Runs qemu-img (from qemu-utils) in <paramref name="workingDirectory"/> and expects success.</summary>
    public static string QemuImg(string workingDirectory, params string[] arguments) =>
        Run("qemu-img", arguments, workingDirectory).Expect().StdOut;

    /// <summary>Runs qemu-io on one image with the given -c commands and expects success.</summary>
    public static void QemuIo(string workingDirectory, string image, string format, params string[] commands)
    {
        var args = new List<string> { "-f", format };
        foreach (string c in commands)
        {
            args.Add("-c");
            args.Add(c);
        }

        args.Add(image);
        ProcessResult r = Run("qemu-io", args, workingDirectory).Expect();
        if (r.StdOut.Contains("error", StringComparison.OrdinalIgnoreCase) || r.StdErr.Length > 0)
        {
            throw new InvalidOperationException($"qemu-io reported: {r.StdOut}{r.StdErr}");
        }
    }
}
