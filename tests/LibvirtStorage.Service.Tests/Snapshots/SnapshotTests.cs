using System.Text.Json;
using LibvirtStorage.Images;
using LibvirtStorage.Service.Tests.Infrastructure;
using Xunit;

namespace LibvirtStorage.Service.Tests.Snapshots;

public sealed class SnapshotTests
{
    private const long MiB = 1 << 20;

    /// <summary>The chain qemu-img sees from the volume's top file: (file name, format) pairs, top first.</summary>
    private static List<(string File, string Format)> QemuChain(ServiceHarness h, string volume)
    {
        string top = h.Service.GetVolume("p", volume).File;
        string json = Tool.QemuImg(h.PoolPath("p"), "info", "--backing-chain", "--output=json", top);
        using JsonDocument document = JsonDocument.Parse(json);
        return document.RootElement.EnumerateArray()
            .Select(e => (Path.GetFileName(e.GetProperty("filename").GetString()!), e.GetProperty("format").GetString()!))
            .ToList();
    }

    private static void AssertClean(ServiceHarness h, string volume)
    {
        VolumeInfo info = h.Service.GetVolume("p", volume);
        if (info.Format == ImageFormat.Qcow2)
        {
            Assert.Contains("No errors were found", Tool.QemuImg(h.PoolPath("p"), "check", info.File), StringComparison.Ordinal);
        }
    }

    [Fact]
    public void Snapshot_puts_a_new_overlay_on_top_and_keeps_name_and_key()
    {
        using var h = new ServiceHarness();
        VolumeInfo before = h.Service.CreateVolume("p", new VolumeSpec("disk", "raw", 2 * MiB));
        Tool.QemuIo(h.File("disk"), "raw", "write -P 0x11 0 64k");

        SnapshotInfo snapshot = h.Service.CreateSnapshot("p", "disk", "s1");
        Assert.Equal("s1", snapshot.Name);
        Assert.Equal(h.File("disk"), snapshot.File);
        Assert.True(DateTimeOffset.UtcNow - snapshot.Created < TimeSpan.FromMinutes(1));

        VolumeInfo after = h.Service.GetVolume("p", "disk");
        Assert.Equal(before.Key, after.Key);
        Assert.Equal(ImageFormat.Qcow2, after.Format);
        Assert.Equal(h.File(".disk.1"), after.File);
        Assert.Equal(2 * MiB, after.Capacity);
        Assert.Equal([new ChainLayer("disk", "s1", ImageFormat.Raw, h.File("disk"))], after.Chain);
        Assert.Equal([(".disk.1", "qcow2"), ("disk", "raw")], QemuChain(h, "disk"));
        AssertClean(h, "disk");
        Tool.QemuIo(after.File, "qcow2", "read -P 0x11 0 64k");
        Assert.Equal(["s1"], h.Service.ListSnapshots("p", "disk").Select(s => s.Name));
    }

    [Fact]
    public void Revert_discards_the_overlay_and_starts_a_fresh_one_over_the_snapshot()
    {
        using var h = new ServiceHarness();
        VolumeInfo created = h.Service.CreateVolume("p", new VolumeSpec("disk", "qcow2", 2 * MiB));
        Tool.QemuIo(h.File("disk"), "qcow2", "write -P 0x11 0 64k");
        h.Service.CreateSnapshot("p", "disk", "s1");
        Tool.QemuIo(h.File(".disk.1"), "qcow2", "write -P 0x22 0 64k");
        h.Service.CreateSnapshot("p", "disk", "s2");
        Tool.QemuIo(h.File(".disk.2"), "qcow2", "write -P 0x33 0 64k");
        Assert.Equal([(".disk.2", "qcow2"), (".disk.1", "qcow2"), ("disk", "qcow2")], QemuChain(h, "disk"));

        VolumeInfo reverted = h.Service.RevertToSnapshot("p", "disk", "s2");
        Assert.Equal(created.Key, reverted.Key);
        Assert.Equal(h.File(".disk.3"), reverted.File);
        Assert.False(System.IO.File.Exists(h.File(".disk.2")), "the discarded overlay is removed");
        Assert.Equal([(".disk.3", "qcow2"), (".disk.1", "qcow2"), ("disk", "qcow2")], QemuChain(h, "disk"));
        Tool.QemuIo(reverted.File, "qcow2", "read -P 0x22 0 64k");
        AssertClean(h, "disk");

        // Going back past s2 loses it, so it must be asked for.
        var ex = Expect.ErrorChangingNothing(h, StorageErrorKind.Invalid, () => h.Service.RevertToSnapshot("p", "disk", "s1"));
        Assert.Contains("'s2'", ex.Message, StringComparison.Ordinal);
        reverted = h.Service.RevertToSnapshot("p", "disk", "s1", discardNewer: true);
        Assert.Equal(["s1"], reverted.Snapshots.Select(s => s.Name));
        Assert.Equal([(".disk.4", "qcow2"), ("disk", "qcow2")], QemuChain(h, "disk"));
        Assert.Equal(["disk", ".disk.4"], Directory.GetFiles(h.PoolPath("p")).Select(Path.GetFileName).Order(StringComparer.Ordinal).Reverse());
        Tool.QemuIo(reverted.File, "qcow2", "read -P 0x11 0 64k");
        AssertClean(h, "disk");
        Assert.Empty(h.Reopen().LoadProblems);
    }

    [Fact]
    public void Bad_snapshot_calls_are_typed_and_change_nothing()
    {
        using var h = new ServiceHarness();
        h.Service.CreateVolume("p", new VolumeSpec("disk", "qcow2", MiB));
        h.Service.CreateSnapshot("p", "disk", "s1");
        Expect.ErrorChangingNothing(h, StorageErrorKind.Exists, () => h.Service.CreateSnapshot("p", "disk", "s1"));
        Expect.ErrorChangingNothing(h, StorageErrorKind.Invalid, () => h.Service.CreateSnapshot("p", "disk", "bad/name"));
        Expect.ErrorChangingNothing(h, StorageErrorKind.Invalid, () => h.Service.CreateSnapshot("p", "disk", ""));
        Expect.ErrorChangingNothing(h, StorageErrorKind.NotFound, () => h.Service.RevertToSnapshot("p", "disk", "nope"));
        Expect.ErrorChangingNothing(h, StorageErrorKind.NotFound, () => h.Service.ListSnapshots("p", "nope"));
    }

    [Fact]
    public void A_failed_snapshot_leaves_the_volume_exactly_as_it_was()
    {
        using var h = new ServiceHarness();
        h.Service.CreateVolume("p", new VolumeSpec("disk", "qcow2", MiB));
        Directory.CreateDirectory(h.StateFile + ".tmp");
        Expect.ErrorChangingNothing(h, StorageErrorKind.Io, () => h.Service.CreateSnapshot("p", "disk", "s1"));
        Assert.Equal(["disk"], Directory.GetFiles(h.PoolPath("p")).Select(Path.GetFileName));
    }

    [Fact]
    public void A_failed_revert_leaves_the_volume_exactly_as_it_was()
    {
        using var h = new ServiceHarness();
        h.Service.CreateVolume("p", new VolumeSpec("disk", "qcow2", MiB));
        h.Service.CreateSnapshot("p", "disk", "s1");
        Directory.CreateDirectory(h.StateFile + ".tmp");
        Expect.ErrorChangingNothing(h, StorageErrorKind.Io, () => h.Service.RevertToSnapshot("p", "disk", "s1"));
    }

    [Fact]
    public void Snapshot_and_revert_are_refused_while_the_volume_has_users()
    {
        using var h = new ServiceHarness();
        VolumeInfo disk = h.Service.CreateVolume("p", new VolumeSpec("disk", "qcow2", MiB));
        h.Service.CreateSnapshot("p", "disk", "s1");
        using (h.Users.Attach(disk.Key, new VolumeUser("export", "/run/lvstor/p/disk.sock")))
        {
            var ex = Expect.ErrorChangingNothing(h, StorageErrorKind.InUse, () => h.Service.RevertToSnapshot("p", "disk", "s1"));
            Assert.Contains("export /run/lvstor/p/disk.sock", ex.Message, StringComparison.Ordinal);
            Expect.ErrorChangingNothing(h, StorageErrorKind.InUse, () => h.Service.CreateSnapshot("p", "disk", "s2"));
        }

        h.Service.CreateVolume("p", new VolumeSpec("child", "qcow2", null, "disk"));
        var used = Expect.ErrorChangingNothing(h, StorageErrorKind.InUse, () => h.Service.CreateSnapshot("p", "disk", "s2"));
        Assert.Contains("volume 'child'", used.Message, StringComparison.Ordinal);
        Expect.ErrorChangingNothing(h, StorageErrorKind.InUse, () => h.Service.RevertToSnapshot("p", "disk", "s1"));
    }

    [Fact]
    public void Delete_removes_every_layer()
    {
        using var h = new ServiceHarness();
        h.Service.CreateVolume("p", new VolumeSpec("disk", "qcow2", MiB));
        h.Service.CreateSnapshot("p", "disk", "s1");
        h.Service.CreateSnapshot("p", "disk", "s2");
        Assert.Equal(3, Directory.GetFiles(h.PoolPath("p")).Length);
        h.Service.DeleteVolume("p", "disk");
        Assert.Empty(Directory.GetFiles(h.PoolPath("p")));
    }
}
