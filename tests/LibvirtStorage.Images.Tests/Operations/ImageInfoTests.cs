using LibvirtStorage.Images.Operations;
using LibvirtStorage.Images.Tests.Infrastructure;
using Xunit;

namespace LibvirtStorage.Images.Tests.Operations;

public sealed class ImageInfoTests
{
    /// <summary>Both tools are given the absolute path, so they report the same names.</summary>
    private static ImageInfo Ours(ScratchDir dir, string name) => ImageInfo.Get(dir[name]);

    /// <summary>Our info of <paramref name="name"/> renders exactly as qemu-img's, in JSON and in text.</summary>
    private static ImageInfo AssertSameAsQemu(ScratchDir dir, string name)
    {
        ImageInfo info = Ours(dir, name);
        Assert.Equal(Qemu(dir, "info", "--output=json", name), info.ToJson());
        Assert.Equal(Qemu(dir, "info", name), info.ToHuman());
        return info;
    }

    private static string Qemu(ScratchDir dir, params string[] args)
    {
        args[^1] = dir[args[^1]];
        return ProcessRunner.QemuImg(dir.Path, args);
    }

    [Fact]
    public void Raw_json_and_text_equal_qemu_img()
    {
        using var dir = new ScratchDir();
        ProcessRunner.QemuImg(dir.Path, "create", "-q", "-f", "raw", "disk.raw", "5M");
        ProcessRunner.QemuIo(dir.Path, "disk.raw", "raw", "write -P 1 1M 192k");
        AssertSameAsQemu(dir, "disk.raw");
    }

    [Theory]
    [InlineData("compat=1.1")]
    [InlineData("compat=0.10,cluster_size=4096")]
    [InlineData("compression_type=zstd,extended_l2=on,lazy_refcounts=on,refcount_bits=64")]
    [InlineData("cluster_size=2M,refcount_bits=1")]
    public void Qcow2_json_and_text_equal_qemu_img(string options)
    {
        using var dir = new ScratchDir();
        ProcessRunner.QemuImg(dir.Path, "create", "-q", "-f", "qcow2", "-o", options, "disk.qcow2", "1G");
        ProcessRunner.QemuIo(dir.Path, "disk.qcow2", "qcow2", "write -P 1 1M 192k");
        AssertSameAsQemu(dir, "disk.qcow2");
    }

    [Fact]
    public void Snapshot_list_in_json_and_text_equals_qemu_img()
    {
        using var dir = new ScratchDir();
        ProcessRunner.QemuImg(dir.Path, "create", "-q", "-f", "qcow2", "disk.qcow2", "64M");
        ProcessRunner.QemuImg(dir.Path, "snapshot", "-c", "first", "disk.qcow2");
        ProcessRunner.QemuIo(dir.Path, "disk.qcow2", "qcow2", "write -P 1 0 1M");
        ProcessRunner.QemuImg(dir.Path, "snapshot", "-c", "second one", "disk.qcow2");
        ProcessRunner.QemuImg(dir.Path, "snapshot", "-c", "third", "disk.qcow2");
        ProcessRunner.QemuImg(dir.Path, "snapshot", "-d", "second one", "disk.qcow2");
        ImageInfo info = AssertSameAsQemu(dir, "disk.qcow2");
        Assert.Equal(["first", "third"], info.Snapshots.Select(s => s.Name));
    }

    [Fact]
    public void Bitmap_list_in_json_and_text_equals_qemu_img_before_and_after_a_read_write_open()
    {
        using var dir = new ScratchDir();
        ProcessRunner.QemuImg(dir.Path, "create", "-q", "-f", "qcow2", "disk.qcow2", "64M");
        ProcessRunner.QemuImg(dir.Path, "bitmap", "--add", "disk.qcow2", "b0");
        ProcessRunner.QemuImg(dir.Path, "bitmap", "--add", "-g", "128k", "--disable", "disk.qcow2", "second");
        ImageInfo info = AssertSameAsQemu(dir, "disk.qcow2");
        Assert.Equal(2, info.Qcow2!.Bitmaps!.Count);

        // The engine flags bitmaps in use while it holds the image writable (it does not maintain them).
        using (IBlockImage image = ImageOpener.Open(dir["disk.qcow2"]))
        {
            image.Write(0, new byte[4096]);
            image.Flush();
        }

        AssertSameAsQemu(dir, "disk.qcow2");
    }

    [Fact]
    public void Backing_chain_json_equals_qemu_img()
    {
        using var dir = new ScratchDir();
        QemuChains.Build(dir, QemuChains.RawBase);
        string expected = Qemu(dir, "info", "--backing-chain", "--output=json", "top.qcow2");
        IReadOnlyList<ImageInfo> chain = ImageInfo.GetChain(dir["top.qcow2"]);
        Assert.Equal(3, chain.Count);
        Assert.Equal(expected, ImageInfo.ToJson(chain));
    }

    [Fact]
    public void Full_backing_name_is_relative_to_the_overlay_name_as_given()
    {
        Assert.Equal("base.raw", ImageInfo.FullBackingName("top.qcow2", "base.raw"));
        Assert.Equal("/a/b/base.raw", ImageInfo.FullBackingName("/a/b/top.qcow2", "base.raw"));
        Assert.Equal("./sub/base.raw", ImageInfo.FullBackingName("./top.qcow2", "sub/base.raw"));
        Assert.Equal("/abs/base.raw", ImageInfo.FullBackingName("/a/top.qcow2", "/abs/base.raw"));
    }

    [Theory]
    [InlineData(0, "0 B")]
    [InlineData(512, "512 B")]
    [InlineData(999, "999 B")]
    [InlineData(1000, "0.977 KiB")]
    [InlineData(331776, "324 KiB")]
    [InlineData(1536, "1.5 KiB")]
    [InlineData(1073741824, "1 GiB")]
    [InlineData(10737418240, "10 GiB")]
    public void Sizes_print_like_qemu(long value, string expected) =>
        Assert.Equal(expected, ImageInfoText.SizeToString(value));
}
