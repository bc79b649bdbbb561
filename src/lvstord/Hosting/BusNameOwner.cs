using Tmds.DBus.Protocol;

namespace LibvirtStorage.Daemon.Hosting;

/// <summary>
/// A bus connection that owns a well-known name and serves nothing else: lvstord's bus presence until the
/// D-Bus adapter (LibvirtStorage.DBus.StorageBusServer) is wired in its place.
/// </summary>
internal sealed class BusNameOwner : IAsyncDisposable
{
    private readonly DBusConnection _connection;

    private BusNameOwner(DBusConnection connection, Task completion)
    {
        _connection = connection;
        Completion = completion;
    }

    /// <summary>Completes when the connection is lost (faulted) or disposed.</summary>
    public Task Completion { get; }

    /// <summary>Connects to <paramref name="address"/> and takes <paramref name="name"/> without queueing or replacing.</summary>
    /// <exception cref="DaemonStartException">The bus cannot be reached or the name is taken.</exception>
    public static async Task<BusNameOwner> StartAsync(string address, string name, CancellationToken ct)
    {
        var connection = new DBusConnection(address);
        try
        {
            try
            {
                await connection.ConnectAsync().AsTask().WaitAsync(ct).ConfigureAwait(false);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                throw new DaemonStartException(ExitCodes.Unavailable,
                    $"cannot connect to the D-Bus bus at {address}: {e.Message}; start dbus or set 'bus' in the configuration (or --bus)", e);
            }

            bool owned;
            try
            {
                owned = await connection.TryRequestNameAsync(name, RequestNameOptions.None).ConfigureAwait(false);
            }
            catch (DBusErrorReplyException e) when (e.ErrorName == "org.freedesktop.DBus.Error.AccessDenied")
            {
                throw new DaemonStartException(ExitCodes.Unavailable,
                    $"the bus at {address} does not let this user ({Environment.UserName}) own {name}: {e.ErrorMessage}; "
                    + "run lvstord as root, or install packaging/dbus-1/system.d/org.lvstor.Storage1.conf", e);
            }

            if (!owned)
            {
                throw new DaemonStartException(ExitCodes.Unavailable,
                    $"the name {name} is already owned on {address} (another lvstord?); stop that process first");
            }

            return new BusNameOwner(connection, ThrowOnLossAsync(connection.DisconnectedAsync()));
        }
        catch
        {
            connection.Dispose();
            throw;
        }
    }

    // DisconnectedAsync yields the reason, or null after our own dispose; a reason becomes a fault.
    private static async Task ThrowOnLossAsync(Task<Exception?> disconnected)
    {
        if (await disconnected.ConfigureAwait(false) is { } reason)
        {
            throw new IOException(reason.Message, reason);
        }
    }

    /// <inheritdoc/>
    public ValueTask DisposeAsync()
    {
        _connection.Dispose();
        return ValueTask.CompletedTask;
    }
}
