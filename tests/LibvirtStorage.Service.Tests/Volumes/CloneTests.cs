using LibvirtStorage.Images;
using LibvirtStorage.Service.Tests.Infrastructure;
using LibvirtStorage.Service.Tests.Transfers;
using Microsoft.Win32.SafeHandles;
using Xunit;

namespace LibvirtStorage.Service.Tests.Volumes;

public sealed class CloneTests
{
    private const long MiB = 1 << 20;

    private static void MakeChain(ServiceHarness h)
    {
        h.Service.CreateVolume("p", new VolumeSpec("base", "raw", 2 * MiB));
        Tool.QemuIo(h.File("base"), "raw", "write -P 0x11 0 1M");
        h.Service.CreateVolume("p", new VolumeSpec("vm1", "qcow2", null, "base"));
        Tool.QemuIo(h.File("vm1"), "qcow2", "write -P 0x22 512k 64k");
    }

    [Theory]
    [InlineData(null, ImageFormat.Qcow2)]
    [InlineData("raw", ImageFormat.Raw)]
    public async Task Full_clone_copies_the_whole_chain_into_an_independent_volume(string? format, ImageFormat expected)
    {
        using var h = new ServiceHarness();
        MakeChain(h);
        var reports = new List<OperationProgress>();
        VolumeInfo clone = await h.Service.CloneVolumeAsync("p", "vm1", "copy", format, progress: new TransferTests.SynchronousProgress(reports.Add));
        Assert.Equal(expected, clone.Format);
        Assert.Empty(clone.Chain);
        Assert.Equal(2 * MiB, clone.Capacity);
        Assert.Equal(1.0, reports[^1].Fraction);
        Assert.Contains("Images are identical", Tool.QemuImg(h.PoolPath("p"), "compare", "vm1", "copy"), StringComparison.Ordinal);
        Assert.False(h.Service.GetVolume("p", "vm1").ReadOnly, "a full clone does not pin its source");

        // Independent: the source can go away.
        h.Service.DeleteVolume("p", "vm1");
        h.Service.DeleteVolume("p", "base");
        Tool.QemuIo(h.File("copy"), expected.ToName(), "read -P 0x11 0 512k", "read -P 0x22 512k 64k", "read -P 0 1M 1M");
    }

    [Fact]
    public async Task Linked_clone_is_an_overlay_and_pins_its_source_read_only()
    {
        using var h = new ServiceHarness();
        MakeChain(h);
        VolumeInfo clone = await h.Service.CloneVolumeAsync("p", "vm1", "vm2", linked: true);
        Assert.Equal(ImageFormat.Qcow2, clone.Format);
        Assert.Equal(["vm1", "base"], clone.Chain.Select(l => l.Volume));
        Assert.True(h.Service.GetVolume("p", "vm1").ReadOnly);
        Assert.Contains("Images are identical", Tool.QemuImg(h.PoolPath("p"), "compare", "vm1", "vm2"), StringComparison.Ordinal);

        var ex = Expect.ErrorChangingNothing(h, StorageErrorKind.InUse, () => h.Service.DeleteVolume("p", "vm1"));
        Assert.Contains("volume 'vm2'", ex.Message, StringComparison.Ordinal);
        using SafeFileHandle input = System.IO.File.OpenHandle(h.File("base"));
        await Expect.ErrorAsync(StorageErrorKind.InUse, () => h.Service.UploadAsync("p", "vm1", input));
    }

    [Fact]
    public async Task Bad_clones_are_typed_and_change_nothing()
    {
        using var h = new ServiceHarness();
        MakeChain(h);
        string before = h.Fingerprint();
        await Expect.ErrorAsync(StorageErrorKind.Exists, () => h.Service.CloneVolumeAsync("p", "vm1", "base"));
        await Expect.ErrorAsync(StorageErrorKind.NotFound, () => h.Service.CloneVolumeAsync("p", "nope", "x"));
        await Expect.ErrorAsync(StorageErrorKind.Invalid, () => h.Service.CloneVolumeAsync("p", "vm1", "x", "raw", linked: true));
        await Expect.ErrorAsync(StorageErrorKind.Invalid, () => h.Service.CloneVolumeAsync("p", "vm1", "x", "vdi"));
        await Expect.ErrorAsync(StorageErrorKind.Invalid, () => h.Service.CloneVolumeAsync("p", "vm1", "x y"));
        await Expect.ErrorAsync(StorageErrorKind.Cancelled, () => h.Service.CloneVolumeAsync("p", "vm1", "x", cancellationToken: new CancellationToken(true)));
        Assert.Equal(before, h.Fingerprint());
    }

    [Fact]
    public async Task Linked_clone_of_a_volume_in_use_is_refused()
    {
        using var h = new ServiceHarness();
        MakeChain(h);
        using (h.Users.Attach(h.Service.GetVolume("p", "vm1").Key, new VolumeUser("export", "/run/lvstor/p/vm1.sock")))
        {
            string before = h.Fingerprint();
            var ex = await Expect.ErrorAsync(StorageErrorKind.InUse, () => h.Service.CloneVolumeAsync("p", "vm1", "vm2", linked: true));
            Assert.Contains("/run/lvstor/p/vm1.sock", ex.Message, StringComparison.Ordinal);
            Assert.Equal(before, h.Fingerprint());
        }
    }
}
