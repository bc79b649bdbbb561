using LibvirtStorage.Images;
using System.Net.Sockets;
using LibvirtStorage.Daemon.Configuration;
using LibvirtStorage.DBus;
using LibvirtStorage.Service;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Tmds.DBus.Protocol;

namespace LibvirtStorage.Daemon.Hosting;

/// <summary>
/// Creates the exports, opens the storage service over them (active pools start listening), defines the
/// configured pools and takes the bus name with the D-Bus adapter, in that order; the host reports READY=1 only after <see cref="StartAsync"/> returns, so readiness comes after
/// the name is owned. Stopping reverses the order: no more calls, exports closed (flushed), service released.
/// </summary>
internal sealed partial class StorageDaemon(
    DaemonConfig config,
    IHostApplicationLifetime lifetime,
    ILoggerFactory loggerFactory) : IHostedService
{
    private readonly ILogger _logger = loggerFactory.CreateLogger("lvstord");
    private VolumeExports? _exports;
    private StorageBusServer? _bus;
    private volatile bool _stopping;

    /// <summary>The open storage service (null before start and after stop).</summary>
    public StorageService? Service { get; private set; }

    /// <summary>The exit code for the process: set when the daemon stops because something failed while running.</summary>
    public int ExitCode { get; private set; } = ExitCodes.Success;

    /// <inheritdoc/>
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        try
        {
            await StartInOrderAsync(cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            // Whatever did start (exports listening, a bus connection) is closed again before the error is reported.
            await StopAsync(CancellationToken.None).ConfigureAwait(false);
            throw;
        }
    }

    private async Task StartInOrderAsync(CancellationToken cancellationToken)
    {
        LogStarting(config.Source, config.StateDirectory, config.RuntimeDirectory);
        PrepareDirectory(config.StateDirectory, "state_directory", "--state-dir");
        PrepareDirectory(config.RuntimeDirectory, "runtime_directory", "--runtime-dir");

        _exports = new VolumeExports(ExportOptions());
        Service = OpenService(_exports); // attaches the exports: sockets of active pools listen from here on
        foreach (StorageProblem problem in Service.LoadProblems)
        {
            LogLoadProblem(problem.Pool, problem.File, problem.Message);
        }

        DefineConfiguredPools(Service);

        foreach (string group in config.AdminGroups.Where(g => UnixAccounts.FindGroupId(g) is null))
        {
            LogUnknownAdminGroup(group);
        }

        string address = ResolveBusAddress(config.Bus);
        _bus = await StartBusAsync(address, Service, cancellationToken).ConfigureAwait(false);
        _ = WatchBusAsync(_bus.Completion);
        LogReady(StorageBusServer.BusName, address, Service.ListPools().Count, _exports.SocketPaths.Count);
    }

    /// <inheritdoc/>
    public async Task StopAsync(CancellationToken cancellationToken)
    {
        LogStopping();
        _stopping = true;
        if (_bus is not null)
        {
            LogClosingBus();
            await _bus.DisposeAsync().ConfigureAwait(false);
            _bus = null;
        }

        if (_exports is not null)
        {
            // Each export stops accepting, ends its connection, drains, flushes and closes its image; the guest's
            // QEMU reconnects to the same socket path when lvstord is back.
            LogClosingExports(_exports.SocketPaths.Count);
            await _exports.DisposeAsync().ConfigureAwait(false);
            _exports = null;
        }

        if (Service is not null)
        {
            LogClosingService(Service.StateFile);
            Service = null;
        }

        LogStopped();
    }

    /// <summary>The bus address for <c>system</c>, <c>session</c> or an explicit address.</summary>
    public static string ResolveBusAddress(string bus) => bus switch
    {
        "system" => DBusAddress.System ?? throw new DaemonStartException(ExitCodes.Unavailable, "no system bus address is known; set 'bus' to an address"),
        "session" => DBusAddress.Session ?? throw new DaemonStartException(ExitCodes.Unavailable,
            "no session bus address is known (DBUS_SESSION_BUS_ADDRESS is unset); set 'bus' to an address"),
        _ => bus,
    };

    private static void PrepareDirectory(string directory, string key, string option)
    {
        try
        {
            Directory.CreateDirectory(directory);
            // Opening a file for writing proves what a later state write needs, before anything is served.
            string probe = Path.Combine(directory, $".lvstord-write-test-{Environment.ProcessId}");
            File.WriteAllBytes(probe, []);
            File.Delete(probe);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new DaemonStartException(ExitCodes.CannotCreate,
                $"{key} {directory} cannot be created or written ({e.Message}); fix its ownership or set '{key}' (or {option})", e);
        }
    }

    private VolumeExportOptions ExportOptions() => new()
    {
        // Only chown when the configured owner is not the daemon itself, so an unprivileged test run needs no capability.
        SocketUserId = config.Sockets.Uid == UnixAccounts.EffectiveUserId ? null : (int)config.Sockets.Uid,
        SocketGroupId = config.Sockets.Gid == UnixAccounts.EffectiveGroupId ? null : (int)config.Sockets.Gid,
        SocketMode = config.Sockets.Mode,
        DirectoryMode = config.Sockets.DirectoryMode,
        NumQueues = (ushort)config.Io.Queues,
        MaxQueueSize = config.Io.QueueSize,
        ParallelRequestsPerQueue = config.Io.ParallelRequests,
        QueueThreads = config.Io.QueueThreads,
        Writethrough = config.Io.Writethrough,
        ImageOptions = new ImageOpenOptions
        {
            Direct = config.Io.Direct,
            L2CacheBytes = config.Cache.L2Size,
            RefcountCacheBytes = config.Cache.RefcountSize,
        },
        LoggerFactory = loggerFactory,
    };

    private async Task<StorageBusServer> StartBusAsync(string address, StorageService service, CancellationToken ct)
    {
        var options = new StorageBusOptions
        {
            AdminGroups = config.AdminGroups,
            JobRetention = config.Jobs.Retention,
            StateDirectory = config.StateDirectory,
        };
        try
        {
            return await StorageBusServer.StartAsync(address, service, options, loggerFactory, ct).ConfigureAwait(false);
        }
        catch (DBusErrorReplyException e) when (e.ErrorName == "org.freedesktop.DBus.Error.AccessDenied")
        {
            throw new DaemonStartException(ExitCodes.Unavailable,
                $"the bus at {address} does not let this user ({Environment.UserName}) own {StorageBusServer.BusName}: {e.ErrorMessage}; "
                + "run lvstord as root, or install packaging/dbus-1/system.d/org.lvstor.Storage1.conf", e);
        }
        catch (InvalidOperationException e)
        {
            // The name is owned by another connection; the message names it.
            throw new DaemonStartException(ExitCodes.Unavailable, $"{e.Message} (bus {address})", e);
        }
        catch (Exception e) when (e is DBusConnectionException or IOException or SocketException)
        {
            throw new DaemonStartException(ExitCodes.Unavailable,
                $"cannot connect to the D-Bus bus at {address}: {e.Message}; start dbus or set 'bus' in the configuration (or --bus)", e);
        }
    }

    private StorageService OpenService(VolumeExports exports)
    {
        try
        {
            return StorageService.Open(new StorageServiceOptions
            {
                StateDirectory = config.StateDirectory,
                RuntimeDirectory = config.RuntimeDirectory,
                Exports = exports,
            });
        }
        catch (StorageServiceException e) when (e.Kind == StorageErrorKind.Corrupt)
        {
            throw new DaemonStartException(ExitCodes.DataError, $"{e.Message}; restore it from a backup or move it away to start empty", e);
        }
        catch (StorageServiceException e)
        {
            throw new DaemonStartException(ExitCodes.CannotCreate, $"cannot load the inventory in {config.StateDirectory}: {e.Message}", e);
        }
    }

    private void DefineConfiguredPools(StorageService service)
    {
        var existing = service.ListPools().ToDictionary(p => p.Name, StringComparer.Ordinal);
        foreach (PoolConfig pool in config.Pools)
        {
            if (existing.TryGetValue(pool.Name, out PoolInfo? known))
            {
                if (known.Path != pool.Path)
                {
                    LogPoolPathDiffers(pool.Name, known.Path, pool.Path);
                }

                continue;
            }

            try
            {
                service.DefinePool(pool.Name, pool.Path);
                if (pool.Autostart)
                {
                    service.SetPoolAutostart(pool.Name, true);
                    service.StartPool(pool.Name);
                }

                LogPoolDefined(pool.Name, pool.Path, pool.Autostart);
            }
            catch (StorageServiceException e)
            {
                throw new DaemonStartException(ExitCodes.Config,
                    $"{config.Source}: pools: cannot define pool \"{pool.Name}\" at {pool.Path}: {e.Message}", e);
            }
        }
    }

    private async Task WatchBusAsync(Task completion)
    {
        string reason = "the connection closed";
        try
        {
            await completion.ConfigureAwait(false);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            reason = e.Message;
        }

        if (!_stopping)
        {
            // Without the bus nobody can reach lvstord: stop cleanly, and let the service manager restart it.
            LogBusLost(reason);
            ExitCode = ExitCodes.Unavailable;
            lifetime.StopApplication();
        }
    }

    [LoggerMessage(1, LogLevel.Information, "starting with configuration {Source}, state in {StateDirectory}, sockets in {RuntimeDirectory}")]
    private partial void LogStarting(string source, string stateDirectory, string runtimeDirectory);

    [LoggerMessage(2, LogLevel.Warning, "inventory problem in pool {Pool}, {File}: {Message}")]
    private partial void LogLoadProblem(string pool, string? file, string message);

    [LoggerMessage(3, LogLevel.Information, "defined pool {Pool} at {Path} (autostart {Autostart})")]
    private partial void LogPoolDefined(string pool, string path, bool autostart);

    [LoggerMessage(4, LogLevel.Warning, "pool {Pool} is defined at {KnownPath}, not at {ConfiguredPath} as configured; keeping {KnownPath}")]
    private partial void LogPoolPathDiffers(string pool, string knownPath, string configuredPath);

    [LoggerMessage(5, LogLevel.Warning, "admin group {Group} does not exist on this system; its members cannot be recognised")]
    private partial void LogUnknownAdminGroup(string group);

    [LoggerMessage(6, LogLevel.Information, "ready: {BusName} owned on {Address}, {Pools} pools, {Exports} exports listening")]
    private partial void LogReady(string busName, string address, int pools, int exports);

    [LoggerMessage(7, LogLevel.Information, "stopping")]
    private partial void LogStopping();

    [LoggerMessage(8, LogLevel.Information, "closing the D-Bus connection: no more calls")]
    private partial void LogClosingBus();

    [LoggerMessage(9, LogLevel.Information, "releasing the storage service (state in {StateFile})")]
    private partial void LogClosingService(string stateFile);

    [LoggerMessage(10, LogLevel.Information, "stopped")]
    private partial void LogStopped();

    [LoggerMessage(12, LogLevel.Information, "closing {Exports} exports: flushing images, removing sockets")]
    private partial void LogClosingExports(int exports);


    [LoggerMessage(11, LogLevel.Error, "lost the D-Bus connection ({Reason}); stopping")]
    private partial void LogBusLost(string reason);
}
