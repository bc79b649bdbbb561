using LibvirtStorage.DBus;
using LibvirtStorage.Service;
using LibvirtStorage.TestSupport;
using Microsoft.Extensions.Logging.Abstractions;
using Xunit;

namespace LibvirtStorage.Cli.Tests.Service;

/// <summary>A fact that needs a private dbus-daemon; skipped, naming the package, where there is none.</summary>
public sealed class BusFactAttribute : FactAttribute
{
    public BusFactAttribute()
    {
        if (PrivateBus.MissingReason is { } reason)
        {
            Skip = reason;
        }
    }
}

/// <summary>The real lvstord D-Bus server (StorageBusServer over StorageService) on a private bus, with temp directories.</summary>
public sealed class LvstordHost : IAsyncDisposable
{
    private readonly PrivateBus _bus;
    private readonly StorageBusServer _server;

    private LvstordHost(PrivateBus bus, StorageBusServer server, string root)
    {
        _bus = bus;
        _server = server;
        Root = root;
    }

    /// <summary>Holds the state, runtime and pool directories (short: socket paths must fit in 107 bytes).</summary>
    public string Root { get; }

    public string Address => _bus.Address;

    public string PoolDirectory(string name) => Path.Combine(Root, "pools", name);

    public static async Task<LvstordHost> StartAsync()
    {
        PrivateBus bus = PrivateBus.Start();
        string root = Directory.CreateTempSubdirectory("lvc-").FullName;
        var service = StorageService.Open(new StorageServiceOptions
        {
            StateDirectory = Path.Combine(root, "state"),
            RuntimeDirectory = Path.Combine(root, "run"),
        });
        try
        {
            StorageBusServer server = await StorageBusServer.StartAsync(bus.Address, service, new StorageBusOptions(), NullLoggerFactory.Instance);
            return new LvstordHost(bus, server, root);
        }
        catch
        {
            bus.Dispose();
            throw;
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _server.DisposeAsync();
        _bus.Dispose();
        try
        {
            Directory.Delete(Root, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
