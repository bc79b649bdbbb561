using LibvirtStorage.Client.Bus;
using Tmds.DBus;

namespace LibvirtStorage.Client;

/// <summary>
/// A typed client of lvstord's D-Bus API (docs/dbus-api.md). Objects are named by their D-Bus object paths
/// (strings); look them up by name with <see cref="GetPoolPathAsync"/> and <see cref="GetVolumePathAsync"/>.
/// Every failure is a <see cref="StorageClientException"/> carrying lvstord's error name and message.
/// </summary>
public sealed partial class StorageClient : IDisposable
{
    /// <summary>lvstord's well-known bus name.</summary>
    public const string ServiceName = "org.lvstor.Storage1";

    /// <summary>The manager's object path.</summary>
    public const string ManagerPath = "/org/lvstor/Storage1";

    /// <summary>The environment variable naming the bus address when none is given.</summary>
    public const string BusAddressVariable = "LVSTOR_BUS_ADDRESS";

    private readonly Connection _connection;
    private readonly IManager _manager;

    private StorageClient(Connection connection, string busDescription)
    {
        _connection = connection;
        BusDescription = busDescription;
        _manager = connection.CreateProxy<IManager>(ServiceName, ManagerPath);
    }

    /// <summary>The bus this client talks to: "the system bus" or the address.</summary>
    public string BusDescription { get; }

    /// <summary>
    /// Connects to the bus: <paramref name="address"/>, else $LVSTOR_BUS_ADDRESS, else the system bus. Fails with
    /// <see cref="StorageErrorKind.ServiceUnavailable"/> when the bus cannot be reached.
    /// </summary>
    /// <param name="address">A D-Bus address such as <c>unix:path=/run/dbus/system_bus_socket</c>, or null.</param>
    /// <returns>The connected client.</returns>
    public static async Task<StorageClient> ConnectAsync(string? address = null)
    {
        address ??= Environment.GetEnvironmentVariable(BusAddressVariable);
        if (string.IsNullOrEmpty(address))
        {
            address = null;
        }

        string description = address ?? "the system bus";
        var connection = new Connection(address ?? Address.System);
        try
        {
            await connection.ConnectAsync().ConfigureAwait(false);
        }
        catch (Exception e) when (e is ConnectException or DBusException or IOException or ArgumentException)
        {
            connection.Dispose();
            throw new StorageClientException(
                StorageClientException.ServiceUnavailableName,
                $"cannot connect to {description}: {e.Message}",
                e);
        }

        return new StorageClient(connection, description);
    }

    /// <inheritdoc/>
    public void Dispose() => _connection.Dispose();

    /// <summary>Runs one call, turning D-Bus errors into <see cref="StorageClientException"/>.</summary>
    private async Task<T> Call<T>(Func<Task<T>> call)
    {
        try
        {
            return await call().ConfigureAwait(false);
        }
        catch (DBusException e)
        {
            throw Translate(e);
        }
        catch (DisconnectedException e)
        {
            throw new StorageClientException(StorageClientException.ServiceUnavailableName, $"lost the connection to {BusDescription}: {e.Message}", e);
        }
    }

    private Task Call(Func<Task> call) => Call(async () =>
    {
        await call().ConfigureAwait(false);
        return true;
    });

    private StorageClientException Translate(DBusException e) => e.ErrorName switch
    {
        // No owner of org.lvstor.Storage1 (and no activation): lvstord is not running.
        "org.freedesktop.DBus.Error.ServiceUnknown" or "org.freedesktop.DBus.Error.NameHasNoOwner" =>
            new StorageClientException(StorageClientException.ServiceUnavailableName, ServiceUnavailableMessage(BusDescription), e),
        _ => new StorageClientException(e.ErrorName, e.ErrorMessage, e),
    };

    /// <summary>The message for "lvstord is not on the bus".</summary>
    /// <param name="busDescription">"the system bus" or an address.</param>
    /// <returns>The message.</returns>
    public static string ServiceUnavailableMessage(string busDescription) =>
        $"lvstord is not running on {busDescription}: start it with `systemctl start lvstord`";

    private IPool Pool(string objectPath) => _connection.CreateProxy<IPool>(ServiceName, new ObjectPath(objectPath));

    private IVolume Volume(string objectPath) => _connection.CreateProxy<IVolume>(ServiceName, new ObjectPath(objectPath));

    private IJob Job(string objectPath) => _connection.CreateProxy<IJob>(ServiceName, new ObjectPath(objectPath));

    private static DateTimeOffset FromUnixMicroseconds(long microseconds) =>
        DateTimeOffset.UnixEpoch.AddTicks(microseconds * (TimeSpan.TicksPerMillisecond / 1000));
}
