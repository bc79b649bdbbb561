using Xunit;

namespace LibvirtStorage.DBus.Tests;

public sealed class IntrospectionTests(BusServerFixture fixture) : IClassFixture<BusServerFixture>
{
    [BusFact]
    public async Task GdbusIntrospectRecurseShowsEveryInterfaceMethodAndProperty()
    {
        await fixture.CreateVolumeAsync("intro-vol");
        var (code, output, error) = BusServerFixture.Run("gdbus", "introspect", "--address", fixture.Bus.Address, "--dest", StorageBusServer.BusName,
            "--object-path", StorageBusServer.RootPath, "--recurse");
        Assert.True(code == 0, error);
        foreach (string expected in new[]
        {
            "interface org.lvstor.Storage1.Manager", "DefinePool(in  s name,", "GetStatus(out a{sv} status)", "ListUsers(out a(ssss) users)",
            "interface org.freedesktop.DBus.ObjectManager", "GetManagedObjects(",
            "interface org.lvstor.Storage1.Pool", "CreateVolume(in  s name,", "in  a{sv} options,", "Refresh(out as adopted,",
            "readonly t Capacity", "readonly u VolumeCount",
            "interface org.lvstor.Storage1.Volume", "Resize(in  t capacity,", "Upload(in  h fd,", "readonly a(ssss) BackingChain",
            "readonly a(sxss) Snapshots", "readonly a(ss) Users", "readonly s ExportState",
            "node /org/lvstor/Storage1/pool/p/intro_2dvol", "interface org.freedesktop.DBus.Peer", "interface org.freedesktop.DBus.Introspectable",
        })
        {
            Assert.Contains(expected, output);
        }
    }

    [BusFact]
    public async Task BusctlTreeWalksFromTheBusRoot()
    {
        await fixture.CreateVolumeAsync("tree-vol");
        var (code, output, error) = BusServerFixture.Run("busctl", "--address=" + fixture.Bus.Address, "tree", "--list", StorageBusServer.BusName);
        Assert.True(code == 0, error);
        string[] paths = output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        Assert.Contains("/org", paths);
        Assert.Contains("/org/lvstor", paths);
        Assert.Contains("/org/lvstor/Storage1", paths);
        Assert.Contains("/org/lvstor/Storage1/pool", paths);
        Assert.Contains("/org/lvstor/Storage1/pool/p", paths);
        Assert.Contains("/org/lvstor/Storage1/pool/p/tree_2dvol", paths);
    }

    [BusFact]
    public async Task BusctlIntrospectShowsSignaturesAndPropertyValues()
    {
        await fixture.CreateVolumeAsync("bi-vol", capacity: 2 << 20);
        var (code, output, error) = BusServerFixture.Run("busctl", "--address=" + fixture.Bus.Address, "introspect", StorageBusServer.BusName,
            BusServerFixture.VolumePath("bi-vol"), "org.lvstor.Storage1.Volume");
        Assert.True(code == 0, error);
        Assert.Matches(@"\.Resize\s+method\s+tb\s+-", output);
        Assert.Matches(@"\.Clone\s+method\s+sss\s+o", output);
        Assert.Matches(@"\.Capacity\s+property\s+t\s+2097152", output);
        Assert.Matches(@"\.Name\s+property\s+s\s+""bi-vol""", output);
    }

    [BusFact]
    public async Task TheJobFolderListsJobsAndIntermediateNodesAnswerProperties()
    {
        string volume = await fixture.CreateVolumeAsync("intro-job");
        string job = await fixture.CallPathAsync(volume, "org.lvstor.Storage1.Volume", "Wipe");
        var (code, output, error) = BusServerFixture.Run("gdbus", "introspect", "--address", fixture.Bus.Address, "--dest", StorageBusServer.BusName,
            "--object-path", StorageBusServer.RootPath + "/job");
        Assert.True(code == 0, error);
        Assert.Contains("node " + job[(job.LastIndexOf('/') + 1)..], output);

        (code, output, error) = BusServerFixture.Run("busctl", "--address=" + fixture.Bus.Address, "call", StorageBusServer.BusName, "/org/lvstor",
            "org.freedesktop.DBus.Properties", "GetAll", "s", "");
        Assert.True(code == 0, error);
        Assert.Equal("a{sv} 0", output.Trim());
    }
}
