using LibvirtStorage.Images.Operations;
using LibvirtStorage.Images.Tests.Infrastructure;
using Xunit;

namespace LibvirtStorage.Images.Tests.Operations;

/// <summary>Rebase by the engine on one copy of a chain and by qemu-img on another; the results must match.</summary>
public sealed class ImageRebaseTests
{
    [Theory]
    [MemberData(nameof(QemuChains.All), MemberType = typeof(QemuChains))]
    public void Safe_rebase_of_top_onto_base_matches_qemu_img(QemuChains.Layout layout)
    {
        using var ours = new ScratchDir();
        QemuChains.Build(ours, layout);
        string baseName = QemuChains.BaseName(layout);
        using ScratchDir theirs = ours.CopyOf(QemuChains.Files(layout));
        using ScratchDir before = ours.CopyOf(QemuChains.Files(layout));

        ImageRebase.Run(ours["top.qcow2"], baseName, ImageFormatNames.Parse(layout.BaseFormat));
        ProcessRunner.QemuImg(theirs.Path, "rebase", "-b", baseName, "-F", layout.BaseFormat, "top.qcow2");

        Assert.True(QemuChains.SameContents(ours, "top.qcow2", before, "top.qcow2", sameSize: true));
        Assert.True(QemuChains.SameContents(ours, "top.qcow2", theirs, "top.qcow2", sameSize: true));
        QemuChains.AssertClean(ours, "top.qcow2");
        ImageInfo info = ImageInfo.Get(ours["top.qcow2"]);
        Assert.Equal(baseName, info.BackingFilename);
        Assert.Equal(layout.BaseFormat, info.BackingFilenameFormat);
    }

    [Theory]
    [MemberData(nameof(QemuChains.All), MemberType = typeof(QemuChains))]
    public void Rebase_onto_nothing_copies_all_backing_data_like_qemu_img(QemuChains.Layout layout)
    {
        using var ours = new ScratchDir();
        QemuChains.Build(ours, layout);
        using ScratchDir theirs = ours.CopyOf(QemuChains.Files(layout));

        ImageRebase.Run(ours["top.qcow2"], "");
        ProcessRunner.QemuImg(theirs.Path, "rebase", "-b", "", "top.qcow2");

        Assert.True(QemuChains.SameContents(ours, "top.qcow2", theirs, "top.qcow2", sameSize: true));
        QemuChains.AssertClean(ours, "top.qcow2");
        Assert.Null(ImageInfo.Get(ours["top.qcow2"]).BackingFilename);
        // Now standalone: every run is decided by the top itself.
        using IBlockImage top = ImageOpener.Open(ours["top.qcow2"], new ImageOpenOptions { ReadOnly = true });
        Assert.Null(top.Backing);
    }

    [Theory]
    [InlineData("6M")]
    [InlineData("12M")]
    public void Safe_rebase_onto_an_unrelated_image_of_another_size_matches_qemu_img(string otherSize)
    {
        using var ours = new ScratchDir();
        QemuChains.Build(ours, QemuChains.Qcow2Base);
        ProcessRunner.QemuImg(ours.Path, "create", "-q", "-f", "qcow2", "other.qcow2", otherSize);
        ProcessRunner.QemuIo(ours.Path, "other.qcow2", "qcow2", "write -P 11 0 2M", "write -P 12 5M 1M", "write -z 1M 64k");
        string[] files = [.. QemuChains.Files(QemuChains.Qcow2Base), "other.qcow2"];
        using ScratchDir theirs = ours.CopyOf(files);
        using ScratchDir before = ours.CopyOf(files);

        long copied = ImageRebase.Run(ours["top.qcow2"], "other.qcow2", ImageFormat.Qcow2);
        ProcessRunner.QemuImg(theirs.Path, "rebase", "-b", "other.qcow2", "-F", "qcow2", "top.qcow2");

        Assert.True(copied > 0);
        Assert.True(QemuChains.SameContents(ours, "top.qcow2", before, "top.qcow2", sameSize: true));
        Assert.True(QemuChains.SameContents(ours, "top.qcow2", theirs, "top.qcow2", sameSize: true));
        QemuChains.AssertClean(ours, "top.qcow2");
    }

    [Fact]
    public void Unsafe_rebase_only_rewrites_the_reference()
    {
        using var ours = new ScratchDir();
        QemuChains.Build(ours, QemuChains.RawBase);
        File.Move(ours["mid.qcow2"], ours["renamed.qcow2"]);

        long copied = ImageRebase.Run(ours["top.qcow2"], "renamed.qcow2", ImageFormat.Qcow2, new ImageRebaseOptions { Unsafe = true });

        Assert.Equal(0, copied);
        ImageInfo info = ImageInfo.Get(ours["top.qcow2"]);
        Assert.Equal("renamed.qcow2", info.BackingFilename);
        Assert.Equal("qcow2", info.BackingFilenameFormat);
        QemuChains.AssertClean(ours, "top.qcow2");
        // The chain opens again through the new name.
        ProcessRunner.QemuImg(ours.Path, "compare", "top.qcow2", "top.qcow2");
    }

    [Fact]
    public void Rebasing_onto_itself_or_a_raw_overlay_is_refused()
    {
        using var dir = new ScratchDir();
        ProcessRunner.QemuImg(dir.Path, "create", "-q", "-f", "raw", "disk.raw", "1M");
        Assert.Equal(ErrorKind.InvalidArgument,
            Assert.Throws<ImageException>(() => ImageRebase.Run(dir["disk.raw"], "disk.raw")).Kind);
        ProcessRunner.QemuImg(dir.Path, "create", "-q", "-f", "raw", "other.raw", "1M");
        Assert.Equal(ErrorKind.InvalidArgument,
            Assert.Throws<ImageException>(() => ImageRebase.Run(dir["disk.raw"], "other.raw")).Kind);
    }
}
