using System.Runtime.InteropServices;
using LibvirtStorage.Vhost.Backend;
using LibvirtStorage.Vhost.Blk;
using LibvirtStorage.Vhost.Protocol;
using Microsoft.Extensions.Logging;
using Microsoft.Win32.SafeHandles;

namespace LibvirtStorage.Vhost;

/// <summary>Settings of one vhost-user-blk export.</summary>
public sealed record VhostUserBlkOptions
{
    /// <summary>Number of virtqueues offered (1..64; the front-end may use fewer).</summary>
    public ushort NumQueues { get; init; } = 1;

    /// <summary>
    /// Requests of one queue served at once (1..64): the queue's worker and this many - 1 I/O threads share each
    /// batch of available requests. 1 serves them one after another.
    /// </summary>
    public int ParallelRequestsPerQueue { get; init; } = DefaultParallelRequestsPerQueue;

    /// <summary>Default of <see cref="ParallelRequestsPerQueue"/>, chosen by measurement (docs/performance-analysis.md).</summary>
    public const int DefaultParallelRequestsPerQueue = 4;

    /// <summary>Largest queue size the front-end may set (a power of two ≤ 32768).</summary>
    public int MaxQueueSize { get; init; } = VirtioBlkDevice.DefaultMaxQueueSize;

    /// <summary>
    /// Write-through export: no VIRTIO_BLK_F_FLUSH, and each write, discard and write-zeroes is flushed to the image
    /// before it completes (see <c>VirtioBlkSettings.Writeback</c>).
    /// </summary>
    public bool Writethrough { get; init; }

    /// <summary>Mode of the socket file created by <see cref="VhostUserBlkServer.Listen"/>.</summary>
    public UnixFileMode SocketMode { get; init; } = UnixFileMode.UserRead | UnixFileMode.UserWrite;

    /// <summary>
    /// Owner (uid) and group (gid) given to the socket file before it appears at its path; null leaves the
    /// process's own. Changing them needs the privileges chown(2) asks for.
    /// </summary>
    public (int? UserId, int? GroupId) SocketOwner { get; init; }

    /// <summary>
    /// Accept guest memory the front-end could still truncate (memory-backend-file, or memfd with seal=off).
    /// Off by default: a truncated region raises SIGBUS in the back-end, which ends every export of the process.
    /// </summary>
    public bool AllowUnsealedGuestMemory { get; init; }

    /// <summary>
    /// At most this many threads serve a connection's queues (queue i on thread i % N); 0, the default, gives
    /// every queue a thread of its own. Fewer threads than queues save threads when many exports are served, at
    /// the cost of queues on one thread waiting for each other's batches.
    /// </summary>
    public int QueueThreads { get; init; }

    /// <summary>
    /// How long <see cref="VhostUserBlkServer.NotifyCapacityChanged"/> waits for the front-end to take a
    /// config-change message and acknowledge it; a silent front-end costs at most this, then its back-end channel
    /// is closed.
    /// </summary>
    public TimeSpan BackendAckTimeout { get; init; } = VhostUserRequestDispatcher.DefaultBackendAckTimeout;
}

/// <summary>A front-end connection of a <see cref="VhostUserBlkServer"/>, with the peer's credentials (SO_PEERCRED).</summary>
/// <param name="Number">The connection's number (1 for the first front-end served).</param>
/// <param name="ProcessId">The front-end's process id as of its connect, or null when unknown.</param>
/// <param name="UserId">The front-end's user id, or null when unknown.</param>
/// <param name="GroupId">The front-end's group id, or null when unknown.</param>
public sealed record VhostUserFrontendInfo(int Number, int? ProcessId, int? UserId, int? GroupId);

/// <summary>
/// The public entry of the vhost-user-blk back-end: serves one <see cref="IBlockDevice"/> to one front-end (QEMU)
/// at a time over a UNIX socket (QEMU <c>docs/interop/vhost-user.rst</c>).
/// </summary>
/// <remarks>
/// <para>
/// <see cref="Listen"/> owns a socket at a path: each accepted front-end gets a <see cref="VhostUserBackend"/>
/// running on a thread of its own; when it disconnects the server accepts the next one (QEMU's reconnect). A
/// second front-end that connects while one is served is accepted and closed at once, and logged; the first keeps
/// working (a newcomer first waits up to a second for the active connection to end, so an immediate reconnect
/// whose old connection is still tearing down is served, not refused). <see cref="FromConnectedFd"/> serves one
/// already-connected socket (the <c>--fd</c> convention) and completes when it ends.
/// </para>
/// <para>
/// <see cref="Start"/> begins; <see cref="Completion"/> ends when the server stops (or, for an fd, when its
/// connection ends); <see cref="StopAsync"/> (and <see cref="DisposeAsync"/>) breaks the connection, joins the
/// connection thread and the queue workers, and removes the socket.
/// </para>
/// </remarks>
public sealed class VhostUserBlkServer : IAsyncDisposable, IDisposable
{
    /// <summary>How long a new front-end waits for the previous connection to end before it is refused.</summary>
    private static readonly TimeSpan ReconnectGrace = TimeSpan.FromSeconds(1);

    private readonly VirtioBlkDevice _device;
    private readonly bool _allowUnsealedMemory;
    private readonly int _queueThreads;
    private readonly IBlockDevice _blockDevice;
    private readonly TimeSpan _backendAckTimeout;
    private readonly Lock _capacityGate = new();
    private long _announcedCapacity;
    private VhostUserBackend? _activeBackend;
    private readonly ILogger _logger;
    private readonly VhostUserListener? _listener;
    private SafeFileHandle? _connectedFd;
    private readonly CancellationTokenSource _stop = new();
    private readonly object _gate = new();
    private Thread? _active;
    private Task? _loop;
    private int _connections;
    private int _disposed;

    private VhostUserBlkServer(IBlockDevice device, VhostUserBlkOptions options, ILogger logger, VhostUserListener? listener, SafeFileHandle? fd)
    {
        _logger = logger;
        _listener = listener;
        _connectedFd = fd;
        _allowUnsealedMemory = options.AllowUnsealedGuestMemory;
        if (options.QueueThreads < 0)
            ThrowHelper.ArgumentOutOfRange(nameof(options), "QueueThreads is 0 (one per queue) or at least 1");
        _queueThreads = options.QueueThreads;
                var settings = new VirtioBlkSettings
        {
            NumQueues = options.NumQueues, Writeback = !options.Writethrough, ParallelRequestsPerQueue = options.ParallelRequestsPerQueue,
        };
        _device = new VirtioBlkDevice(device, settings, logger, options.MaxQueueSize);
        _blockDevice = device;
        _backendAckTimeout = options.BackendAckTimeout;
        _announcedCapacity = device.Capacity;
    }

    /// <summary>
    /// Raised on the connection's thread when a front-end is accepted for service (refused second front-ends are
    /// not reported). Subscribe before <see cref="Start"/>. A handler must not throw or block for long.
    /// </summary>
    public event Action<VhostUserFrontendInfo>? FrontendConnected;

    /// <summary>Raised on the connection's thread after a served front-end's connection has ended and been torn down.</summary>
    public event Action<VhostUserFrontendInfo>? FrontendDisconnected;

    /// <summary>The socket path, or null when serving a connected fd.</summary>
    public string? SocketPath => _listener?.Path;

    /// <summary>Number of front-ends served so far (refused ones not counted).</summary>
    public int ConnectionCount => Volatile.Read(ref _connections);

    /// <summary>Whether a front-end is being served now.</summary>
    public bool IsServing
    {
        get
        {
            lock (_gate)
                return _active is not null;
        }
    }

    /// <summary>
    /// Says "the device's capacity changed" (live resize): re-reads <see cref="IBlockDevice.Capacity"/> and, if a
    /// front-end is connected and gave a back-end channel, sends it VHOST_USER_BACKEND_CONFIG_CHANGE_MSG, waiting
    /// up to <see cref="VhostUserBlkOptions.BackendAckTimeout"/> for the acknowledgement. QEMU answers it by re-reading
    /// the config (GET_CONFIG, rebuilt from the device) and raising a config interrupt in the guest. A front-end
    /// that connects later reads the new capacity anyway. Requests up to the new capacity are served at once,
    /// because the handler reads the capacity per request. Blocking; call from a control thread.
    /// </summary>
    /// <returns>What became of the notification; failures are also logged and never break the connection.</returns>
    /// <exception cref="InvalidOperationException">The capacity went down: shrinking a live export is not supported.</exception>
    public ConfigChangeNotification NotifyCapacityChanged()
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        long capacity = _blockDevice.Capacity;
        lock (_capacityGate)
        {
            if (capacity < _announcedCapacity)
                throw new InvalidOperationException($"the device shrank from {_announcedCapacity} to {capacity} bytes: shrinking a live export is not supported");
            _announcedCapacity = capacity;
        }

        VhostUserBackend? backend;
        lock (_gate)
            backend = _activeBackend;
        ConfigChangeNotification outcome = backend?.NotifyConfigChanged() ?? ConfigChangeNotification.NoFrontend;
        VhostUserBlkServerLog.CapacityChanged(_logger, capacity, outcome);
        return outcome;
    }

    /// <summary>Ends when the server has stopped and every thread is joined.</summary>
    public Task Completion => _loop ?? Task.CompletedTask;

    /// <summary>
    /// Creates the socket at <paramref name="socketPath"/> (mode <see cref="VhostUserBlkOptions.SocketMode"/>;
    /// a stale socket is replaced, a live one or any other file is an error). Call <see cref="Start"/> to accept.
    /// </summary>
    public static VhostUserBlkServer Listen(string socketPath, IBlockDevice device, VhostUserBlkOptions options, ILogger logger)
    {
        ArgumentNullException.ThrowIfNull(device);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(logger);
        VhostUserListener listener = VhostUserListener.Create(socketPath, options.SocketMode, owner: options.SocketOwner);
        try
        {
            return new VhostUserBlkServer(device, options, logger, listener, null);
        }
        catch
        {
            listener.Dispose();
            throw;
        }
    }

    /// <summary>Serves the already-connected socket <paramref name="fd"/> (taken over: closed by the server).</summary>
    public static VhostUserBlkServer FromConnectedFd(int fd, IBlockDevice device, VhostUserBlkOptions options, ILogger logger)
    {
        ArgumentNullException.ThrowIfNull(device);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(logger);
        ArgumentOutOfRangeException.ThrowIfNegative(fd);
        using var given = new SafeFileHandle(fd, ownsHandle: true);
        SafeFileHandle socket = UnixSocket.DuplicateBlocking(given);
        try
        {
            return new VhostUserBlkServer(device, options, logger, null, socket);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>Starts accepting (or serving the connected fd). Call once.</summary>
    public void Start()
    {
        if (_loop is not null)
            throw new InvalidOperationException("the server was already started");
        _loop = _listener is not null ? Task.Run(AcceptLoopAsync) : ServeFdAsync();
    }

    /// <summary>Stops accepting, ends the connection being served and waits for every thread.</summary>
    public Task StopAsync()
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        return StopCoreAsync();
    }

    /// <summary>Stops, then releases the socket.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
            return;
        await StopCoreAsync().ConfigureAwait(false);
        _listener?.Dispose();
        _connectedFd?.Dispose();
        _stop.Dispose();
    }

    /// <summary>Stops (blocking), then releases the socket.</summary>
    public void Dispose() => DisposeAsync().AsTask().GetAwaiter().GetResult();

    private async Task StopCoreAsync()
    {
        _stop.Cancel();
        if (_loop is not null)
            await _loop.ConfigureAwait(false);
    }

    private async Task AcceptLoopAsync()
    {
        VhostUserBlkServerLog.Listening(_logger, _listener!.Path, _device.NumQueues);
        try
        {
            while (true)
            {
                SafeFileHandle socket;
                try
                {
                    socket = await _listener.AcceptSocketAsync(_stop.Token).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    break;
                }
                catch (System.Net.Sockets.SocketException e)
                {
                    // EMFILE, ENOBUFS, ...: the listener is still good, so keep serving after a pause.
                    VhostUserBlkServerLog.AcceptFailed(_logger, e, _listener.Path);
                    await Task.Delay(100, CancellationToken.None).ConfigureAwait(false);
                    continue;
                }

                // A front-end that reconnects at once may arrive before its old connection has seen the end of
                // stream and torn down: give the active one a moment to finish before refusing the newcomer.
                Thread? previous;
                lock (_gate)
                    previous = _active;
                previous?.Join(ReconnectGrace);

                lock (_gate)
                {
                    if (_active is not null)
                    {
                        socket.Dispose();
                        VhostUserBlkServerLog.SecondFrontendRefused(_logger, _listener.Path);
                        continue;
                    }

                    _active = StartConnection(socket);
                }
            }
        }
        finally
        {
            JoinActive();
        }
    }

    private async Task ServeFdAsync()
    {
        SafeFileHandle socket = Interlocked.Exchange(ref _connectedFd, null)!;
        Thread thread;
        lock (_gate)
            _active = thread = StartConnection(socket);
        await Task.Run(() => thread.Join()).ConfigureAwait(false);
    }

    private Thread StartConnection(SafeFileHandle socket)
    {
        int number = Interlocked.Increment(ref _connections);
        VhostUserBackend backend;
        try
        {
            backend = new VhostUserBackend(socket, _device, _logger, _allowUnsealedMemory, _queueThreads);
            backend.Dispatcher.BackendAckTimeout = _backendAckTimeout;
        }
        catch
        {
            socket.Dispose();
            throw;
        }

        _activeBackend = backend; // callers hold _gate
        var credentials = UnixSocket.PeerCredentials(socket);
        var info = new VhostUserFrontendInfo(number, credentials?.Pid, credentials?.Uid, credentials?.Gid);
        var thread = new Thread(() => Serve(backend, info)) { IsBackground = true, Name = $"vhost-user-blk connection {number}" };
        thread.Start();
        return thread;
    }

    private void Serve(VhostUserBackend backend, VhostUserFrontendInfo info)
    {
        int number = info.Number;
        VhostUserBlkServerLog.FrontendConnected(_logger, number);
        try
        {
            FrontendConnected?.Invoke(info);
            backend.Run(_stop.Token);
        }
        catch (Exception e)
        {
            VhostUserBlkServerLog.ConnectionFailed(_logger, e, number);
        }
        finally
        {
            lock (_gate)
                _activeBackend = null;
            backend.Dispose();
            lock (_gate)
                _active = null;
            FrontendDisconnected?.Invoke(info);
        }
    }

    private void JoinActive()
    {
        Thread? thread;
        lock (_gate)
            thread = _active;
        thread?.Join();
    }
}

/// <summary>The server's log events.</summary>
internal static partial class VhostUserBlkServerLog
{
    [LoggerMessage(EventId = 30, Level = LogLevel.Information, Message = "vhost-user-blk listening on {Path} ({Queues} queues)")]
    public static partial void Listening(ILogger logger, string path, int queues);

    [LoggerMessage(EventId = 31, Level = LogLevel.Information, Message = "vhost-user-blk front-end {Number} connected")]
    public static partial void FrontendConnected(ILogger logger, int number);

    [LoggerMessage(EventId = 32, Level = LogLevel.Warning, Message = "vhost-user-blk {Path}: a second front-end connected while one is served; closed it")]
    public static partial void SecondFrontendRefused(ILogger logger, string path);

    [LoggerMessage(EventId = 34, Level = LogLevel.Error, Message = "vhost-user-blk {Path}: accept failed")]
    public static partial void AcceptFailed(ILogger logger, Exception error, string path);

    [LoggerMessage(EventId = 33, Level = LogLevel.Error, Message = "vhost-user-blk front-end {Number} failed")]
    public static partial void ConnectionFailed(ILogger logger, Exception error, int number);

    [LoggerMessage(EventId = 35, Level = LogLevel.Information, Message = "vhost-user-blk capacity now {Capacity} bytes; config change: {Outcome}")]
    public static partial void CapacityChanged(ILogger logger, long capacity, ConfigChangeNotification outcome);
}
