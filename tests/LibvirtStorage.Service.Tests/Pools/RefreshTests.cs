using LibvirtStorage.Images;
using LibvirtStorage.Service.Tests.Infrastructure;
using Xunit;

namespace LibvirtStorage.Service.Tests.Pools;

public sealed class RefreshTests
{
    [Fact]
    public void Adopts_a_qemu_img_chain_probing_formats_not_extensions()
    {
        using var h = new ServiceHarness();
        string dir = h.PoolPath("p");
        Tool.QemuImg(dir, "create", "-f", "raw", "base.qcow2", "1M"); // a raw file with a misleading name
        Tool.QemuImg(dir, "create", "-f", "qcow2", "-b", "base.qcow2", "-F", "raw", "mid.raw");
        Tool.QemuImg(dir, "create", "-f", "qcow2", "-b", "mid.raw", "-F", "qcow2", "top");

        RefreshReport report = h.Service.RefreshPool("p");
        Assert.Empty(report.Problems);
        Assert.Equal(["base.qcow2", "mid.raw", "top"], report.Adopted.Order(StringComparer.Ordinal));

        VolumeInfo top = h.Service.GetVolume("p", "top");
        Assert.Equal(ImageFormat.Qcow2, top.Format);
        Assert.Equal(
            [new ChainLayer("mid.raw", null, ImageFormat.Qcow2, h.File("mid.raw")), new ChainLayer("base.qcow2", null, ImageFormat.Raw, h.File("base.qcow2"))],
            top.Chain);
        Assert.True(h.Service.GetVolume("p", "mid.raw").ReadOnly);
        Assert.Equal(ImageFormat.Raw, h.Service.GetVolume("p", "base.qcow2").Format);

        Assert.Empty(h.Service.RefreshPool("p").Adopted); // nothing new the second time
        Assert.Empty(h.Reopen().LoadProblems);
    }

    [Fact]
    public void Reports_broken_chains_outside_backing_files_and_bad_names()
    {
        using var h = new ServiceHarness();
        string dir = h.PoolPath("p");
        Directory.CreateDirectory(Path.Combine(h.Root, "elsewhere"));
        Tool.QemuImg(Path.Combine(h.Root, "elsewhere"), "create", "-f", "raw", "outside", "1M");
        Tool.QemuImg(dir, "create", "-f", "qcow2", "-b", Path.Combine(h.Root, "elsewhere", "outside"), "-F", "raw", "escapes");
        Tool.QemuImg(dir, "create", "-f", "raw", "orphan-base", "1M");
        Tool.QemuImg(dir, "create", "-f", "qcow2", "-b", "orphan-base", "-F", "raw", "broken");
        System.IO.File.Delete(Path.Combine(dir, "orphan-base"));
        Tool.QemuImg(dir, "create", "-f", "raw", "bad name", "1M");
        Tool.QemuImg(dir, "create", "-f", "raw", "good", "1M");
        Tool.QemuImg(dir, "create", "-f", "qcow2", "-b", "escapes", "-F", "qcow2", "over-escapes");

        RefreshReport report = h.Service.RefreshPool("p");
        Assert.Equal(["good"], report.Adopted);
        Assert.Contains(report.Problems, p => p.File == "escapes" && p.Message.Contains("outside pool directory", StringComparison.Ordinal));
        Assert.Contains(report.Problems, p => p.File == "broken" && p.Message.Contains("backing file does not exist", StringComparison.Ordinal));
        Assert.Contains(report.Problems, p => p.File == "bad name" && p.Message.Contains("a space", StringComparison.Ordinal));
        Assert.Contains(report.Problems, p => p.File == "over-escapes");
        Assert.Equal(["good"], h.Service.ListVolumes("p").Select(v => v.Name));
    }

    [Fact]
    public void Reports_files_of_volumes_that_vanished()
    {
        using var h = new ServiceHarness();
        h.Service.CreateVolume("p", new VolumeSpec("disk", "raw", 1 << 20));
        System.IO.File.Delete(h.File("disk"));
        RefreshReport report = h.Service.RefreshPool("p");
        Assert.Contains(report.Problems, p => p.File == "disk" && p.Message.Contains("missing", StringComparison.Ordinal));

        // Listing still works and says what is wrong; info on the volume itself is an error.
        VolumeInfo listed = Assert.Single(h.Service.ListVolumes("p"));
        Assert.Contains("no such file", listed.Problem, StringComparison.Ordinal);
        Expect.Error(StorageErrorKind.Invalid, () => h.Service.GetVolume("p", "disk"));
        h.Service.DeleteVolume("p", "disk");
        Assert.Empty(h.Service.ListVolumes("p"));
    }

    [Fact]
    public void Refresh_of_a_stopped_pool_is_refused()
    {
        using var h = new ServiceHarness();
        h.Service.StopPool("p");
        Expect.ErrorChangingNothing(h, StorageErrorKind.Invalid, () => h.Service.RefreshPool("p"));
        Expect.ErrorChangingNothing(h, StorageErrorKind.NotFound, () => h.Service.RefreshPool("nope"));
    }
}
