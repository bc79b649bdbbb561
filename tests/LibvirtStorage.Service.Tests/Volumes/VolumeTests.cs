using LibvirtStorage.Images;
using LibvirtStorage.Service.Tests.Infrastructure;
using Xunit;

namespace LibvirtStorage.Service.Tests.Volumes;

public sealed class VolumeTests
{
    private const long MiB = 1 << 20;

    [Theory]
    [InlineData("raw")]
    [InlineData("qcow2")]
    [InlineData("QCOW2")]
    public void Create_makes_an_image_qemu_img_agrees_with(string format)
    {
        using var h = new ServiceHarness();
        VolumeInfo volume = h.Service.CreateVolume("p", new VolumeSpec("disk", format, 4 * MiB));
        Assert.Equal("disk", volume.Name);
        Assert.Equal(4 * MiB, volume.Capacity);
        Assert.Equal(h.File("disk"), volume.File);
        Assert.Equal("/run/lvstor/p/disk.sock", volume.SocketPath);
        Assert.Empty(volume.Chain);
        Assert.False(volume.ReadOnly);
        string info = Tool.QemuImg(h.PoolPath("p"), "info", "--output=json", "disk");
        Assert.Contains($"\"format\": \"{format.ToLowerInvariant()}\"", info, StringComparison.Ordinal);
        Assert.Contains($"\"virtual-size\": {4 * MiB}", info, StringComparison.Ordinal);
        Assert.Equal(volume.Key, h.Service.GetVolumeByKey(volume.Key).Key);
        Assert.Equal(["disk"], Directory.GetFiles(h.PoolPath("p")).Select(Path.GetFileName));
    }

    [Fact]
    public void Capacity_is_rounded_up_to_sectors()
    {
        using var h = new ServiceHarness();
        Assert.Equal(1024, h.Service.CreateVolume("p", new VolumeSpec("disk", "raw", 513)).Capacity);
    }

    [Fact]
    public void Capacity_at_the_limit_is_accepted_for_qcow2()
    {
        using var h = new ServiceHarness();
        VolumeInfo volume = h.Service.CreateVolume("p", new VolumeSpec("huge", "qcow2", StorageService.MaxCapacity));
        Assert.Equal(StorageService.MaxCapacity, volume.Capacity);
        Assert.Contains($"\"virtual-size\": {StorageService.MaxCapacity}", Tool.QemuImg(h.PoolPath("p"), "info", "--output=json", "huge"), StringComparison.Ordinal);
    }

    [Fact]
    public void Bad_creates_are_typed_and_change_nothing()
    {
        using var h = new ServiceHarness();
        h.Service.CreateVolume("p", new VolumeSpec("base", "qcow2", MiB));
        h.Service.DefinePool("other", h.PoolPath("other"));
        h.Service.StartPool("other");
        System.IO.File.WriteAllText(h.File("stray"), "not adopted yet");
        Expect.ErrorChangingNothing(h, StorageErrorKind.Invalid, () => h.Service.CreateVolume("p", new VolumeSpec("v", "raw", 0)));
        Expect.ErrorChangingNothing(h, StorageErrorKind.Invalid, () => h.Service.CreateVolume("p", new VolumeSpec("v", "raw", -1)));
        Expect.ErrorChangingNothing(h, StorageErrorKind.Invalid, () => h.Service.CreateVolume("p", new VolumeSpec("v", "qcow2", StorageService.MaxCapacity + 1)));
        Expect.ErrorChangingNothing(h, StorageErrorKind.Invalid, () => h.Service.CreateVolume("p", new VolumeSpec("v", "raw", long.MaxValue)));
        Expect.ErrorChangingNothing(h, StorageErrorKind.Invalid, () => h.Service.CreateVolume("p", new VolumeSpec("v", "vmdk", MiB)));
        Expect.ErrorChangingNothing(h, StorageErrorKind.Invalid, () => h.Service.CreateVolume("p", new VolumeSpec("v", "", MiB)));
        Expect.ErrorChangingNothing(h, StorageErrorKind.Invalid, () => h.Service.CreateVolume("p", new VolumeSpec("v", "raw")));
        Expect.ErrorChangingNothing(h, StorageErrorKind.Invalid, () => h.Service.CreateVolume("p", new VolumeSpec("v", "raw", MiB, "base")));
        Expect.ErrorChangingNothing(h, StorageErrorKind.Invalid, () => h.Service.CreateVolume("p", new VolumeSpec("v", "qcow2", MiB, "base"), backingPool: "other"));
        Expect.ErrorChangingNothing(h, StorageErrorKind.NotFound, () => h.Service.CreateVolume("p", new VolumeSpec("v", "qcow2", MiB, "nope")));
        Expect.ErrorChangingNothing(h, StorageErrorKind.Invalid, () => h.Service.CreateVolume("p", new VolumeSpec("a/b", "raw", MiB)));
        Expect.ErrorChangingNothing(h, StorageErrorKind.Invalid, () => h.Service.CreateVolume("p", new VolumeSpec("a\nb", "raw", MiB)));
        Expect.ErrorChangingNothing(h, StorageErrorKind.Exists, () => h.Service.CreateVolume("p", new VolumeSpec("base", "raw", MiB)));
        var stray = Expect.ErrorChangingNothing(h, StorageErrorKind.Exists, () => h.Service.CreateVolume("p", new VolumeSpec("stray", "raw", MiB)));
        Assert.Contains("refresh", stray.Message, StringComparison.Ordinal);
        Expect.ErrorChangingNothing(h, StorageErrorKind.NotFound, () => h.Service.CreateVolume("nope", new VolumeSpec("v", "raw", MiB)));
    }

    [Fact]
    public void Failed_state_write_removes_the_new_image()
    {
        using var h = new ServiceHarness();
        Directory.CreateDirectory(h.StateFile + ".tmp");
        Expect.ErrorChangingNothing(h, StorageErrorKind.Io, () => h.Service.CreateVolume("p", new VolumeSpec("v", "qcow2", MiB)));
        Assert.Empty(Directory.GetFileSystemEntries(h.PoolPath("p")));
    }

    [Fact]
    public void An_image_the_file_system_refuses_leaves_no_partial_file()
    {
        using var h = new ServiceHarness();
        if (new DriveInfo(h.PoolPath("p")).DriveFormat is not ("ext4" or "ext3" or "ext2"))
        {
            return; // needs a file system whose largest file is smaller than MaxCapacity (ext4: 16 TiB)
        }

        var ex = Expect.ErrorChangingNothing(h, StorageErrorKind.Io, () => h.Service.CreateVolume("p", new VolumeSpec("huge", "raw", StorageService.MaxCapacity)));
        Assert.Contains("cannot create volume 'huge'", ex.Message, StringComparison.Ordinal);
        Assert.Empty(Directory.GetFileSystemEntries(h.PoolPath("p")));
    }

    [Fact]
    public void Overlay_over_a_backing_volume_shows_the_chain_and_makes_the_base_read_only()
    {
        using var h = new ServiceHarness();
        h.Service.CreateVolume("p", new VolumeSpec("base", "raw", 2 * MiB));
        VolumeInfo overlay = h.Service.CreateVolume("p", new VolumeSpec("vm1", "qcow2", null, "base"));
        Assert.Equal(2 * MiB, overlay.Capacity);
        Assert.Equal([new ChainLayer("base", null, ImageFormat.Raw, h.File("base"))], overlay.Chain);
        Assert.True(h.Service.GetVolume("p", "base").ReadOnly);
        string info = Tool.QemuImg(h.PoolPath("p"), "info", "--output=json", "vm1");
        Assert.Contains("\"backing-filename\": \"base\"", info, StringComparison.Ordinal);
        Assert.Contains("\"backing-filename-format\": \"raw\"", info, StringComparison.Ordinal);
    }

    [Fact]
    public void Delete_is_refused_naming_the_users()
    {
        using var h = new ServiceHarness();
        VolumeInfo base_ = h.Service.CreateVolume("p", new VolumeSpec("base", "qcow2", MiB));
        h.Service.CreateVolume("p", new VolumeSpec("vm1", "qcow2", null, "base"));
        var ex = Expect.ErrorChangingNothing(h, StorageErrorKind.InUse, () => h.Service.DeleteVolume("p", "base"));
        Assert.Contains("volume 'vm1'", ex.Message, StringComparison.Ordinal);
        Assert.Equal("org.lvstor.Storage1.Error.InUse", ex.DBusErrorName);

        h.Service.DeleteVolume("p", "vm1");
        using (h.Users.Attach(base_.Key, new VolumeUser("domain", "guest-7")))
        {
            ex = Expect.ErrorChangingNothing(h, StorageErrorKind.InUse, () => h.Service.DeleteVolume("p", "base"));
            Assert.Contains("domain guest-7", ex.Message, StringComparison.Ordinal);
        }

        h.Service.DeleteVolume("p", "base");
        Assert.Empty(Directory.GetFileSystemEntries(h.PoolPath("p")));
        Expect.ErrorChangingNothing(h, StorageErrorKind.NotFound, () => h.Service.DeleteVolume("p", "base"));
    }

    [Fact]
    public void Resize_grows_and_shrinks_only_when_asked_and_allowed()
    {
        using var h = new ServiceHarness();
        h.Service.CreateVolume("p", new VolumeSpec("q", "qcow2", 2 * MiB));
        Assert.Equal(8 * MiB, h.Service.ResizeVolume("p", "q", 8 * MiB).Capacity);
        Expect.ErrorChangingNothing(h, StorageErrorKind.Invalid, () => h.Service.ResizeVolume("p", "q", MiB));
        Expect.ErrorChangingNothing(h, StorageErrorKind.Invalid, () => h.Service.ResizeVolume("p", "q", 0, allowShrink: true));
        Expect.ErrorChangingNothing(h, StorageErrorKind.Invalid, () => h.Service.ResizeVolume("p", "q", StorageService.MaxCapacity + 512));
        Assert.Equal(MiB, h.Service.ResizeVolume("p", "q", MiB, allowShrink: true).Capacity);

        // Data in the tail: the engine refuses to cut it off.
        Tool.QemuIo(h.File("q"), "qcow2", "write -P 0x5a 768k 64k");
        Expect.ErrorChangingNothing(h, StorageErrorKind.Invalid, () => h.Service.ResizeVolume("p", "q", 512 * 1024, allowShrink: true));
        Assert.Contains("No errors", Tool.QemuImg(h.PoolPath("p"), "check", "q"), StringComparison.Ordinal);

        h.Service.CreateVolume("p", new VolumeSpec("r", "raw", 2 * MiB));
        Assert.Equal(MiB, h.Service.ResizeVolume("p", "r", MiB, allowShrink: true).Capacity);
        Assert.Equal(MiB, new FileInfo(h.File("r")).Length);
    }

    [Fact]
    public void Resize_of_a_backing_volume_is_refused()
    {
        using var h = new ServiceHarness();
        h.Service.CreateVolume("p", new VolumeSpec("base", "raw", MiB));
        h.Service.CreateVolume("p", new VolumeSpec("vm1", "qcow2", null, "base"));
        var ex = Expect.ErrorChangingNothing(h, StorageErrorKind.InUse, () => h.Service.ResizeVolume("p", "base", 2 * MiB));
        Assert.Contains("'vm1'", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Volume_calls_on_unknown_names_are_NotFound()
    {
        using var h = new ServiceHarness();
        Expect.ErrorChangingNothing(h, StorageErrorKind.NotFound, () => h.Service.GetVolume("p", "x"));
        Expect.ErrorChangingNothing(h, StorageErrorKind.NotFound, () => h.Service.ResizeVolume("p", "x", MiB));
        Expect.ErrorChangingNothing(h, StorageErrorKind.NotFound, () => h.Service.CreateSnapshot("p", "x", "s"));
        Expect.ErrorChangingNothing(h, StorageErrorKind.NotFound, () => h.Service.GetVolumeByKey(Guid.NewGuid()));
        Expect.ErrorChangingNothing(h, StorageErrorKind.NotFound, () => h.Service.ListVolumes("nope"));
    }
}
