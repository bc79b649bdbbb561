using System.Diagnostics;
using LibvirtStorage.DBus;
using LibvirtStorage.Service;
using LibvirtStorage.TestSupport;
using Microsoft.Extensions.Logging.Abstractions;
using Tmds.DBus.Protocol;
using Xunit;

namespace LibvirtStorage.DBus.Tests;

/// <summary>
/// A real dbus-daemon, a StorageService on a temporary state directory with one started pool "p", and the
/// server in-process; plus a raw Tmds.DBus.Protocol client connection and helpers to run busctl/gdbus.
/// </summary>
public class BusServerFixture : IAsyncLifetime
{
    public const string Pool = "p";
    public const uint AdminGid = 4242;
    public const string AdminGroup = "lvstortest";

    public PrivateBus Bus { get; private set; } = null!;
    public string Root { get; private set; } = "";
    public string PoolDirectory => Path.Combine(Root, "pool-p");
    public StorageService Service { get; private set; } = null!;
    public StorageBusServer Server { get; private set; } = null!;
    public DBusConnection Client { get; private set; } = null!;

    /// <summary>The exports the service reports (null: none).</summary>
    protected virtual IVolumeExports? Exports => null;

    /// <summary>How long finished jobs stay on the bus.</summary>
    protected virtual TimeSpan JobRetention => TimeSpan.FromSeconds(30);

    public async Task InitializeAsync()
    {
        if (PrivateBus.MissingReason is not null)
        {
            return;
        }

        Bus = PrivateBus.Start();
        Root = Directory.CreateTempSubdirectory("lvstor-dbus-").FullName;
        File.SetUnixFileMode(Root, (UnixFileMode)0b111_101_101);
        string groups = Path.Combine(Root, "group");
        File.WriteAllText(groups, $"root:x:0:\n{AdminGroup}:x:{AdminGid}:\n");
        Service = StorageService.Open(new StorageServiceOptions { StateDirectory = Path.Combine(Root, "state"), RuntimeDirectory = Path.Combine(Root, "run"), Exports = Exports });
        Service.DefinePool(Pool, PoolDirectory);
        Service.StartPool(Pool);
        Server = await StorageBusServer.StartAsync(Bus.Address, Service,
            new StorageBusOptions { AdminGroups = [AdminGroup], JobRetention = JobRetention, GroupFile = groups }, NullLoggerFactory.Instance);
        Client = new DBusConnection(Bus.Address);
        await Client.ConnectAsync();
    }

    public async Task DisposeAsync()
    {
        Client?.Dispose();
        if (Server is not null)
        {
            await Server.DisposeAsync();
        }

        Bus?.Dispose();
        if (Root.Length > 0)
        {
            Directory.Delete(Root, recursive: true);
        }
    }

    public static string PoolPath => "/org/lvstor/Storage1/pool/p";

    public static string VolumePath(string volume) => $"{PoolPath}/{ObjectPaths.Label(volume)}";

    /// <summary>Runs a program (optionally as another user through setpriv) and returns its exit code and output.</summary>
    public static (int Code, string Out, string Err) Run(string program, params string[] args)
    {
        var start = new ProcessStartInfo(program) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string a in args)
        {
            start.ArgumentList.Add(a);
        }

        using Process process = Process.Start(start)!;
        Task<string> stdout = process.StandardOutput.ReadToEndAsync();
        string stderr = process.StandardError.ReadToEnd();
        process.WaitForExit();
        return (process.ExitCode, stdout.Result, stderr);
    }

    /// <summary>gdbus call (it prints the error name: "GDBus.Error:org.lvstor.Storage1.Error.X: message").</summary>
    public (int Code, string Out, string Err) Gdbus(string path, string method, params string[] args) =>
        Run("gdbus", ["call", "--address", Bus.Address, "--dest", StorageBusServer.BusName, "--object-path", path, "--method", method, .. args]);

    public delegate void ArgsWriter(ref MessageWriter writer);

    /// <summary>A raw method call; returns what <paramref name="read"/> reads from the reply.</summary>
    public Task<T> CallAsync<T>(string path, string iface, string member, string? signature, ArgsWriter? args, Func<Message, T> read, DBusConnection? connection = null)
    {
        connection ??= Client;
        MessageBuffer message;
        MessageWriter writer = connection.GetMessageWriter();
        try
        {
            writer.WriteMethodCallHeader(StorageBusServer.BusName, path, iface, member, signature, MessageFlags.None);
            args?.Invoke(ref writer);
            message = writer.CreateMessage();
        }
        finally
        {
            writer.Dispose();
        }

        return connection.CallMethodAsync(message, (m, _) => read(m), null);
    }

    public Task CallAsync(string path, string iface, string member, string? signature = null, ArgsWriter? args = null) =>
        CallAsync(path, iface, member, signature, args, _ => true);

    public Task<string> CallPathAsync(string path, string iface, string member, string? signature = null, ArgsWriter? args = null) =>
        CallAsync(path, iface, member, signature, args, m => m.GetBodyReader().ReadObjectPathAsString());

    public Task<string[]> ListAsync(string path, string iface, string member) =>
        CallAsync(path, iface, member, null, null, m => m.GetBodyReader().ReadArrayOfObjectPath().Select(p => p.ToString()).ToArray());

    public Task<VariantValue> GetPropertyAsync(string path, string iface, string name) =>
        CallAsync(path, "org.freedesktop.DBus.Properties", "Get", "ss", (ref MessageWriter w) => { w.WriteString(iface); w.WriteString(name); },
            m => m.GetBodyReader().ReadVariantValue());

    public Task<string> CreateVolumeAsync(string name, string format = "qcow2", ulong capacity = 1 << 20, string backing = "") =>
        CallPathAsync(PoolPath, "org.lvstor.Storage1.Pool", "CreateVolume", "sstsa{sv}", (ref MessageWriter w) =>
        {
            w.WriteString(name);
            w.WriteString(format);
            w.WriteUInt64(capacity);
            w.WriteString(backing);
            w.WriteDictionary(new Dictionary<string, VariantValue>());
        });

    /// <summary>The inventory as names plus the pool directory listing, to check that a failed call changed nothing.</summary>
    public string Inventory() =>
        string.Join(",", Service.ListPools().Select(p => p.Name + ":" + p.Active)) + "|" +
        string.Join(",", Service.ListVolumes(Pool).Select(v => $"{v.Name}:{v.Capacity}:{v.Format}")) + "|" +
        string.Join(",", Directory.EnumerateFileSystemEntries(PoolDirectory).Select(Path.GetFileName).Order(StringComparer.Ordinal));
}
