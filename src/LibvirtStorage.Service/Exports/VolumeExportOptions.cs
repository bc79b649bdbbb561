using LibvirtStorage.Images;
using LibvirtStorage.Vhost;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace LibvirtStorage.Service;

/// <summary>How <see cref="VolumeExports"/> creates its sockets and serves guests.</summary>
public sealed record VolumeExportOptions
{
    /// <summary>Owner (uid) of each socket file and pool socket directory; null leaves the daemon's own.</summary>
    public int? SocketUserId { get; init; }

    /// <summary>Group (gid) of each socket file and pool socket directory (for example the kvm group); null leaves the daemon's own.</summary>
    public int? SocketGroupId { get; init; }

    /// <summary>Mode of each socket file; QEMU needs read and write. Default 0660.</summary>
    public UnixFileMode SocketMode { get; init; } =
        UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.GroupWrite;

    /// <summary>Mode of the runtime directory and of each <c>&lt;runtime-dir&gt;/&lt;pool&gt;</c> directory. Default 0750.</summary>
    public UnixFileMode DirectoryMode { get; init; } =
        UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute | UnixFileMode.GroupRead | UnixFileMode.GroupExecute;

    /// <summary>Virtqueues offered per export (1..64).</summary>
    public ushort NumQueues { get; init; } = 1;

    /// <summary>Largest virtqueue size a front-end may set (a power of two up to 32768).</summary>
    public int MaxQueueSize { get; init; } = new VhostUserBlkOptions().MaxQueueSize;

    /// <summary>Requests of one queue served at once (1..64).</summary>
    public int ParallelRequestsPerQueue { get; init; } = VhostUserBlkOptions.DefaultParallelRequestsPerQueue;

    /// <summary>At most this many threads serve one connection's queues; 0 gives every queue its own.</summary>
    public int QueueThreads { get; init; }

    /// <summary>Write-through: no FLUSH feature, every write is flushed before it completes.</summary>
    public bool Writethrough { get; init; }

    /// <summary>Accept guest memory the front-end could still truncate (unsealed memfd, memory-backend-file).</summary>
    public bool AllowUnsealedGuestMemory { get; init; }

    /// <summary>
    /// How exports open their images: O_DIRECT and the qcow2 metadata cache sizes. ReadOnly and Format are set per
    /// volume and override what is given here.
    /// </summary>
    public ImageOpenOptions ImageOptions { get; init; } = new();

    /// <summary>Where the exports log (connections, switches, failures to open an image).</summary>
    public ILoggerFactory LoggerFactory { get; init; } = NullLoggerFactory.Instance;

    /// <summary>The server options of one export.</summary>
    internal VhostUserBlkOptions ToServerOptions() => new()
    {
        NumQueues = NumQueues,
        MaxQueueSize = MaxQueueSize,
        ParallelRequestsPerQueue = ParallelRequestsPerQueue,
        QueueThreads = QueueThreads,
        Writethrough = Writethrough,
        AllowUnsealedGuestMemory = AllowUnsealedGuestMemory,
        SocketMode = SocketMode,
        SocketOwner = (SocketUserId, SocketGroupId),
    };
}
