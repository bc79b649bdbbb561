using System.Diagnostics;

namespace LibvirtStorage.VhostBlk.Tests;

/// <summary>Runs qemu-img / qemu-io and the standalone back-end as child processes.</summary>
internal static class Tools
{
    /// <summary>The back-end's assembly, copied next to the tests by the project reference.</summary>
    public static string BackendDll => Path.Combine(AppContext.BaseDirectory, "lvstor-vhost-blk.dll");

    public static (int Exit, string Out, string Err) Run(string file, params string[] args)
    {
        using Process p = Start(file, args);
        Task<string> err = p.StandardError.ReadToEndAsync();
        string output = p.StandardOutput.ReadToEnd();
        if (!p.WaitForExit(60_000))
        {
            p.Kill();
            throw new TimeoutException($"{file} {string.Join(' ', args)} did not finish");
        }

        return (p.ExitCode, output, err.Result);
    }

    public static Process Start(string file, params string[] args)
    {
        var info = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string a in args)
            info.ArgumentList.Add(a);
        return Process.Start(info) ?? throw new InvalidOperationException($"could not start {file}");
    }

    /// <summary>Starts <c>dotnet lvstor-vhost-blk.dll args</c>.</summary>
    public static Process StartBackend(params string[] args) => Start("dotnet", [BackendDll, .. args]);

    public static void CreateQcow2(string path, string size)
    {
        var (exit, _, err) = Run("qemu-img", "create", "-q", "-f", "qcow2", path, size);
        if (exit != 0)
            throw new InvalidOperationException($"qemu-img create failed: {err}");
    }

    /// <summary><c>qemu-io -c 'read -P pattern offset length'</c>: true when every byte matches.</summary>
    public static bool QemuIoPatternMatches(string image, byte pattern, long offset, int length)
    {
        var (exit, output, err) = Run("qemu-io", "-f", "qcow2", "-r", "-c", $"read -P 0x{pattern:x2} {offset} {length}", image);
        return exit == 0 && !(output + err).Contains("Pattern verification failed", StringComparison.Ordinal)
            && output.Contains("read ", StringComparison.Ordinal);
    }
}
