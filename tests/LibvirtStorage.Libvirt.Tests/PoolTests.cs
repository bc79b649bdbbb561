using Xunit;

namespace LibvirtStorage.Libvirt.Tests;

/// <summary>pool-define-as … pool-undefine through libvirt on a vstorage pool served by lvstord.</summary>
[Collection(LibvirtCollection.Name)]
public sealed class PoolTests(LibvirtWorld world)
{
    [LibvirtFact]
    public void Pool_lifecycle_define_start_info_refresh_autostart_destroy_undefine()
    {
        world.Up();
        string pool = world.Unique("life");
        string dir = world.PoolDir(pool);

        Assert.Contains($"Pool {pool} defined", world.VirshOk("pool-define-as", pool, "vstorage", "--target", dir));
        Assert.Contains($"Pool {pool} started", world.VirshOk("pool-start", pool));
        Assert.True(Directory.Exists(dir), $"lvstord did not create the pool directory {dir}");

        string info = world.VirshOk("pool-info", pool);
        Assert.Matches(@"State:\s+running", info);
        Assert.Matches(@"Persistent:\s+yes", info);
        Assert.Matches(@"Capacity:\s+\d", info);

        string xml = world.VirshOk("pool-dumpxml", pool);
        Assert.Contains("type='vstorage'", xml);
        Assert.Contains($"<path>{dir}</path>", xml);

        world.VirshOk("vol-create-as", pool, "v.raw", "1M", "--format", "raw");
        Assert.Contains($"Pool {pool} refreshed", world.VirshOk("pool-refresh", pool));
        Assert.Contains("v.raw", world.VirshOk("vol-list", pool));

        world.VirshOk("pool-autostart", pool);
        Assert.Matches(@"Autostart:\s+yes", world.VirshOk("pool-info", pool));
        world.VirshOk("pool-autostart", pool, "--disable");
        Assert.Matches(@"Autostart:\s+no", world.VirshOk("pool-info", pool));

        Assert.Contains($"Pool {pool} destroyed", world.VirshOk("pool-destroy", pool));
        Assert.Matches(@"State:\s+inactive", world.VirshOk("pool-info", pool));

        // Started again, the pool shows the volume lvstord kept.
        world.VirshOk("pool-start", pool);
        Assert.Contains("v.raw", world.VirshOk("vol-list", pool));
        world.VirshOk("vol-delete", "--pool", pool, "v.raw");
        world.VirshOk("pool-destroy", pool);

        Assert.Contains($"Pool {pool} has been undefined", world.VirshOk("pool-undefine", pool));
        Assert.DoesNotContain(pool, world.VirshOk("pool-list", "--all", "--name"));
    }

    [LibvirtFact]
    public void A_libvirtd_restart_finds_the_running_pool_and_its_volumes_again_from_lvstord()
    {
        world.Up();
        string pool = world.StartPool("restart");
        world.VirshOk("vol-create-as", pool, "kept.qcow2", "8M", "--format", "qcow2");
        int lvstord = world.Pid("lvstord") ?? throw new InvalidOperationException("lvstord is not running");

        Assert.Equal(0, world.Harness("stop-libvirtd").ExitCode);
        CommandResult start = world.Harness("start-libvirtd");
        Assert.True(start.ExitCode == 0, $"libvirtd did not start again:\n{start}\n{world.Logs()}");

        Assert.Matches(@"State:\s+running", world.VirshOk("pool-info", pool));
        Assert.Equal("kept.qcow2", world.VolumeNames(pool));
        Assert.Equal(8L * 1024 * 1024, VolumeXml.Parse(world.VirshOk("vol-dumpxml", "--pool", pool, "kept.qcow2")).Capacity);
        Assert.Equal(lvstord, world.Pid("lvstord"));
    }

    [LibvirtFact]
    public void Pool_capabilities_list_vstorage_as_supported()
    {
        world.Up();
        Assert.Contains("<pool type='vstorage' supported='yes'>", world.VirshOk("pool-capabilities"));
    }

    [LibvirtFact]
    public void Pool_info_of_a_missing_pool_is_libvirts_not_found_error()
    {
        world.Up();
        CommandResult r = world.Virsh("pool-info", "no-such-pool");
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains("error: failed to get pool 'no-such-pool'", r.Stderr);
    }
}
