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

/// <summary>
/// Runs tools in a chosen working directory, so tests can name images relative to their folder as a
/// user of qemu-img would. Built on <see cref="QemuTools"/> (timeout, capture, kill) through
/// <c>env -C</c>.
/// </summary>
public static class ProcessRunner
{
    public static ProcessResult Run(string fileName, IEnumerable<string> arguments, string? workingDirectory = null, TimeSpan? timeout = null)
    {
        var args = new List<string> { "-C", workingDirectory ?? Environment.CurrentDirectory, fileName };
        args.AddRange(arguments);
        ToolResult r = QemuTools.Run("env", args, timeout ?? TimeSpan.FromSeconds(120));
        return new ProcessResult(r.ExitCode, r.StandardOutput, r.StandardError);
    }

    /// <summary>Runs qemu-img (from qemu-utils) in <paramref name="workingDirectory"/> and expects success.</summary>
    public static string QemuImg(string workingDirectory, params string[] arguments) =>
        Run("qemu-img", arguments, workingDirectory).Expect().StdOut;

    /// <summary>Runs qemu-io on one image with the given -c commands and expects success without error messages.</summary>
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
        if (r.StdOut.Contains("error", StringComparison.OrdinalIgnoreCase) || r.StdOut.Contains("failed", StringComparison.OrdinalIgnoreCase) || r.StdErr.Length > 0)
        {
            throw new InvalidOperationException($"qemu-io reported: {r.StdOut}{r.StdErr}");
        }
    }
}
