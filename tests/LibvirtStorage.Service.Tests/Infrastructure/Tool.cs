using System.Diagnostics;

namespace LibvirtStorage.Service.Tests.Infrastructure;

/// <summary>Runs qemu-img and qemu-io with a timeout, in a chosen folder, and returns their output.</summary>
public static class Tool
{
    public static (int ExitCode, string Output) Run(string tool, string workingDirectory, params string[] args)
    {
        var info = new ProcessStartInfo(tool)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = workingDirectory,
        };
        foreach (string arg in args)
        {
            info.ArgumentList.Add(arg);
        }

        using Process process = Process.Start(info) ?? throw new InvalidOperationException($"cannot start {tool}");
        Task<string> stdout = process.StandardOutput.ReadToEndAsync();
        Task<string> stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(TimeSpan.FromSeconds(60)))
        {
            process.Kill();
            throw new TimeoutException($"{tool} {string.Join(' ', args)} did not finish in 60 s");
        }

        process.WaitForExit();
        return (process.ExitCode, stdout.Result + stderr.Result);
    }

    /// <summary>Runs qemu-img and expects success.</summary>
    public static string QemuImg(string workingDirectory, params string[] args)
    {
        (int code, string output) = Run("qemu-img", workingDirectory, args);
        if (code != 0)
        {
            throw new InvalidOperationException($"qemu-img {string.Join(' ', args)} exited with {code}: {output}");
        }

        return output;
    }

    /// <summary>Runs qemu-io commands on an image and expects no error in the output.</summary>
    public static string QemuIo(string image, string format, params string[] commands)
    {
        var args = new List<string> { "-f", format };
        foreach (string command in commands)
        {
            args.Add("-c");
            args.Add(command);
        }

        args.Add(image);
        (int code, string output) = Run("qemu-io", Path.GetDirectoryName(image)!, [.. args]);
        if (code != 0 || output.Contains("error", StringComparison.OrdinalIgnoreCase) || output.Contains("fail", StringComparison.OrdinalIgnoreCase)
            || output.Contains("Pattern verification", StringComparison.Ordinal))
        {
            throw new InvalidOperationException($"qemu-io {string.Join(' ', args)} exited with {code}: {output}");
        }

        return output;
    }

    /// <summary>Bytes a file occupies on disk (st_blocks * 512).</summary>
    public static long AllocatedBytes(string path) =>
        long.Parse(RunChecked("stat", "--format=%b", path).Trim(), System.Globalization.CultureInfo.InvariantCulture) * 512;

    private static string RunChecked(string tool, params string[] args)
    {
        (int code, string output) = Run(tool, "/", args);
        return code == 0 ? output : throw new InvalidOperationException(output);
    }
}
