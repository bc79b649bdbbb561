using LibvirtStorage.Images.Operations;
using LibvirtStorage.Images.Tests.Infrastructure;
using Xunit;

namespace LibvirtStorage.Images.Tests.Operations;

public sealed class ImageMapTests
{
    private static string OurMap(ScratchDir dir, string name)
    {
        using IBlockImage image = ImageOpener.Open(dir[name], new ImageOpenOptions { ReadOnly = true });
        return ImageMap.ToJson(ImageMap.Get(image));
    }

    private static string QemuMap(ScratchDir dir, string name) =>
        ProcessRunner.QemuImg(dir.Path, "map", "--output=json", name);

    [Fact]
    public void Raw_image_with_holes_maps_like_qemu_img()
    {
        using var dir = new ScratchDir();
        ProcessRunner.QemuImg(dir.Path, "create", "-q", "-f", "raw", "disk.raw", "5M");
        ProcessRunner.QemuIo(dir.Path, "disk.raw", "raw", "write -P 1 0 64k", "write -P 2 1M 128k", "write -P 3 4M 4k");
        Assert.Equal(QemuMap(dir, "disk.raw"), OurMap(dir, "disk.raw"));
    }

    [Fact]
    public void Empty_and_full_raw_images_map_like_qemu_img()
    {
        using var dir = new ScratchDir();
        ProcessRunner.QemuImg(dir.Path, "create", "-q", "-f", "raw", "empty.raw", "3M");
        ProcessRunner.QemuImg(dir.Path, "create", "-q", "-f", "raw", "-o", "preallocation=full", "full.raw", "3M");
        ProcessRunner.QemuIo(dir.Path, "full.raw", "raw", "write -P 9 0 3M");
        Assert.Equal(QemuMap(dir, "empty.raw"), OurMap(dir, "empty.raw"));
        Assert.Equal(QemuMap(dir, "full.raw"), OurMap(dir, "full.raw"));
    }

    [Fact]
    public void Json_rendering_has_qemu_img_layout()
    {
        MapExtent[] extents =
        [
            new(0, 65536, 0, true, false, true, 327680, "/x/top.qcow2"),
            new(65536, 1024, 1, false, true, false, null, null),
        ];
        Assert.Equal(
            "[{ \"start\": 0, \"length\": 65536, \"depth\": 0, \"present\": true, \"zero\": false, \"data\": true, \"offset\": 327680},\n" +
            "{ \"start\": 65536, \"length\": 1024, \"depth\": 1, \"present\": false, \"zero\": true, \"data\": false}]\n",
            ImageMap.ToJson(extents));
    }

    [Fact]
    public void Human_rendering_lists_data_runs_like_qemu_img()
    {
        using var dir = new ScratchDir();
        ProcessRunner.QemuImg(dir.Path, "create", "-q", "-f", "raw", "disk.raw", "2M");
        ProcessRunner.QemuIo(dir.Path, "disk.raw", "raw", "write -P 1 0 64k", "write -P 2 1M 128k");
        using IBlockImage image = ImageOpener.Open(dir["disk.raw"], new ImageOpenOptions { ReadOnly = true });
        string ours = ImageMap.ToHuman(ImageMap.Get(image)).Replace(dir["disk.raw"], "disk.raw", StringComparison.Ordinal);
        Assert.Equal(ProcessRunner.QemuImg(dir.Path, "map", "disk.raw"), ours);
    }

    [Fact]
    public void Start_offset_and_max_length_limit_the_map()
    {
        using var dir = new ScratchDir();
        ProcessRunner.QemuImg(dir.Path, "create", "-q", "-f", "raw", "disk.raw", "4M");
        ProcessRunner.QemuIo(dir.Path, "disk.raw", "raw", "write -P 1 1M 64k");
        using IBlockImage image = ImageOpener.Open(dir["disk.raw"], new ImageOpenOptions { ReadOnly = true });
        IReadOnlyList<MapExtent> map = ImageMap.Get(image, 512 * 1024, 1024 * 1024);
        Assert.Equal(512 * 1024, map[0].Start);
        long total = 0;
        foreach (MapExtent e in map)
        {
            total += e.Length;
        }

        Assert.Equal(1024 * 1024, total);
        string qemu = ProcessRunner.QemuImg(dir.Path, "map", "--output=json", "--start-offset=512K", "--max-length=1M", "disk.raw");
        Assert.Equal(qemu, ImageMap.ToJson(map));
    }

    [Theory]
    [MemberData(nameof(QemuChains.All), MemberType = typeof(QemuChains))]
    public void Chain_made_by_qemu_maps_like_qemu_img_at_every_level(QemuChains.Layout layout)
    {
        using var dir = new ScratchDir();
        QemuChains.Build(dir, layout);
        foreach (string name in QemuChains.Files(layout))
        {
            Assert.Equal(QemuMap(dir, name), OurMap(dir, name));
        }
    }

    [Fact]
    public void Compressed_base_under_an_overlay_maps_like_qemu_img()
    {
        using var dir = new ScratchDir();
        ProcessRunner.QemuImg(dir.Path, "create", "-q", "-f", "raw", "src.raw", "4M");
        ProcessRunner.QemuIo(dir.Path, "src.raw", "raw", "write -P 1 0 1M", "write -P 2 3M 64k");
        ProcessRunner.QemuImg(dir.Path, "convert", "-c", "-O", "qcow2", "src.raw", "comp.qcow2");
        ProcessRunner.QemuImg(dir.Path, "create", "-q", "-f", "qcow2", "-b", "comp.qcow2", "-F", "qcow2", "over.qcow2");
        ProcessRunner.QemuIo(dir.Path, "over.qcow2", "qcow2", "write -P 3 512k 64k");
        Assert.Equal(QemuMap(dir, "comp.qcow2"), OurMap(dir, "comp.qcow2"));
        Assert.Equal(QemuMap(dir, "over.qcow2"), OurMap(dir, "over.qcow2"));
    }

    [Theory]
    [InlineData("preallocation=metadata")]
    [InlineData("preallocation=falloc")]
    [InlineData("cluster_size=512")]
    [InlineData("cluster_size=2M")]
    public void Qcow2_made_by_qemu_with_options_maps_like_qemu_img(string options)
    {
        using var dir = new ScratchDir();
        ProcessRunner.QemuImg(dir.Path, "create", "-q", "-f", "qcow2", "-o", options, "disk.qcow2", "6M");
        ProcessRunner.QemuIo(dir.Path, "disk.qcow2", "qcow2", "write -P 1 0 64k", "write -z 1M 1M", "write -P 2 5M 4k");
        Assert.Equal(QemuMap(dir, "disk.qcow2"), OurMap(dir, "disk.qcow2"));
    }
}
