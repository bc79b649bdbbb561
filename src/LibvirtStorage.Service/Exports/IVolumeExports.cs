namespace LibvirtStorage.Service;

/// <summary>Where a volume's vhost-user-blk export stands.</summary>
public enum ExportState
{
    /// <summary>No socket: the pool is stopped, or exports are not enabled in this process.</summary>
    Stopped,
    /// <summary>The socket listens; no front-end is connected.</summary>
    Listening,
    /// <summary>A front-end (a guest's QEMU) is connected.</summary>
    Connected,
}

/// <summary>
/// The vhost-user-blk exports of the volumes, as the service and its adapters see them. The service calls
/// the implementation around changes to a volume's chain; adapters read states and follow changes.
/// </summary>
public interface IVolumeExports
{
    /// <summary>The export state of the volume with key <paramref name="volumeKey"/>.</summary>
    ExportState GetState(Guid volumeKey);

    /// <summary>Raised (on any thread) with a volume key when its export state or its connected users change.</summary>
    event Action<Guid>? StateChanged;
}

/// <summary>No exports: every volume is <see cref="ExportState.Stopped"/>. The default of <see cref="StorageServiceOptions"/>.</summary>
public sealed class NoVolumeExports : IVolumeExports
{
    /// <summary>The shared instance.</summary>
    public static readonly NoVolumeExports Instance = new();

    /// <inheritdoc/>
    public ExportState GetState(Guid volumeKey) => ExportState.Stopped;

    /// <inheritdoc/>
    public event Action<Guid>? StateChanged
    {
        add { }
        remove { }
    }
}
