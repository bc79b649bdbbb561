using LibvirtStorage.Service.Tests.Infrastructure;
using Xunit;

namespace LibvirtStorage.Service.Tests.Pools;

public sealed class PoolTests
{
    [Fact]
    public void Define_creates_the_directory_and_starts_stopped()
    {
        using var h = new ServiceHarness(definePool: false);
        PoolInfo pool = h.Service.DefinePool("images", h.PoolPath("images"));
        Assert.True(Directory.Exists(h.PoolPath("images")));
        Assert.False(pool.Active);
        Assert.Equal(0, pool.Capacity);
        Assert.NotEqual(Guid.Empty, pool.Uuid);
        Assert.Equal(["images"], h.Service.ListPools().Select(p => p.Name));
    }

    [Fact]
    public void Started_pool_reports_statvfs_sizes()
    {
        using var h = new ServiceHarness();
        PoolInfo pool = h.Service.GetPool("p");
        Assert.True(pool.Active);
        Assert.True(pool.Capacity > 0);
        Assert.True(pool.Available > 0 && pool.Available <= pool.Capacity);
        Assert.True(pool.Allocation > 0 && pool.Allocation <= pool.Capacity);
        var drive = new DriveInfo(h.PoolPath("p"));
        Assert.Equal(drive.TotalSize, pool.Capacity);
    }

    [Fact]
    public void Start_stop_undefine_cycle()
    {
        using var h = new ServiceHarness();
        Expect.Error(StorageErrorKind.Invalid, () => h.Service.StartPool("p"));
        Expect.ErrorChangingNothing(h, StorageErrorKind.Invalid, () => h.Service.UndefinePool("p"));
        h.Service.StopPool("p");
        Expect.Error(StorageErrorKind.Invalid, () => h.Service.StopPool("p"));
        Expect.Error(StorageErrorKind.Invalid, () => h.Service.CreateVolume("p", new VolumeSpec("v", "raw", 4096)));
        h.Service.UndefinePool("p");
        Assert.Empty(h.Service.ListPools());
        Assert.True(Directory.Exists(h.PoolPath("p")), "undefine keeps the directory");
        Expect.Error(StorageErrorKind.NotFound, () => h.Service.GetPool("p"));
    }

    [Fact]
    public void Autostart_flag_is_kept()
    {
        using var h = new ServiceHarness();
        Assert.True(h.Service.SetPoolAutostart("p", true).Autostart);
        Assert.True(h.Reopen().GetPool("p").Autostart);
        Assert.False(h.Service.SetPoolAutostart("p", false).Autostart);
        Assert.False(h.Reopen().GetPool("p").Autostart);
    }

    [Fact]
    public void Bad_definitions_are_refused_and_change_nothing()
    {
        using var h = new ServiceHarness();
        System.IO.File.WriteAllText(Path.Combine(h.Root, "afile"), "x");
        Expect.ErrorChangingNothing(h, StorageErrorKind.Exists, () => h.Service.DefinePool("p", h.PoolPath("other")));
        Expect.ErrorChangingNothing(h, StorageErrorKind.Exists, () => h.Service.DefinePool("q", h.PoolPath("p")));
        Expect.ErrorChangingNothing(h, StorageErrorKind.Exists, () => h.Service.DefinePool("q", h.PoolPath("p") + "/sub"));
        Expect.ErrorChangingNothing(h, StorageErrorKind.Invalid, () => h.Service.DefinePool("q", "relative/dir"));
        Expect.ErrorChangingNothing(h, StorageErrorKind.Invalid, () => h.Service.DefinePool("q", ""));
        Expect.ErrorChangingNothing(h, StorageErrorKind.Invalid, () => h.Service.DefinePool("q", Path.Combine(h.Root, "afile")));
        Expect.ErrorChangingNothing(h, StorageErrorKind.Invalid, () => h.Service.DefinePool("q", h.StateDirectory));
        Expect.ErrorChangingNothing(h, StorageErrorKind.Invalid, () => h.Service.DefinePool("bad name", h.PoolPath("q")));
        Expect.ErrorChangingNothing(h, StorageErrorKind.Invalid, () => h.Service.DefinePool("..", h.PoolPath("q")));
        Expect.ErrorChangingNothing(h, StorageErrorKind.NotFound, () => h.Service.StartPool("nope"));
        Expect.ErrorChangingNothing(h, StorageErrorKind.NotFound, () => h.Service.SetPoolAutostart("nope", true));
        Assert.False(Directory.Exists(h.PoolPath("q")));
    }

    [Fact]
    public void Start_of_a_pool_whose_directory_vanished_is_NotFound()
    {
        using var h = new ServiceHarness();
        h.Service.StopPool("p");
        Directory.Delete(h.PoolPath("p"));
        var ex = Expect.ErrorChangingNothing(h, StorageErrorKind.NotFound, () => h.Service.StartPool("p"));
        Assert.Contains(h.PoolPath("p"), ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Stop_is_refused_while_a_volume_has_users()
    {
        using var h = new ServiceHarness();
        VolumeInfo volume = h.Service.CreateVolume("p", new VolumeSpec("disk", "raw", 65536));
        using (h.Users.Attach(volume.Key, new VolumeUser("export", "/run/lvstor/p/disk.sock")))
        {
            var ex = Expect.ErrorChangingNothing(h, StorageErrorKind.InUse, () => h.Service.StopPool("p"));
            Assert.Contains("/run/lvstor/p/disk.sock", ex.Message, StringComparison.Ordinal);
        }

        h.Service.StopPool("p");
    }

    [Fact]
    public void Failed_state_write_removes_a_created_pool_directory()
    {
        using var h = new ServiceHarness();
        Directory.CreateDirectory(h.StateFile + ".tmp"); // the temporary state file cannot be created
        Expect.ErrorChangingNothing(h, StorageErrorKind.Io, () => h.Service.DefinePool("q", h.PoolPath("q")));
        Assert.False(Directory.Exists(h.PoolPath("q")));
    }
}
