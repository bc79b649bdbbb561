namespace LibvirtStorage.Daemon.Configuration;

/// <summary>The configuration cannot be used; the message names the file, line, column and key.</summary>
internal sealed class ConfigException(string message) : Exception(message);

/// <summary>Values given on the command line that replace the file's (for tests and the demo).</summary>
internal sealed record ConfigOverrides
{
    /// <summary>Replaces <c>bus</c>.</summary>
    public string? Bus { get; init; }

    /// <summary>Replaces <c>state_directory</c>.</summary>
    public string? StateDirectory { get; init; }

    /// <summary>Replaces <c>runtime_directory</c>.</summary>
    public string? RuntimeDirectory { get; init; }

    /// <summary>No overrides.</summary>
    public static ConfigOverrides None { get; } = new();
}
