using System.Reflection;

namespace LibvirtStorage.DBus;

/// <summary>Settings of the D-Bus adapter.</summary>
public sealed record StorageBusOptions
{
    /// <summary>Groups whose members may call the [admin] methods (besides uid 0 and lvstord's own uid).</summary>
    public IReadOnlyList<string> AdminGroups { get; init; } = ["libvirt"];

    /// <summary>Shown as <c>Manager.Version</c>; defaults to this assembly's informational version.</summary>
    public string Version { get; init; } = DefaultVersion;

    /// <summary>How long a finished job stays on the bus.</summary>
    public TimeSpan JobRetention { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>Shown as <c>Manager.StateDirectory</c>; null for the directory of the service's state file.</summary>
    public string? StateDirectory { get; init; }

    /// <summary>The group database that <see cref="AdminGroups"/> are resolved in (tests point it at a file of their own).</summary>
    internal string GroupFile { get; init; } = "/etc/group";

    private static string DefaultVersion =>
        typeof(StorageBusOptions).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "0.0.0";
}
