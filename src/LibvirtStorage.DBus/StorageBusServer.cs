using LibvirtStorage.Service;
using Microsoft.Extensions.Logging;
using Tmds.DBus.Protocol;

namespace LibvirtStorage.DBus;

/// <summary>
/// lvstord's D-Bus API, <c>org.lvstor.Storage1</c> (docs/dbus-api.md), over a <see cref="StorageService"/>:
/// the manager, pool, volume and job objects, their properties and change signals, authorisation, and jobs
/// for the long operations.
/// </summary>
/// <remarks>
/// <para>Every call runs off the connection's receive loop (a slow clone or a blocked service call never
/// stalls other callers). A mutating call resyncs the object tree from the service before it replies, so the
/// signals it causes (InterfacesAdded/Removed, PropertiesChanged) arrive before its reply.</para>
/// <para>The tree is also resynced when exports change (guests connect) and when jobs progress; job
/// <c>BytesDone</c> changes are signalled at most ten times a second.</para>
/// </remarks>
public sealed partial class StorageBusServer : IAsyncDisposable
{
    /// <summary>The well-known name the server owns.</summary>
    public const string BusName = "org.lvstor.Storage1";

    /// <summary>The manager object, parent of every other object.</summary>
    public const string RootPath = "/org/lvstor/Storage1";

    private readonly DBusConnection _connection;
    private readonly ILogger _logger;
    private readonly Lock _syncLock = new();
    private readonly CancellationTokenSource _stopping = new();
    private ObjectTree _tree = ObjectTree.Empty;
    private int _resyncPending;
    private long _treeBuiltAt = long.MinValue / 2;

    /// <summary>How old a tree reads may use: changes made through the API resync at once, so only outside
    /// changes (a guest writing grows Allocation) can be this late. Keeps a burst of Gets to one header scan.</summary>
    internal static readonly TimeSpan ReadFreshness = TimeSpan.FromSeconds(1);

    private StorageBusServer(DBusConnection connection, StorageService service, StorageBusOptions options, ILoggerFactory loggerFactory)
    {
        _connection = connection;
        Service = service;
        Options = options;
        _logger = loggerFactory.CreateLogger<StorageBusServer>();
        Jobs = new JobManager(service, options.JobRetention);
        Authorizer = new CallerAuthorizer(connection, options);
        StartedAt = DateTimeOffset.UtcNow;
        Dispatcher = new MethodDispatcher(this, _logger);
    }

    /// <summary>Completes when the bus connection drops (or the server is disposed).</summary>
    public Task Completion { get; private set; } = Task.CompletedTask;

    internal StorageService Service { get; }

    internal StorageBusOptions Options { get; }

    internal JobManager Jobs { get; }

    internal CallerAuthorizer Authorizer { get; }

    internal DBusConnection Connection => _connection;

    internal DateTimeOffset StartedAt { get; }

    internal MethodDispatcher Dispatcher { get; }

    /// <summary>The latest snapshot of the exported objects.</summary>
    internal ObjectTree Tree => Volatile.Read(ref _tree);

    /// <summary>
    /// Connects to <paramref name="address"/> ("system", "session", or a D-Bus address), registers every object,
    /// then requests <see cref="BusName"/> without queueing.
    /// </summary>
    /// <exception cref="InvalidOperationException">The name is owned by another connection (the message names it).</exception>
    public static async Task<StorageBusServer> StartAsync(string address, StorageService service, StorageBusOptions options,
        ILoggerFactory loggerFactory, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(address);
        ArgumentNullException.ThrowIfNull(service);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(loggerFactory);

        string? resolved = address switch
        {
            "system" => DBusAddress.System,
            "session" => DBusAddress.Session,
            _ => address,
        };
        if (string.IsNullOrEmpty(resolved))
        {
            throw new InvalidOperationException($"no D-Bus address is known for the {address} bus (is DBUS_{address.ToUpperInvariant()}_BUS_ADDRESS set?)");
        }

        var connection = new DBusConnection(resolved);
        var server = new StorageBusServer(connection, service, options, loggerFactory);
        try
        {
            await connection.ConnectAsync().AsTask().WaitAsync(cancellationToken).ConfigureAwait(false);
            server.Completion = WatchAsync(connection);
            connection.AddMethodHandlers([server.Dispatcher, .. IntermediateNode.All(server.Dispatcher)]);
            await Task.Run(server.Resync, cancellationToken).ConfigureAwait(false);
            server.Jobs.Changed += server.OnJobChanged;
            service.Exports.StateChanged += server.OnExportChanged;

            if (!await connection.TryRequestNameAsync(BusName, RequestNameOptions.None).ConfigureAwait(false))
            {
                string owner = await GetNameOwnerAsync(connection, BusName).ConfigureAwait(false);
                throw new InvalidOperationException($"the bus name {BusName} is already owned by {owner}; is another lvstord running? stop it first");
            }

            server._logger.LogInformation("serving {BusName} on {Address}", BusName, resolved);

            // Streams and commits a previous lvstord left running go on now (their Job objects appear like new ones).
            foreach (string resumed in server.Jobs.ResumeRecorded())
            {
                server._logger.LogInformation("{Resumed}", resumed);
            }

            return server;
        }
        catch
        {
            await server.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>Unregisters, cancels running jobs and closes the connection.</summary>
    public async ValueTask DisposeAsync()
    {
        if (_stopping.IsCancellationRequested)
        {
            return;
        }

        _stopping.Cancel();
        Service.Exports.StateChanged -= OnExportChanged;
        Jobs.Changed -= OnJobChanged;
        Jobs.Dispose();
        _connection.Dispose();
        try
        {
            await Completion.ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
        }
    }

    private static async Task WatchAsync(DBusConnection connection)
    {
        Exception? reason = await connection.DisconnectedAsync().ConfigureAwait(false);
        _ = reason;
    }

    private static async Task<string> GetNameOwnerAsync(DBusConnection connection, string name)
    {
        try
        {
            MessageBuffer message;
            using (MessageWriter writer = connection.GetMessageWriter())
            {
                writer.WriteMethodCallHeader("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "GetNameOwner", "s", MessageFlags.None);
                writer.WriteString(name);
                message = writer.CreateMessage();
            }

            string owner = await connection.CallMethodAsync(message, static (Message reply, object? _) => reply.GetBodyReader().ReadString(), null).ConfigureAwait(false);
            return $"connection {owner}";
        }
        catch (DBusErrorReplyException)
        {
            return "another connection (it has gone since)";
        }
    }

    private void OnExportChanged(Guid volumeKey) => RequestResync(TimeSpan.Zero);

    private void OnJobChanged(StorageJob job)
    {
        // Progress alone is throttled; a job that starts, ends or goes away is shown at once.
        bool known = Tree.Find(ObjectPaths.Job(job.Id)) is { } current && Jobs.Find(job.Id) is not null &&
                     current.Properties["State"].Equals(BusValue.String("running")) && job.State == StorageJobState.Running;
        RequestResync(known ? ProgressInterval : TimeSpan.Zero);
    }

    /// <summary>Schedules one resync (coalescing requests) after <paramref name="delay"/>, off the caller's thread.</summary>
    internal void RequestResync(TimeSpan delay)
    {
        if (_stopping.IsCancellationRequested || Interlocked.Exchange(ref _resyncPending, 1) == 1)
        {
            return;
        }

        _ = Task.Run(async () =>
        {
            if (delay > TimeSpan.Zero)
            {
                await Task.Delay(delay).ConfigureAwait(false);
            }

            Volatile.Write(ref _resyncPending, 0);
            try
            {
                Resync();
            }
            catch (Exception ex) when (ex is not OutOfMemoryException)
            {
                _logger.LogError(ex, "resync of the D-Bus objects failed");
            }
        });
    }

    /// <summary>The current tree, resynced first when it is older than <see cref="ReadFreshness"/>.</summary>
    internal ObjectTree FreshTree() =>
        Environment.TickCount64 - Volatile.Read(ref _treeBuiltAt) > (long)ReadFreshness.TotalMilliseconds ? Resync() : Tree;

    /// <summary>Rebuilds the tree from the service, signals what changed, and returns the new tree.</summary>
    internal ObjectTree Resync()
    {
        lock (_syncLock)
        {
            ObjectTree old = Tree;
            ObjectTree next = HoldThrottledProgress(old, ObjectTree.Build(Service, Jobs, Options));
            Volatile.Write(ref _tree, next);
            Volatile.Write(ref _treeBuiltAt, Environment.TickCount64);
            SendChanges(old, next);
            return next;
        }
    }
}
