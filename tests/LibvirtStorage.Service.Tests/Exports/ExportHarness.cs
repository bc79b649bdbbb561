using LibvirtStorage.Vhost.Frontend;
using Xunit;

namespace LibvirtStorage.Service.Tests.Exports;

/// <summary>
/// A service with real exports: a temporary root holding the state directory, the pool directory "p" and a short
/// runtime directory for the sockets. <see cref="RestartAsync"/> is a daemon restart (exports disposed, service
/// reopened on the same state). Disposing stops everything and deletes the root (keep it with LVSTOR_KEEP_SCRATCH=1).
/// </summary>
public sealed class ExportHarness : IAsyncDisposable
{
    /// <summary>The group the sockets get: "users" (100), so owner and group differ from the test's own.</summary>
    public const int SocketGroup = 100;

    public const UnixFileMode SocketMode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.GroupWrite;

    public const UnixFileMode DirectoryMode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute
        | UnixFileMode.GroupRead | UnixFileMode.GroupExecute;

    public ExportHarness()
    {
        Root = Directory.CreateTempSubdirectory("lvx-").FullName;
        StateDirectory = Path.Combine(Root, "state");
        RuntimeDirectory = Path.Combine(Root, "run");
        (Exports, Service) = Open();
        Service.DefinePool("p", PoolPath);
        Service.StartPool("p");
    }

    public string Root { get; }

    public string StateDirectory { get; }

    public string RuntimeDirectory { get; }

    public string PoolPath => Path.Combine(Root, "pool");

    public VolumeExports Exports { get; private set; }

    public StorageService Service { get; private set; }

    /// <summary>Where group ownership can be given away: root can chown to any group; others only to their own.</summary>
    public static bool CanChown => Environment.UserName == "root";

    public string File(string name) => Path.Combine(PoolPath, name);

    public string Socket(string volume) => Path.Combine(RuntimeDirectory, "p", volume + ".sock");

    /// <summary>The daemon stops (exports drained, flushed, closed) and starts again over the same state.</summary>
    public async Task RestartAsync()
    {
        await Exports.DisposeAsync();
        (Exports, Service) = Open();
    }

    /// <summary>Connects the C# front-end to a volume's socket (two queues by default).</summary>
    public VhostUserBlkFrontend Connect(string volume, int queues = 2) =>
        VhostUserBlkFrontend.Connect(Socket(volume), new VhostUserBlkFrontendOptions { Queues = queues, QueueSize = 64, Depth = 8, MaxRequestBytes = 64 << 10 });

    /// <summary>Waits (up to 10 s) for the export state the server reports on its connection thread.</summary>
    public void WaitForState(string volume, ExportState state)
    {
        Guid key = Service.GetVolume("p", volume).Key;
        Assert.True(SpinWait.SpinUntil(() => Exports.GetState(key) == state, 10_000), $"export of '{volume}' is {Exports.GetState(key)}, not {state}");
    }

    public async ValueTask DisposeAsync()
    {
        await Exports.DisposeAsync();
        if (Environment.GetEnvironmentVariable("LVSTOR_KEEP_SCRATCH") != "1")
        {
            Directory.Delete(Root, recursive: true);
        }
    }

    private (VolumeExports, StorageService) Open()
    {
        var exports = new VolumeExports(new VolumeExportOptions
        {
            NumQueues = 2,
            SocketMode = SocketMode,
            DirectoryMode = DirectoryMode,
            SocketGroupId = CanChown ? SocketGroup : null,
        });
        var service = StorageService.Open(new StorageServiceOptions { StateDirectory = StateDirectory, RuntimeDirectory = RuntimeDirectory, Exports = exports });
        return (exports, service);
    }
}
