using Xunit;

namespace LibvirtStorage.DBus.Tests;

/// <summary>
/// lvstord's own check of the caller (docs/dbus-api.md, Authorisation), through real clients run as other
/// users with setpriv: the test bus's policy lets everyone in, so what is refused here is refused by lvstord.
/// </summary>
public sealed class AuthorisationTests(BusServerFixture fixture) : IClassFixture<BusServerFixture>
{
    private static readonly string[] Nobody = ["--reuid=65534", "--regid=65534", "--clear-groups"];

    private (int Code, string Out, string Err) GdbusAs(string[] identity, string path, string method, params string[] args) =>
        BusServerFixture.Run("setpriv", [.. identity, "gdbus", "call", "--address", fixture.Bus.Address, "--dest", StorageBusServer.BusName,
            "--object-path", path, "--method", method, .. args]);

    private static string[] CreateArgs(string name) => [$"'{name}'", "'qcow2'", "uint64 1048576", "''", "@a{sv} {}"];

    [BusFact]
    public void AnUnprivilegedCallerIsRefusedAMutatingMethodAndNothingChanges()
    {
        string before = fixture.Inventory();
        var (code, _, error) = GdbusAs(Nobody, BusServerFixture.PoolPath, "org.lvstor.Storage1.Pool.CreateVolume", CreateArgs("nobody-vol"));
        Assert.NotEqual(0, code);
        Assert.Contains("org.lvstor.Storage1.Error.AccessDenied", error);
        Assert.Contains("uid 65534", error);
        Assert.Contains($"{BusServerFixture.AdminGroup} (gid {BusServerFixture.AdminGid})", error);
        Assert.Equal(before, fixture.Inventory());
    }

    [BusFact]
    public void BusctlAsAnUnprivilegedCallerIsRefusedToo()
    {
        var (code, _, error) = BusServerFixture.Run("setpriv", [.. Nobody, "busctl", "--address=" + fixture.Bus.Address, "call", StorageBusServer.BusName,
            BusServerFixture.PoolPath, "org.lvstor.Storage1.Pool", "SetAutostart", "b", "true"]);
        Assert.NotEqual(0, code);
        Assert.Contains("uid 65534 may not call org.lvstor.Storage1.Pool.SetAutostart", error);
        Assert.False(fixture.Service.GetPool(BusServerFixture.Pool).Autostart);
    }

    [BusFact]
    public void AnUnprivilegedCallerMayRead()
    {
        var (code, output, error) = GdbusAs(Nobody, StorageBusServer.RootPath, "org.lvstor.Storage1.Manager.ListPools");
        Assert.True(code == 0, error);
        Assert.Contains(BusServerFixture.PoolPath, output);

        (code, output, error) = BusServerFixture.Run("setpriv", [.. Nobody, "busctl", "--address=" + fixture.Bus.Address, "get-property", StorageBusServer.BusName,
            BusServerFixture.PoolPath, "org.lvstor.Storage1.Pool", "Name"]);
        Assert.True(code == 0, error);
        Assert.Equal("s \"p\"", output.Trim());
    }

    [BusFact]
    public void AMemberOfAnAdminGroupIsAllowed()
    {
        string gid = BusServerFixture.AdminGid.ToString(System.Globalization.CultureInfo.InvariantCulture);
        var (code, output, error) = GdbusAs(["--reuid=65534", "--regid=65534", "--groups=" + gid], BusServerFixture.PoolPath,
            "org.lvstor.Storage1.Pool.CreateVolume", CreateArgs("group-vol"));
        Assert.True(code == 0, error);
        Assert.Contains(BusServerFixture.VolumePath("group-vol"), output);
        Assert.Contains(fixture.Service.ListVolumes(BusServerFixture.Pool), v => v.Name == "group-vol");
    }

    [BusFact]
    public void AnAdminGroupAsPrimaryGroupIsAllowed()
    {
        string gid = BusServerFixture.AdminGid.ToString(System.Globalization.CultureInfo.InvariantCulture);
        var (code, _, error) = GdbusAs(["--reuid=65534", "--regid=" + gid, "--clear-groups"], BusServerFixture.PoolPath,
            "org.lvstor.Storage1.Pool.CreateVolume", CreateArgs("primary-vol"));
        Assert.True(code == 0, error);
        Assert.Contains(fixture.Service.ListVolumes(BusServerFixture.Pool), v => v.Name == "primary-vol");
    }
}
