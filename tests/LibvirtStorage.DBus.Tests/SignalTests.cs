using Tmds.DBus.Protocol;
using Xunit;

namespace LibvirtStorage.DBus.Tests;

public sealed class SignalTests(BusServerFixture fixture) : IClassFixture<BusServerFixture>
{
    [BusFact]
    public async Task CreateVolumeSignalsInterfacesAddedWithItsProperties()
    {
        using SignalLog log = await SignalLog.StartAsync(fixture.Client);
        string path = await fixture.CreateVolumeAsync("sig-new", "raw", 3 << 20);

        // Sent before the reply, on the same connection: the client has it by the time the call returns.
        Assert.Contains(log.All, s => s.Member == "InterfacesAdded" && s.Object == path);
        SignalLog.Signal added = await log.WaitAsync(s => s.Member == "InterfacesAdded" && s.Object == path);
        Assert.Equal(StorageBusServer.RootPath, added.Path);
        Assert.Equal("org.freedesktop.DBus.ObjectManager", added.Interface);

        // The pool's VolumeCount changed too, and only what changed is sent.
        SignalLog.Signal pool = await log.WaitAsync(s => s.Member == "PropertiesChanged" && s.Path == BusServerFixture.PoolPath && s.Changed.ContainsKey("VolumeCount"));
        Assert.DoesNotContain("Name", pool.Changed.Keys);
    }

    [BusFact]
    public async Task ResizeSignalsTheNewCapacityOnly()
    {
        string path = await fixture.CreateVolumeAsync("sig-resize", "qcow2", 1 << 20);
        using SignalLog log = await SignalLog.StartAsync(fixture.Client);
        await fixture.CallAsync(path, "org.lvstor.Storage1.Volume", "Resize", "tb", (ref MessageWriter w) => { w.WriteUInt64(8 << 20); w.WriteBool(false); });
        SignalLog.Signal changed = await log.WaitAsync(s => s.Member == "PropertiesChanged" && s.Path == path);
        Assert.Equal("org.lvstor.Storage1.Volume", changed.Object);
        Assert.Equal(8UL << 20, changed.Changed["Capacity"].GetUInt64());
        Assert.DoesNotContain("Name", changed.Changed.Keys);
        Assert.DoesNotContain("Format", changed.Changed.Keys);
        Assert.Equal(8UL << 20, (await fixture.GetPropertyAsync(path, "org.lvstor.Storage1.Volume", "Capacity")).GetUInt64());
    }

    [BusFact]
    public async Task SetAutostartSignalsAutostart()
    {
        using SignalLog log = await SignalLog.StartAsync(fixture.Client);
        await fixture.CallAsync(BusServerFixture.PoolPath, "org.lvstor.Storage1.Pool", "SetAutostart", "b", (ref MessageWriter w) => w.WriteBool(true));
        SignalLog.Signal changed = await log.WaitAsync(s => s.Member == "PropertiesChanged" && s.Path == BusServerFixture.PoolPath && s.Changed.ContainsKey("Autostart"));
        Assert.True(changed.Changed["Autostart"].GetBool());
        // Only changed values are sent (free space may move with other tests' files; identity never does).
        Assert.DoesNotContain("Name", changed.Changed.Keys);
        Assert.DoesNotContain("Uuid", changed.Changed.Keys);
        Assert.DoesNotContain("Active", changed.Changed.Keys);
        await fixture.CallAsync(BusServerFixture.PoolPath, "org.lvstor.Storage1.Pool", "SetAutostart", "b", (ref MessageWriter w) => w.WriteBool(false));
    }

    [BusFact]
    public async Task DeleteSignalsInterfacesRemoved()
    {
        string path = await fixture.CreateVolumeAsync("sig-delete");
        using SignalLog log = await SignalLog.StartAsync(fixture.Client);
        await fixture.CallAsync(path, "org.lvstor.Storage1.Volume", "Delete");
        await log.WaitAsync(s => s.Member == "InterfacesRemoved" && s.Object == path);
        Assert.DoesNotContain(path, await fixture.ListAsync(BusServerFixture.PoolPath, "org.lvstor.Storage1.Pool", "ListVolumes"));
    }

    [BusFact]
    public async Task GetManagedObjectsListsPoolsAndVolumes()
    {
        string path = await fixture.CreateVolumeAsync("sig-managed");
        string[] objects = await fixture.CallAsync(StorageBusServer.RootPath, "org.freedesktop.DBus.ObjectManager", "GetManagedObjects", null, null, m =>
        {
            Reader reader = m.GetBodyReader();
            var paths = new List<string>();
            ArrayEnd end = reader.ReadDictionaryStart();
            while (reader.HasNext(end))
            {
                paths.Add(reader.ReadObjectPathAsString());
                Dictionary<string, VariantValue>? _ = null;
                ArrayEnd interfaces = reader.ReadDictionaryStart();
                while (reader.HasNext(interfaces))
                {
                    reader.ReadString();
                    _ = reader.ReadDictionaryOfStringToVariantValue();
                }
            }

            return paths.ToArray();
        });
        Assert.Contains(BusServerFixture.PoolPath, objects);
        Assert.Contains(path, objects);
        Assert.DoesNotContain(StorageBusServer.RootPath, objects);
    }

    [BusFact]
    public async Task BusctlMonitorSeesPropertiesChanged()
    {
        string path = await fixture.CreateVolumeAsync("sig-monitor");
        using var monitor = new System.Diagnostics.Process
        {
            StartInfo = new("busctl", ["--address=" + fixture.Bus.Address, "monitor", "--json=short", StorageBusServer.BusName]) { RedirectStandardOutput = true },
        };
        monitor.Start();
        var lines = new System.Collections.Concurrent.ConcurrentQueue<string>();
        var reader = Task.Run(async () =>
        {
            while (await monitor.StandardOutput.ReadLineAsync() is { } line)
            {
                lines.Enqueue(line);
            }
        });
        try
        {
            // busctl needs a moment to become a monitor; repeat the change until it reports one (bounded).
            bool seen = false;
            for (ulong i = 1; i <= 50 && !seen; i++)
            {
                await fixture.CallAsync(path, "org.lvstor.Storage1.Volume", "Resize", "tb", (ref MessageWriter w) => { w.WriteUInt64((1UL << 20) + (i * 512)); w.WriteBool(false); });
                await Task.Delay(200);
                seen = lines.Any(l => l.Contains("\"PropertiesChanged\"", StringComparison.Ordinal) && l.Contains(path, StringComparison.Ordinal));
            }

            Assert.True(seen, string.Join("\n", lines));
        }
        finally
        {
            monitor.Kill();
            await monitor.WaitForExitAsync();
        }
    }
}
