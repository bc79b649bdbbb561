using System.Diagnostics;

namespace LibvirtStorage.Libvirt.Tests;

/// <summary>Where the harness, lvstord and the storage module are, and what this machine lacks to run them.</summary>
internal static class LibvirtEnvironment
{
    private static readonly Lazy<string?> Missing = new(FindMissing);
    private static readonly string[] GuestTools = ["qemu-system-x86_64", "busybox"];

    /// <summary>The repository root, found upwards from the test assembly.</summary>
    public static string RepoRoot { get; } = FindRepoRoot();

    /// <summary>tests/libvirt/harness.sh.</summary>
    public static string Harness => Path.Combine(RepoRoot, "tests", "libvirt", "harness.sh");

    /// <summary>tests/guest, the test guest's scripts.</summary>
    public static string GuestScripts => Path.Combine(RepoRoot, "tests", "guest");

    /// <summary>lvstord's apphost, copied next to the tests by the project reference.</summary>
    public static string Daemon => Path.Combine(AppContext.BaseDirectory, "lvstord");

    /// <summary>The module <c>make shim</c> builds (or <c>$LVH_MODULE</c>).</summary>
    public static string Module =>
        Environment.GetEnvironmentVariable("LVH_MODULE") is { Length: > 0 } m
            ? m
            : Path.Combine(RepoRoot, "native-shim", "build", "libvirt_storage_backend_zfs.so");

    /// <summary>What this machine lacks for the libvirt tests (named by the harness), or null.</summary>
    public static string? MissingReason => Missing.Value;

    /// <summary>What this machine lacks for the guest tests on top of that, or null.</summary>
    public static string? MissingGuestReason =>
        MissingReason ?? GuestTools.Where(t => !OnPath(t)).Select(t => $"{t} is not installed").FirstOrDefault();

    private static string? FindMissing()
    {
        var info = new ProcessStartInfo("bash") { RedirectStandardOutput = true, RedirectStandardError = true };
        info.ArgumentList.Add(Harness);
        info.ArgumentList.Add("missing");
        info.Environment["LVH_WORK"] = Path.GetTempPath();
        info.Environment["LVSTORD"] = Daemon;
        info.Environment["LVH_MODULE"] = Module;
        using var p = Process.Start(info)!;
        string output = p.StandardOutput.ReadToEnd().Trim();
        p.WaitForExit();
        return output.Length == 0 ? null : $"{output} is missing (.ci/run installs and builds everything: see tests/libvirt/README.md)";
    }

    private static bool OnPath(string tool) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "/usr/bin:/bin")
            .Split(':', StringSplitOptions.RemoveEmptyEntries)
            .Append("/usr/sbin").Append("/sbin")
            .Any(dir => File.Exists(Path.Combine(dir, tool)));

    private static string FindRepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "tests", "libvirt", "harness.sh")))
                return dir.FullName;
        }

        throw new DirectoryNotFoundException($"tests/libvirt/harness.sh not found above {AppContext.BaseDirectory}");
    }
}
