namespace LibvirtStorage.Guest.Tests;

/// <summary>Where the guest scripts and the back-end are, and whether this machine can boot the guest.</summary>
internal static class GuestEnvironment
{
    private static readonly string[] RequiredTools = ["qemu-system-x86_64", "qemu-storage-daemon", "qemu-img", "qemu-io", "fio", "busybox", "python3", "dbus-daemon"];

    /// <summary>tests/guest in the source tree, found upwards from the test assembly.</summary>
    public static string ScriptDir { get; } = FindScriptDir();

    /// <summary>The back-end's apphost, copied next to the tests by the project reference.</summary>
    public static string Backend => Path.Combine(AppContext.BaseDirectory, "lvstor-vhost-blk");

    /// <summary>lvstord's apphost, copied next to the tests by the project reference (service scenarios).</summary>
    public static string Daemon => Path.Combine(AppContext.BaseDirectory, "lvstord");

    /// <summary>The lvstor CLI's apphost, likewise.</summary>
    public static string Cli => Path.Combine(AppContext.BaseDirectory, "lvstor");

    /// <summary>The first required tool not on PATH, or null when every one is there.</summary>
    public static string? MissingTool() => RequiredTools.FirstOrDefault(tool => !OnPath(tool));

    private static bool OnPath(string tool) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "/usr/bin:/bin")
            .Split(':', StringSplitOptions.RemoveEmptyEntries)
            .Append("/usr/sbin").Append("/sbin")
            .Any(dir => File.Exists(Path.Combine(dir, tool)));

    private static string FindScriptDir()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            string candidate = Path.Combine(dir.FullName, "tests", "guest");
            if (File.Exists(Path.Combine(candidate, "run-guest.sh")))
                return candidate;
        }

        throw new DirectoryNotFoundException($"tests/guest not found above {AppContext.BaseDirectory}");
    }
}
