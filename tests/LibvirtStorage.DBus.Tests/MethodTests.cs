using Tmds.DBus.Protocol;
using Xunit;

namespace LibvirtStorage.DBus.Tests;

/// <summary>Each method of docs/dbus-api.md with good arguments, checked against the service and the files.</summary>
public sealed class MethodTests(BusServerFixture fixture) : IClassFixture<BusServerFixture>
{
    private const string Manager = "org.lvstor.Storage1.Manager";
    private const string Pool = "org.lvstor.Storage1.Pool";
    private const string Volume = "org.lvstor.Storage1.Volume";
    private const string Root = StorageBusServer.RootPath;

    [BusFact]
    public async Task PoolLifecycle()
    {
        string dir = Path.Combine(fixture.Root, "pool-life");
        string pool = await fixture.CallPathAsync(Root, Manager, "DefinePool", "ss", (ref MessageWriter w) => { w.WriteString("life"); w.WriteString(dir); });
        Assert.Equal(Root + "/pool/life", pool);
        Assert.True(Directory.Exists(dir));
        Assert.Equal(pool, await fixture.CallPathAsync(Root, Manager, "GetPool", "s", (ref MessageWriter w) => w.WriteString("life")));
        Assert.False((await fixture.GetPropertyAsync(pool, Pool, "Active")).GetBool());
        Assert.Equal(0UL, (await fixture.GetPropertyAsync(pool, Pool, "Capacity")).GetUInt64());

        await fixture.CallAsync(pool, Pool, "Start");
        Assert.True((await fixture.GetPropertyAsync(pool, Pool, "Active")).GetBool());
        Assert.True((await fixture.GetPropertyAsync(pool, Pool, "Capacity")).GetUInt64() > 0);

        // A file dropped into the directory is adopted by Refresh; a non-image file is left alone and reported.
        Assert.Equal(0, BusServerFixture.Run("qemu-img", "create", "-q", "-f", "qcow2", Path.Combine(dir, "dropped"), "1M").Code);
        (string[] adopted, (string File, string Message)[] problems) = await fixture.CallAsync(pool, Pool, "Refresh", null, null, m =>
        {
            Reader r = m.GetBodyReader();
            string[] names = r.ReadArrayOfString();
            var list = new List<(string, string)>();
            ArrayEnd end = r.ReadArrayStart(DBusType.Struct);
            while (r.HasNext(end))
            {
                r.AlignStruct();
                list.Add((r.ReadString(), r.ReadString()));
            }

            return (names, list.ToArray());
        });
        Assert.Equal(["dropped"], adopted);
        Assert.Empty(problems);
        Assert.Equal([pool + "/dropped"], await fixture.ListAsync(pool, Pool, "ListVolumes"));

        await fixture.CallAsync(pool, Pool, "Stop");
        Assert.False((await fixture.GetPropertyAsync(pool, Pool, "Active")).GetBool());
        await fixture.CallAsync(pool, Pool, "Undefine");
        Assert.DoesNotContain(pool, await fixture.ListAsync(Root, Manager, "ListPools"));
        Assert.True(File.Exists(Path.Combine(dir, "dropped")));
    }

    [BusFact]
    public async Task VolumeLookupsAndProperties()
    {
        string path = await fixture.CreateVolumeAsync("look-up", "qcow2", 3 << 20);
        Assert.Equal(path, await fixture.CallPathAsync(BusServerFixture.PoolPath, Pool, "GetVolume", "s", (ref MessageWriter w) => w.WriteString("look-up")));
        string key = (await fixture.GetPropertyAsync(path, Volume, "Key")).GetString();
        Assert.Equal(path, await fixture.CallPathAsync(Root, Manager, "GetVolumeByKey", "s", (ref MessageWriter w) => w.WriteString(key)));
        string socket = (await fixture.GetPropertyAsync(path, Volume, "Path")).GetString();
        Assert.EndsWith("/p/look-up.sock", socket);
        Assert.Equal(path, await fixture.CallPathAsync(Root, Manager, "GetVolumeByPath", "s", (ref MessageWriter w) => w.WriteString(socket)));
        Assert.Equal(BusServerFixture.PoolPath, (await fixture.GetPropertyAsync(path, Volume, "Pool")).GetObjectPathAsString());
        Assert.Equal("p", (await fixture.GetPropertyAsync(path, Volume, "PoolName")).GetString());
        Assert.Equal(Path.Combine(fixture.PoolDirectory, "look-up"), (await fixture.GetPropertyAsync(path, Volume, "File")).GetString());
        Assert.Equal("stopped", (await fixture.GetPropertyAsync(path, Volume, "ExportState")).GetString());
        Assert.Equal("", (await fixture.GetPropertyAsync(path, Volume, "Problem")).GetString());

        // Names outside [A-Za-z0-9] are escaped in the path, as systemd's bus labels.
        string odd = await fixture.CreateVolumeAsync("9ünï.c-o_de+", "raw", 1 << 20);
        Assert.Equal(BusServerFixture.PoolPath + "/_39_c3_bcn_c3_af_2ec_2do_5fde_2b", odd);
        Assert.Equal("9ünï.c-o_de+", (await fixture.GetPropertyAsync(odd, Volume, "Name")).GetString());
    }

    [BusFact]
    public async Task SnapshotsRevertAndBackingChain()
    {
        string path = await fixture.CreateVolumeAsync("snappy", "qcow2", 1 << 20);
        await fixture.CallAsync(path, Volume, "CreateSnapshot", "s", (ref MessageWriter w) => w.WriteString("s1"));
        await fixture.CallAsync(path, Volume, "CreateSnapshot", "s", (ref MessageWriter w) => w.WriteString("s2"));
        var (code, output, error) = fixture.Gdbus(path, "org.freedesktop.DBus.Properties.Get", Volume, "Snapshots");
        Assert.True(code == 0, error);
        Assert.Matches(@"\('s1', int64 \d+, 'qcow2', '[^']+'\), \('s2'", output);
        (code, output, error) = fixture.Gdbus(path, "org.freedesktop.DBus.Properties.Get", Volume, "BackingChain");
        Assert.True(code == 0, error);
        Assert.Contains("('snappy', 's2', 'qcow2'", output);

        var refused = await Assert.ThrowsAsync<DBusErrorReplyException>(() =>
            fixture.CallAsync(path, Volume, "RevertToSnapshot", "sb", (ref MessageWriter w) => { w.WriteString("s1"); w.WriteBool(false); }));
        Assert.Equal("org.lvstor.Storage1.Error.Invalid", refused.ErrorName);
        await fixture.CallAsync(path, Volume, "RevertToSnapshot", "sb", (ref MessageWriter w) => { w.WriteString("s1"); w.WriteBool(true); });
        (_, output, _) = fixture.Gdbus(path, "org.freedesktop.DBus.Properties.Get", Volume, "Snapshots");
        Assert.DoesNotContain("'s2'", output);

        // A volume over a backing volume: capacity 0 takes the backing's size; the base becomes read-only and lists its user.
        string over = await fixture.CreateVolumeAsync("over-snappy", "qcow2", 0, "snappy");
        Assert.Equal(1UL << 20, (await fixture.GetPropertyAsync(over, Volume, "Capacity")).GetUInt64());
        Assert.True((await fixture.GetPropertyAsync(path, Volume, "ReadOnly")).GetBool());
        (_, output, _) = fixture.Gdbus(path, "org.freedesktop.DBus.Properties.Get", Volume, "Users");
        Assert.Contains("('backing', \"volume 'over-snappy'\")", output);
        (_, output, _) = fixture.Gdbus(Root, Manager + ".ListUsers");
        Assert.Contains("('p', 'snappy', 'backing', \"volume 'over-snappy'\")", output);
        var inUse = await Assert.ThrowsAsync<DBusErrorReplyException>(() => fixture.CallAsync(path, Volume, "Delete"));
        Assert.Equal("org.lvstor.Storage1.Error.InUse", inUse.ErrorName);
        Assert.Contains("over-snappy", inUse.ErrorMessage);
    }

    [BusFact]
    public async Task ManagerPropertiesStatusAndPeer()
    {
        await fixture.CreateVolumeAsync("status-vol");
        Assert.Equal(fixture.Service.RuntimeDirectory, (await fixture.GetPropertyAsync(Root, Manager, "RuntimeDirectory")).GetString());
        Assert.Equal(Path.Combine(fixture.Root, "state"), (await fixture.GetPropertyAsync(Root, Manager, "StateDirectory")).GetString());
        Assert.False(string.IsNullOrEmpty((await fixture.GetPropertyAsync(Root, Manager, "Version")).GetString()));

        Dictionary<string, VariantValue> status = await fixture.CallAsync(Root, Manager, "GetStatus", null, null, m => m.GetBodyReader().ReadDictionaryOfStringToVariantValue());
        Assert.Equal(["ActivePools", "ConnectedGuests", "Exports", "Jobs", "Pools", "StartedAt", "Volumes"], status.Keys.Order(StringComparer.Ordinal));
        Assert.True(status["Pools"].GetUInt32() >= 1);
        Assert.Equal((uint)fixture.Service.ListVolumes("p").Count, status["Volumes"].GetUInt32() - (uint)fixture.Service.ListPools().Where(p => p.Name != "p").Sum(p => fixture.Service.ListVolumes(p.Name).Count));
        Assert.True(status["StartedAt"].GetInt64() > 0);

        var (code, _, error) = BusServerFixture.Run("busctl", "--address=" + fixture.Bus.Address, "call", StorageBusServer.BusName, BusServerFixture.PoolPath, "org.freedesktop.DBus.Peer", "Ping");
        Assert.True(code == 0, error);
        (code, _, error) = BusServerFixture.Run("busctl", "--address=" + fixture.Bus.Address, "call", StorageBusServer.BusName, "/org", "org.freedesktop.DBus.Peer", "Ping");
        Assert.True(code == 0, error);
    }
}
