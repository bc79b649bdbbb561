using Tmds.DBus.Protocol;
using Xunit;

namespace LibvirtStorage.DBus.Tests;

/// <summary>Bad clients do not take the server down.</summary>
public sealed class RobustnessTests(BusServerFixture fixture) : IClassFixture<BusServerFixture>
{
    private const string Manager = "org.lvstor.Storage1.Manager";

    [BusFact]
    public async Task AClientThatDisconnectsMidCallLeavesTheServerServing()
    {
        for (int round = 0; round < 5; round++)
        {
            var client = new DBusConnection(fixture.Bus.Address);
            await client.ConnectAsync();
            var calls = new List<Task>();
            for (int i = 0; i < 10; i++)
            {
                int n = round * 10 + i;
                calls.Add(fixture.CallAsync(BusServerFixture.PoolPath, "org.lvstor.Storage1.Pool", "CreateVolume", "sstsa{sv}", (ref MessageWriter w) =>
                {
                    w.WriteString($"gone-{n}");
                    w.WriteString("qcow2");
                    w.WriteUInt64(1 << 20);
                    w.WriteString("");
                    w.WriteDictionary(new Dictionary<string, VariantValue>());
                }, _ => true, client));
                calls.Add(fixture.CallAsync(StorageBusServer.RootPath, "org.freedesktop.DBus.ObjectManager", "GetManagedObjects", null, null, _ => true, client));
            }

            client.Dispose();
            foreach (Task call in calls)
            {
                // A call either got its reply before the disconnect or fails with the connection; none hangs.
                Exception? failure = await Record.ExceptionAsync(() => call.WaitAsync(TimeSpan.FromSeconds(30)));
                Assert.IsNotType<TimeoutException>(failure);
            }
        }

        Assert.False(fixture.Server.Completion.IsCompleted);
        Assert.Contains(BusServerFixture.PoolPath, await fixture.ListAsync(StorageBusServer.RootPath, Manager, "ListPools"));

        // Whatever the vanished client got created is consistent: the bus shows exactly the service's volumes.
        string[] listed = await fixture.ListAsync(BusServerFixture.PoolPath, "org.lvstor.Storage1.Pool", "ListVolumes");
        Assert.Equal(fixture.Service.ListVolumes("p").Select(v => BusServerFixture.VolumePath(v.Name)).Order(StringComparer.Ordinal), listed);
    }

    [BusFact]
    public async Task PipelinedCallsFromOneClientAreAnsweredInOrder()
    {
        // Sent back to back without waiting: each GetVolume must see the CreateVolume sent before it.
        var creates = new List<Task<string>>();
        var gets = new List<Task<string>>();
        for (int i = 0; i < 10; i++)
        {
            string name = $"ordered-{i}";
            creates.Add(fixture.CreateVolumeAsync(name));
            gets.Add(fixture.CallPathAsync(BusServerFixture.PoolPath, "org.lvstor.Storage1.Pool", "GetVolume", "s", (ref MessageWriter w) => w.WriteString(name)));
        }

        for (int i = 0; i < 10; i++)
        {
            Assert.Equal(await creates[i], await gets[i]);
        }
    }

    [BusFact]
    public async Task GarbageCallsGetErrorsAndTheServerStays()
    {
        var (code, _, error) = BusServerFixture.Run("busctl", "--address=" + fixture.Bus.Address, "call", StorageBusServer.BusName,
            BusServerFixture.PoolPath, "org.lvstor.Storage1.Pool", "CreateVolume", "y", "7");
        Assert.NotEqual(0, code);
        Assert.Contains("signature", error);

        var wrong = await Assert.ThrowsAsync<DBusErrorReplyException>(() =>
            fixture.CallAsync(StorageBusServer.RootPath, Manager, "ListPools", "ay", (ref MessageWriter w) => w.WriteArray(new byte[] { 1, 2, 3 })));
        Assert.Equal("org.freedesktop.DBus.Error.InvalidArgs", wrong.ErrorName);

        var unknownInterface = await Assert.ThrowsAsync<DBusErrorReplyException>(() =>
            fixture.CallAsync(StorageBusServer.RootPath, "org.example.Nope", "ListPools"));
        Assert.Equal("org.freedesktop.DBus.Error.UnknownMethod", unknownInterface.ErrorName);

        var property = await Assert.ThrowsAsync<DBusErrorReplyException>(() =>
            fixture.GetPropertyAsync(BusServerFixture.PoolPath, "org.lvstor.Storage1.Pool", "Nope"));
        Assert.Equal("org.freedesktop.DBus.Error.UnknownProperty", property.ErrorName);

        // A call without an interface is routed by member name.
        string[] pools = await fixture.CallAsync(StorageBusServer.RootPath, null!, "ListPools", null, null, m => m.GetBodyReader().ReadArrayOfObjectPath().Select(p => p.ToString()).ToArray());
        Assert.Contains(BusServerFixture.PoolPath, pools);
        Assert.False(fixture.Server.Completion.IsCompleted);
    }
}
