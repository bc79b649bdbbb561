using System.Runtime.InteropServices;
using LibvirtStorage.Vhost.Protocol;
using Microsoft.Extensions.Logging;

namespace LibvirtStorage.Vhost.Backend;

/// <summary>
/// One front-end connection served end to end: the <see cref="VhostUserConnection"/>, the
/// <see cref="VhostUserRequestDispatcher"/> and, through it, the queue workers and the guest memory. The server
/// (not written yet) accepts a socket, builds one of these with its device and calls <see cref="Run"/> on a
/// thread of its own; when Run returns, the server disposes it and decides whether to accept a reconnect
/// (<see cref="BreakReason"/>'s <see cref="VhostUserProtocolException.ShouldReconnect"/>).
/// </summary>
internal sealed class VhostUserBackend : IDisposable
{
    private readonly VhostUserConnection _connection;
    private readonly VhostUserRequestDispatcher _dispatcher;
    private readonly ILogger _logger;
    private readonly ManualResetEventSlim _stopped = new(initialState: true);
    private int _disposed;

    /// <summary>
    /// Takes ownership of a connected, blocking AF_UNIX stream <paramref name="socket"/>, served for
    /// <paramref name="device"/>; <paramref name="allowUnsealedMemory"/> is
    /// <see cref="VhostUserRequestDispatcher.AllowUnsealedMemory"/> and <paramref name="queueThreads"/>
    /// <see cref="VhostUserRequestDispatcher.QueueThreads"/>. Logs go to <paramref name="logger"/>.
    /// </summary>
    public VhostUserBackend(SafeHandle socket, IVhostUserDevice device, ILogger logger, bool allowUnsealedMemory = false, int queueThreads = 0)
    {
        ArgumentNullException.ThrowIfNull(logger);
        _logger = logger;
        _connection = new VhostUserConnection(socket);
        _dispatcher = new VhostUserRequestDispatcher(_connection, device, logger) { AllowUnsealedMemory = allowUnsealedMemory, QueueThreads = queueThreads };
    }

    /// <summary>The dispatcher (tests inspect vring state through it).</summary>
    internal VhostUserRequestDispatcher Dispatcher => _dispatcher;

    /// <summary>
    /// Tells the front-end that the config space changed (VHOST_USER_BACKEND_CONFIG_CHANGE_MSG), if it gave a
    /// back-end channel; any thread. See <see cref="VhostUserRequestDispatcher.NotifyConfigChanged"/>.
    /// </summary>
    public ConfigChangeNotification NotifyConfigChanged() =>
        Volatile.Read(ref _disposed) != 0 ? ConfigChangeNotification.NoFrontend : _dispatcher.NotifyConfigChanged();

    /// <summary>Why the connection ended, or null while it runs.</summary>
    public VhostUserProtocolException? BreakReason => _connection.BreakReason;

    /// <summary>
    /// Receives and handles messages until the connection breaks (the front-end left or broke the rules),
    /// <paramref name="cancellationToken"/> fires, or the backend is disposed; then stops every queue worker.
    /// Returns why it ended. Call once.
    /// </summary>
    public VhostUserProtocolException Run(CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        _stopped.Reset();
        try
        {
            using var registration = cancellationToken.Register(static state => ((VhostUserConnection)state!).Break("back-end shutting down"), _connection);
            while (true)
            {
                try
                {
                    if (!_dispatcher.Handle(_connection.Receive()))
                        break;
                }
                catch (VhostUserProtocolException)
                {
                    break;
                }
            }

            VhostUserProtocolException reason = _connection.BreakReason ?? _connection.Break("connection ended");
            _dispatcher.StopQueues();
            VhostUserLog.ConnectionEnded(_logger, reason.Message);
            return reason;
        }
        finally
        {
            _stopped.Set();
        }
    }

    /// <summary>Breaks the connection, waits for <see cref="Run"/> to return, joins the workers and unmaps guest memory.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
            return;
        _connection.Break("back-end disposed");
        _stopped.Wait();
        _dispatcher.Dispose();
        _connection.Dispose();
        _stopped.Dispose();
    }
}
