using LibvirtStorage.Images;

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
/// <remarks>
/// The service's side of the contract: <see cref="Attach"/> once when it opens; any file work on a volume's chain
/// (or on a file an export holds) inside <c>using (exports.Quiesce(key))</c>, committed to the inventory before the
/// quiesce is disposed, so the export reopens the new chain; <see cref="Sync"/> after a pool's set of volumes or
/// its state changed.
/// </remarks>
public interface IVolumeExports
{
    /// <summary>
    /// Connects the exports to their service (called once by <see cref="StorageService.Open"/>) and opens the
    /// exports of every active pool. The default does nothing (an implementation that only reports states).
    /// </summary>
    void Attach(IVolumeExportHost host)
    {
    }

    /// <summary>
    /// Holds the volume's export still: new guest requests wait, requests in flight finish, the image is flushed
    /// and closed (so its files and locks are free). Disposing the result reopens the volume's chain as the host
    /// now describes it (or closes the export when the volume is gone) and lets the guest's requests run again.
    /// For a volume without an export the result does nothing (as does the default).
    /// </summary>
    IDisposable Quiesce(Guid volumeKey) => NoVolumeExports.Instance.Quiesce(volumeKey);

    /// <summary>
    /// Lends the volume's open chain to a job that changes it while a guest may run (stream, commit): the job writes
    /// through the export's own image, pauses the guest around steps that must not interleave with its requests, and
    /// may track what the guest writes. Null when the volume has no export holding its top read-write (the job then
    /// opens the chain itself). The service keeps the chain unchanged while it is lent (the job is a volume user).
    /// </summary>
    ILiveImage? Lend(Guid volumeKey) => null;

    /// <summary>
    /// How exports open images (O_DIRECT, cache sizes); jobs that open a volume's files themselves use the same, so
    /// their I/O goes the way the guest's does.
    /// </summary>
    ImageOpenOptions ImageOptions => new();

    /// <summary>
    /// Makes the exports of pool <paramref name="poolName"/> match the host: a socket for every volume of an active
    /// pool, none for a stopped or undefined pool or a deleted volume, and a reopened chain where a volume's top file,
    /// format or read-only state changed. The default does nothing.
    /// </summary>
    void Sync(string poolName)
    {
    }

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
    public void Attach(IVolumeExportHost host)
    {
    }

    /// <inheritdoc/>
    public IDisposable Quiesce(Guid volumeKey) => NoQuiesce.Instance;

    /// <inheritdoc/>
    public void Sync(string poolName)
    {
    }

    /// <inheritdoc/>
    public ILiveImage? Lend(Guid volumeKey) => null;

    /// <inheritdoc/>
    public ImageOpenOptions ImageOptions { get; } = new();

    private sealed class NoQuiesce : IDisposable
    {
        public static readonly NoQuiesce Instance = new();

        public void Dispose()
        {
        }
    }

    /// <inheritdoc/>
    public event Action<Guid>? StateChanged
    {
        add { }
        remove { }
    }
}
