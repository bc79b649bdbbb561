using Xunit;

namespace LibvirtStorage.Libvirt.Tests;

/// <summary>lvstord going away makes vol-* fail cleanly; libvirtd stays up and recovers when lvstord is back.</summary>
[Collection(LibvirtCollection.Name)]
public sealed class LvstordOutageTests(LibvirtWorld world)
{
    [LibvirtFact]
    public void Without_lvstord_vol_commands_fail_cleanly_and_service_returns_without_restarting_libvirtd()
    {
        world.Up();
        string pool = world.StartPool("outage");
        world.VirshOk("vol-create-as", pool, "a.qcow2", "8M", "--format", "qcow2");
        int libvirtd = world.Pid("libvirtd") ?? throw new InvalidOperationException("libvirtd is not running");

        Assert.Equal(0, world.Harness("stop-lvstord").ExitCode);
        try
        {
            foreach (string[] command in new[]
                     {
                         new[] { "vol-info", "--pool", pool, "a.qcow2" },
                         ["vol-dumpxml", "--pool", pool, "a.qcow2"],
                         ["vol-create-as", pool, "b.qcow2", "8M", "--format", "qcow2"],
                         ["vol-resize", "--pool", pool, "a.qcow2", "16M"],
                         ["vol-delete", "--pool", pool, "a.qcow2"],
                     })
            {
                CommandResult r = world.Virsh(command);
                Assert.True(r.ExitCode != 0, $"expected a failure while lvstord is down:\n{r}");
                Assert.StartsWith("error: ", r.Stderr.TrimStart());
                Assert.Contains("lvstord is not running", r.Stderr);
            }

            // libvirtd itself is fine: same process, still answering.
            Assert.Equal(libvirtd, world.Pid("libvirtd"));
            world.VirshOk("list", "--all");
            world.VirshOk("pool-list", "--all");
        }
        finally
        {
            Assert.Equal(0, world.Harness("start-lvstord").ExitCode);
        }

        // lvstord is back: the same libvirtd serves the pool again, with nothing lost or half-done.
        world.VirshOk("vol-info", "--pool", pool, "a.qcow2");
        world.VirshOk("vol-create-as", pool, "b.qcow2", "8M", "--format", "qcow2");
        world.VirshOk("pool-refresh", pool);
        string list = world.VolumeNames(pool);
        Assert.Contains("a.qcow2", list);
        Assert.Contains("b.qcow2", list);
        Assert.Equal(8L * 1024 * 1024, VolumeXml.Parse(world.VirshOk("vol-dumpxml", "--pool", pool, "a.qcow2")).Capacity);
        Assert.Equal(libvirtd, world.Pid("libvirtd"));
    }
}
