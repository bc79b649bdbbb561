using Microsoft.Extensions.Logging;

namespace LibvirtStorage.Daemon.Configuration;

/// <summary>lvstord's configuration, as loaded and validated by <see cref="ConfigLoader"/>.</summary>
internal sealed record DaemonConfig
{
    /// <summary>Where the configuration came from: a file path, or <see cref="ConfigLoader.EmbeddedDefaultName"/>.</summary>
    public string Source { get; init; } = ConfigLoader.EmbeddedDefaultName;

    /// <summary><c>system</c>, <c>session</c>, or a D-Bus address such as <c>unix:path=/run/x</c>.</summary>
    public string Bus { get; init; } = "system";

    /// <summary>Directory of <c>inventory.json</c>.</summary>
    public string StateDirectory { get; init; } = "/var/lib/lvstor";

    /// <summary>Directory of the export sockets.</summary>
    public string RuntimeDirectory { get; init; } = "/run/lvstor";

    /// <summary>Groups whose members may call the admin methods (besides root and lvstord's own uid).</summary>
    public IReadOnlyList<string> AdminGroups { get; init; } = ["libvirt"];

    /// <summary>Ownership and modes of the export sockets and their per-pool directories.</summary>
    public SocketConfig Sockets { get; init; } = new();

    /// <summary>vhost-user-blk export settings.</summary>
    public IoConfig Io { get; init; } = new();

    /// <summary>qcow2 metadata cache sizes.</summary>
    public CacheConfig Cache { get; init; } = new();

    /// <summary>Job bookkeeping.</summary>
    public JobsConfig Jobs { get; init; } = new();

    /// <summary>Pools defined at startup when missing from the inventory.</summary>
    public IReadOnlyList<PoolConfig> Pools { get; init; } = [];

    /// <summary>Log level and format.</summary>
    public LoggingConfig Logging { get; init; } = new();
}

/// <summary>Ownership and modes of the export sockets (<c>sockets:</c>).</summary>
internal sealed record SocketConfig
{
    /// <summary>Owner of the sockets (a user name).</summary>
    public string User { get; init; } = "root";

    /// <summary>Group of the sockets (a group name).</summary>
    public string Group { get; init; } = "root";

    /// <summary>The uid <see cref="User"/> resolved to.</summary>
    public uint Uid { get; init; }

    /// <summary>The gid <see cref="Group"/> resolved to.</summary>
    public uint Gid { get; init; }

    /// <summary>Mode of each socket file.</summary>
    public UnixFileMode Mode { get; init; } = (UnixFileMode)Convert.ToInt32("660", 8);

    /// <summary>Mode of each per-pool socket directory.</summary>
    public UnixFileMode DirectoryMode { get; init; } = (UnixFileMode)Convert.ToInt32("755", 8);
}

/// <summary>vhost-user-blk export settings (<c>io:</c>).</summary>
internal sealed record IoConfig
{
    /// <summary>Virtqueues offered per export.</summary>
    public int Queues { get; init; } = 1;

    /// <summary>Largest virtqueue size a front-end may set (a power of two).</summary>
    public int QueueSize { get; init; } = 1024;

    /// <summary>Requests of one queue served at once.</summary>
    public int ParallelRequests { get; init; } = 4;

    /// <summary>Threads serving one connection's queues; 0 gives every queue its own.</summary>
    public int QueueThreads { get; init; }

    /// <summary>Flush every write before completing it, and offer no flush to the guest.</summary>
    public bool Writethrough { get; init; }

    /// <summary>Open images with O_DIRECT (QEMU's cache=none).</summary>
    public bool Direct { get; init; }
}

/// <summary>qcow2 metadata caches per open image (<c>cache:</c>); null means the engine's automatic size.</summary>
internal sealed record CacheConfig
{
    /// <summary>Bytes of L2 tables to cache, or null for automatic.</summary>
    public long? L2Size { get; init; }

    /// <summary>Bytes of refcount blocks to cache, or null for automatic.</summary>
    public long? RefcountSize { get; init; }
}

/// <summary>Job bookkeeping (<c>jobs:</c>).</summary>
internal sealed record JobsConfig
{
    /// <summary>How long a finished job stays listed.</summary>
    public TimeSpan Retention { get; init; } = TimeSpan.FromSeconds(60);
}

/// <summary>A pool defined at startup when the inventory lacks it (<c>pools:</c>).</summary>
/// <param name="Name">Pool name (rules of <c>StorageNames</c>).</param>
/// <param name="Path">Absolute directory.</param>
/// <param name="Autostart">Start it at startup (and mark it autostart).</param>
internal sealed record PoolConfig(string Name, string Path, bool Autostart);

/// <summary>How lvstord's log is written (<c>logging:</c>).</summary>
internal sealed record LoggingConfig
{
    /// <summary>The lowest level written.</summary>
    public LogLevel Level { get; init; } = LogLevel.Information;

    /// <summary>The console format.</summary>
    public LogFormat Format { get; init; } = LogFormat.Systemd;
}

/// <summary>Console log formats.</summary>
internal enum LogFormat
{
    /// <summary>One line per message with a <c>&lt;N&gt;</c> syslog priority prefix, for journald.</summary>
    Systemd,
    /// <summary>Human-readable lines for a terminal.</summary>
    Simple,
    /// <summary>One JSON object per line.</summary>
    Json,
}
