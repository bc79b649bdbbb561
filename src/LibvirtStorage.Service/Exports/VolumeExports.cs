using LibvirtStorage.Images;
using LibvirtStorage.Service.Native;
using LibvirtStorage.Vhost;
using Microsoft.Extensions.Logging;

namespace LibvirtStorage.Service;

/// <summary>
/// The vhost-user-blk exports of a running service: one socket per volume of every active pool, at
/// <c>&lt;runtime-dir&gt;/&lt;pool&gt;/&lt;volume&gt;.sock</c>, each serving the volume's chain through a
/// <see cref="SwitchableBlockDevice"/> so the chain can change under a running guest.
/// </summary>
/// <remarks>
/// <para>Pass it in <see cref="StorageServiceOptions.Exports"/>; <see cref="StorageService.Open"/> attaches it and
/// opens the exports of the active pools. One instance serves one service. Dispose it when the daemon stops: every
/// export stops accepting, its connection ends (QEMU with <c>reconnect=</c> comes back to the next daemon), its
/// requests drain, and its image is flushed and closed.</para>
/// <para>A connected front-end is registered with the service's users as <c>guest pid N (comm) on &lt;socket&gt;</c>
/// (SO_PEERCRED of the connection), so the service's rules refuse what a guest must not see and name it.</para>
/// <para>Each export has a switch lock: a quiesce holds it from closing the image until the reopen, so a
/// <see cref="Sync"/> and a quiesce never switch one export at the same time. A volume whose image cannot be opened
/// gets no socket (its state stays <see cref="ExportState.Stopped"/>) and the reason is logged; the next
/// <see cref="Sync"/> of its pool tries again.</para>
/// </remarks>
public sealed class VolumeExports : IVolumeExports, IAsyncDisposable
{
    private readonly VolumeExportOptions _options;
    private readonly VhostUserBlkOptions _serverOptions;
    private readonly ImageOpenOptions _imageOptions;
    private readonly ILogger _logger;
    private readonly Lock _lock = new();
    private readonly Lock _syncGate = new();
    private readonly Dictionary<Guid, Export> _exports = [];
    private IVolumeExportHost? _host;
    private bool _disposed;

    /// <summary>Exports configured by <paramref name="options"/>; nothing listens until a service attaches them.</summary>
    /// <exception cref="ArgumentOutOfRangeException">A queue setting is out of range.</exception>
    public VolumeExports(VolumeExportOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentOutOfRangeException.ThrowIfZero(options.NumQueues);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(options.NumQueues, (ushort)64);
        ArgumentOutOfRangeException.ThrowIfLessThan(options.ParallelRequestsPerQueue, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(options.ParallelRequestsPerQueue, 64);
        ArgumentOutOfRangeException.ThrowIfNegative(options.QueueThreads);
        if (options.MaxQueueSize is < 1 or > 32768 || (options.MaxQueueSize & (options.MaxQueueSize - 1)) != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(options), options.MaxQueueSize, "MaxQueueSize is a power of two up to 32768");
        }

        _options = options;
        _serverOptions = options.ToServerOptions();
        _imageOptions = options.ImageOptions;
        _logger = options.LoggerFactory.CreateLogger("LibvirtStorage.Exports");
    }

    /// <inheritdoc/>
    public event Action<Guid>? StateChanged;

    /// <summary>The socket paths that listen now (for the daemon's status and for tests).</summary>
    public IReadOnlyList<string> SocketPaths
    {
        get
        {
            lock (_lock)
            {
                return _exports.Values.Select(e => e.Target.SocketPath).Order(StringComparer.Ordinal).ToList();
            }
        }
    }

    /// <inheritdoc/>
    public ExportState GetState(Guid volumeKey)
    {
        lock (_lock)
        {
            return !_exports.TryGetValue(volumeKey, out Export? export) ? ExportState.Stopped
                : export.Connected ? ExportState.Connected : ExportState.Listening;
        }
    }

    /// <summary>
    /// Re-reads the volume's capacity from its image and tells a connected front-end when it grew (virtio config
    /// change). The reopen after a quiesce does this on its own; call it after resizing through other means.
    /// </summary>
    public ConfigChangeNotification NotifyCapacityChanged(Guid volumeKey)
    {
        Export? export;
        lock (_lock)
        {
            _exports.TryGetValue(volumeKey, out export);
        }

        return export?.Server.NotifyCapacityChanged() ?? ConfigChangeNotification.NoFrontend;
    }

    /// <inheritdoc/>
    public void Attach(IVolumeExportHost host)
    {
        ArgumentNullException.ThrowIfNull(host);
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_host is not null)
            {
                throw new InvalidOperationException("these exports already serve a service; create one VolumeExports per service");
            }

            _host = host;
        }

        foreach (string pool in host.ActivePools)
        {
            Sync(pool);
        }
    }

    /// <inheritdoc/>
    public IDisposable Quiesce(Guid volumeKey)
    {
        Export? export;
        lock (_lock)
        {
            if (_disposed || !_exports.TryGetValue(volumeKey, out export))
            {
                return Nothing.Instance;
            }
        }

        export.Switch.Wait();
        if (export.Closed)
        {
            export.Switch.Release();
            return Nothing.Instance;
        }

        CloseImage(export);
        return new Quiesced(this, export);
    }

    /// <inheritdoc/>
    public ImageOpenOptions ImageOptions => _imageOptions;

    /// <inheritdoc/>
    public ILiveImage? Lend(Guid volumeKey)
    {
        Export? export;
        lock (_lock)
        {
            if (_disposed || !_exports.TryGetValue(volumeKey, out export))
            {
                return null;
            }
        }

        export.Switch.Wait();
        try
        {
            return export.Closed || export.Image is not { IsReadOnly: false } image ? null : new LentImage(export, image);
        }
        finally
        {
            export.Switch.Release();
        }
    }

    /// <inheritdoc/>
    public void Sync(string poolName)
    {
        IVolumeExportHost host;
        lock (_lock)
        {
            if (_disposed || _host is null)
            {
                return;
            }

            host = _host;
        }

        lock (_syncGate)
        {
            var targets = host.GetExportTargets(poolName).ToDictionary(t => t.Key);
            List<Export> existing;
            lock (_lock)
            {
                existing = _exports.Values.Where(e => e.Target.Pool == poolName).ToList();
            }

            foreach (Export export in existing.Where(e => !targets.ContainsKey(e.Target.Key)))
            {
                export.Switch.Wait();
                if (!export.Closed)
                {
                    Close(export);
                }

                export.Switch.Release();
            }

            foreach (ExportTarget target in targets.Values)
            {
                Export? export;
                lock (_lock)
                {
                    _exports.TryGetValue(target.Key, out export);
                }

                if (export is null)
                {
                    Create(target);
                }
                else if ((export.Target != target || (target.ReadOnly != export.Device.IsReadOnly && !export.Connected)) && export.Switch.Wait(0))
                {
                    // A quiesce in progress reopens the export itself when it ends; otherwise switch it now.
                    try
                    {
                        if (!export.Closed)
                        {
                            CloseImage(export);
                            Reopen(export);
                        }
                    }
                    finally
                    {
                        export.Switch.Release();
                    }
                }
            }
        }
    }

    /// <summary>Stops accepting, ends every connection, drains the requests, flushes and closes every image.</summary>
    public ValueTask DisposeAsync()
    {
        List<Export> all;
        lock (_lock)
        {
            if (_disposed)
            {
                return ValueTask.CompletedTask;
            }

            _disposed = true;
            all = [.. _exports.Values];
        }

        lock (_syncGate)
        {
            foreach (Export export in all)
            {
                export.Switch.Wait();
                if (!export.Closed)
                {
                    Close(export);
                }

                export.Switch.Release();
            }
        }

        return ValueTask.CompletedTask;
    }

    /// <summary>Opens the chain and the socket of a volume that has no export; failures are logged.</summary>
    private void Create(ExportTarget target)
    {
        IBlockImage? image = null;
        SwitchableBlockDevice? device = null;
        try
        {
            EnsureDirectory(Path.GetDirectoryName(Path.GetDirectoryName(target.SocketPath))!);
            EnsureDirectory(Path.GetDirectoryName(target.SocketPath)!);
            image = ImageOpener.Open(target.File, _imageOptions with { ReadOnly = target.ReadOnly, Format = target.Format });
            device = new SwitchableBlockDevice(image.IsReadOnly, target.Volume, image.VirtualSize);
            device.Resume(new ImageBlockDevice(image, target.Volume));
            VhostUserBlkServer server = VhostUserBlkServer.Listen(target.SocketPath, device, _serverOptions, _logger);
            var export = new Export(target, device, server, image);
            server.FrontendConnected += info => OnConnected(export, info);
            server.FrontendDisconnected += _ => OnDisconnected(export);
            lock (_lock)
            {
                _exports[target.Key] = export;
            }

            server.Start();
            ExportsLog.Listening(_logger, target.Pool, target.Volume, target.SocketPath, image.IsReadOnly ? "read-only" : "read-write");
        }
        catch (Exception ex) when (ex is LibvirtStorageException or IOException or UnauthorizedAccessException or System.Net.Sockets.SocketException)
        {
            ExportsLog.CannotExport(_logger, ex, target.Pool, target.Volume, ex.Message);
            device?.Dispose();
            image?.Dispose();
            return;
        }

        StateChanged?.Invoke(target.Key);
    }

    /// <summary>Quiesces the device and closes its image (flushing first); the caller holds the export's switch.</summary>
    private void CloseImage(Export export)
    {
        if (!export.Device.IsQuiesced)
        {
            export.Device.Quiesce();
        }

        IBlockImage? image = export.Image;
        export.Image = null;
        if (image is null)
        {
            return;
        }

        try
        {
            if (!image.IsReadOnly)
            {
                image.Flush();
            }
        }
        catch (Exception ex) when (ex is LibvirtStorageException or IOException)
        {
            ExportsLog.FlushFailed(_logger, ex, export.Target.Pool, export.Target.Volume, ex.Message);
        }
        finally
        {
            image.Dispose();
        }
    }

    /// <summary>
    /// Reopens a quiesced export from the host's current description (the caller holds its switch): the new chain
    /// goes in and the gate opens; a gone volume's export closes; a change of read-only mode, or a shrink, rebuilds
    /// the server while no guest is connected; growth is announced to a connected guest.
    /// </summary>
    private void Reopen(Export export)
    {
        ExportTarget? target = _host?.GetExportTarget(export.Target.Key);
        bool disposed;
        lock (_lock)
        {
            disposed = _disposed;
        }

        if (target is null || disposed)
        {
            Close(export);
            return;
        }

        bool modeChanged = target.ReadOnly != export.Device.IsReadOnly;
        if (target.SocketPath != export.Target.SocketPath || (modeChanged && !export.Connected))
        {
            Close(export);
            Create(target);
            return;
        }

        long before = export.Device.Capacity;
        try
        {
            IBlockImage image = ImageOpener.Open(target.File,
                _imageOptions with { ReadOnly = target.ReadOnly || export.Device.IsReadOnly, Format = target.Format });
            export.Image = image;
            export.Target = target;
            export.Device.Resume(new ImageBlockDevice(image, target.Volume));
        }
        catch (Exception ex) when (ex is LibvirtStorageException or IOException or UnauthorizedAccessException)
        {
            // Requests fail with an I/O error rather than hang; the next sync tries again.
            ExportsLog.CannotExport(_logger, ex, target.Pool, target.Volume, ex.Message);
            export.Target = target with { File = "" };
            export.Device.Resume(null);
            return;
        }

        long after = export.Device.Capacity;
        if (after > before)
        {
            export.Server.NotifyCapacityChanged();
        }
        else if (after < before && !export.Connected)
        {
            // The server announced the larger size; a new one starts from the smaller.
            Close(export);
            Create(target);
        }
    }

    /// <summary>Stops an export for good: its socket disappears and its image is flushed and closed. The caller holds its switch.</summary>
    private void Close(Export export)
    {
        export.Closed = true;
        lock (_lock)
        {
            if (_exports.TryGetValue(export.Target.Key, out Export? current) && current == export)
            {
                _exports.Remove(export.Target.Key);
            }
        }

        // Requests waiting at a closed gate must end (with an I/O error) for the server's workers to be joined.
        if (export.Device.IsQuiesced)
        {
            export.Device.Resume(null);
        }

        export.Server.Dispose();
        CloseImage(export);
        export.Device.Dispose();
        export.Guest?.Dispose();
        export.Guest = null;
        ExportsLog.Closed(_logger, export.Target.Pool, export.Target.Volume, export.Target.SocketPath);
        StateChanged?.Invoke(export.Target.Key);
    }

    private void OnConnected(Export export, VhostUserFrontendInfo info)
    {
        string who = info.ProcessId is { } pid ? $"{FrontendProcess.Describe(pid)} on {export.Target.SocketPath}" : $"unknown process on {export.Target.SocketPath}";
        export.Guest = _host?.AttachUser(export.Target.Key, new VolumeUser("guest", who));
        lock (_lock)
        {
            export.Connected = true;
        }

        ExportsLog.GuestConnected(_logger, export.Target.Pool, export.Target.Volume, who);
        StateChanged?.Invoke(export.Target.Key);
    }

    private void OnDisconnected(Export export)
    {
        // The guest stops being a user before the state says Listening: whoever sees Listening finds no guest user.
        export.Guest?.Dispose();
        export.Guest = null;
        lock (_lock)
        {
            export.Connected = false;
        }

        ExportsLog.GuestDisconnected(_logger, export.Target.Pool, export.Target.Volume);
        StateChanged?.Invoke(export.Target.Key);

        // A volume that stopped backing others while this guest read it is served read-write from now on.
        if (export.Target.ReadOnly != export.Device.IsReadOnly && !export.Closed)
        {
            string pool = export.Target.Pool;
            ThreadPool.QueueUserWorkItem(_ => Sync(pool));
        }
    }

    /// <summary>Creates a socket directory with the configured mode and owner (an existing one gets them too).</summary>
    private void EnsureDirectory(string directory)
    {
        if (!OperatingSystem.IsLinux())
        {
            throw new PlatformNotSupportedException("vhost-user-blk exports need Linux");
        }

        Directory.CreateDirectory(directory);
        File.SetUnixFileMode(directory, _options.DirectoryMode);
        FileOwner.Change(directory, _options.SocketUserId, _options.SocketGroupId);
    }

    /// <summary>One volume's export. Fields change only under <see cref="Switch"/> (Connected and Guest on the connection thread).</summary>
    private sealed class Export(ExportTarget target, SwitchableBlockDevice device, VhostUserBlkServer server, IBlockImage image)
    {
        public ExportTarget Target { get; set; } = target;

        public SwitchableBlockDevice Device { get; } = device;

        public VhostUserBlkServer Server { get; } = server;

        public IBlockImage? Image { get; set; } = image;

        public SemaphoreSlim Switch { get; } = new(1, 1);

        public bool Connected { get; set; }

        public bool Closed { get; set; }

        public IDisposable? Guest { get; set; }
    }

    /// <summary>A quiesced export: disposing reopens it and releases its switch.</summary>
    private sealed class Quiesced(VolumeExports owner, Export export) : IDisposable
    {
        private int _disposed;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _disposed, 1) != 0)
            {
                return;
            }

            try
            {
                if (!export.Closed)
                {
                    owner.Reopen(export);
                }
            }
            finally
            {
                export.Switch.Release();
            }
        }
    }

    /// <summary>An export's open image lent to a job; pausing holds the export's switch so no quiesce or sync interleaves.</summary>
    private sealed class LentImage(Export export, IBlockImage image) : ILiveImage
    {
        public IBlockImage Image => image;

        public IDisposable Pause()
        {
            export.Switch.Wait();
            if (export.Closed || !ReferenceEquals(export.Image, image))
            {
                export.Switch.Release();
                throw new StorageServiceException(StorageErrorKind.Busy,
                    $"the chain of volume '{export.Target.Volume}' was closed or reopened while a job worked on it; start the job again");
            }

            return new PausedExport(export, export.Device.Quiesce());
        }

        public void Track(WriteTracker? tracker) => export.Device.Tracker = tracker;

        public bool GuestBusy => export.Device.InFlight > 0;

        public void Dispose() => export.Device.Tracker = null;
    }

    /// <summary>A paused export: disposing lets the guest's requests run again on the same image.</summary>
    private sealed class PausedExport(Export export, ImageBlockDevice? device) : IDisposable
    {
        private int _disposed;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _disposed, 1) == 0)
            {
                export.Device.Resume(device);
                export.Switch.Release();
            }
        }
    }

    private sealed class Nothing : IDisposable
    {
        public static readonly Nothing Instance = new();

        public void Dispose()
        {
        }
    }
}

/// <summary>The exports' log events.</summary>
internal static partial class ExportsLog
{
    [LoggerMessage(EventId = 100, Level = LogLevel.Information, Message = "export {Pool}/{Volume} listening on {Socket} ({Mode})")]
    public static partial void Listening(ILogger logger, string pool, string volume, string socket, string mode);

    [LoggerMessage(EventId = 101, Level = LogLevel.Error, Message = "cannot export {Pool}/{Volume}: {Reason}")]
    public static partial void CannotExport(ILogger logger, Exception error, string pool, string volume, string reason);

    [LoggerMessage(EventId = 102, Level = LogLevel.Information, Message = "export {Pool}/{Volume} closed; {Socket} removed")]
    public static partial void Closed(ILogger logger, string pool, string volume, string socket);

    [LoggerMessage(EventId = 103, Level = LogLevel.Information, Message = "export {Pool}/{Volume}: guest connected, {Who}")]
    public static partial void GuestConnected(ILogger logger, string pool, string volume, string who);

    [LoggerMessage(EventId = 104, Level = LogLevel.Information, Message = "export {Pool}/{Volume}: guest disconnected")]
    public static partial void GuestDisconnected(ILogger logger, string pool, string volume);

    [LoggerMessage(EventId = 105, Level = LogLevel.Error, Message = "export {Pool}/{Volume}: flushing before the switch failed: {Reason}")]
    public static partial void FlushFailed(ILogger logger, Exception error, string pool, string volume, string reason);
}
