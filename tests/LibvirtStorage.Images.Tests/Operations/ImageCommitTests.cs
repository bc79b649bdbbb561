using LibvirtStorage.Images.Operations;
using LibvirtStorage.Images.Tests.Infrastructure;
using Xunit;

namespace LibvirtStorage.Images.Tests.Operations;

/// <summary>Commit by the engine on one copy of a chain and by qemu-img on another; the results must match.</summary>
public sealed class ImageCommitTests
{
    [Theory]
    [MemberData(nameof(QemuChains.All), MemberType = typeof(QemuChains))]
    public void Commit_of_top_matches_qemu_img_commit(QemuChains.Layout layout)
    {
        using var ours = new ScratchDir();
        QemuChains.Build(ours, layout);
        using ScratchDir theirs = ours.CopyOf(QemuChains.Files(layout));
        using ScratchDir before = ours.CopyOf(QemuChains.Files(layout));

        ImageCommitResult result = ImageCommit.Run(ours["top.qcow2"]);
        ProcessRunner.QemuImg(theirs.Path, "commit", "-q", "top.qcow2");

        Assert.True(result.TopEmptied);
        Assert.Equal(ours["mid.qcow2"], result.BackingPath);
        // The guest sees the same disk through the top, and the middle now holds what the top held.
        Assert.True(QemuChains.SameContents(ours, "top.qcow2", before, "top.qcow2"));
        Assert.True(QemuChains.SameContents(ours, "mid.qcow2", theirs, "mid.qcow2", sameSize: true));
        Assert.True(QemuChains.SameContents(ours, "top.qcow2", theirs, "top.qcow2", sameSize: true));
        QemuChains.AssertClean(ours, "mid.qcow2");
        QemuChains.AssertClean(ours, "top.qcow2");
        // The emptied top allocates nothing, as after qemu-img commit. (The layers below may differ in
        // host offsets: each tool allocates the backing file's clusters in its own order.)
        Assert.Empty(TopLayerExtents(theirs, "top.qcow2"));
        Assert.Empty(TopLayerExtents(ours, "top.qcow2"));
        Assert.Equal(
            ProcessRunner.QemuImg(theirs.Path, "info", "--output=json", "top.qcow2").Contains("\"backing-filename\": \"mid.qcow2\"", StringComparison.Ordinal),
            ProcessRunner.QemuImg(ours.Path, "info", "--output=json", "top.qcow2").Contains("\"backing-filename\": \"mid.qcow2\"", StringComparison.Ordinal));
    }

    /// <summary>The lines of qemu-img's map that the top layer itself allocates.</summary>
    private static List<string> TopLayerExtents(ScratchDir dir, string name)
    {
        var lines = new List<string>();
        foreach (string line in ProcessRunner.QemuImg(dir.Path, "map", "--output=json", name).Split('\n'))
        {
            if (line.Contains("\"depth\": 0, \"present\": true", StringComparison.Ordinal))
            {
                lines.Add(line.TrimEnd(','));
            }
        }

        return lines;
    }

    [Theory]
    [InlineData("snapshot", "-c", "s1")]
    [InlineData("bitmap", "--add", "b0")]
    public void Commit_empties_a_top_with_snapshots_or_bitmaps_by_discarding_and_keeps_them(string tool, string verb, string name)
    {
        using var ours = new ScratchDir();
        QemuChains.Build(ours, QemuChains.RawBase);
        // qemu-img snapshot -c NAME FILE; qemu-img bitmap --add FILE NAME
        ProcessRunner.QemuImg(ours.Path, tool == "snapshot" ? [tool, verb, name, "top.qcow2"] : [tool, verb, "top.qcow2", name]);
        using ScratchDir theirs = ours.CopyOf(QemuChains.Files(QemuChains.RawBase));

        ImageCommitResult result = ImageCommit.Run(ours["top.qcow2"]);
        ProcessRunner.QemuImg(theirs.Path, "commit", "-q", "top.qcow2");

        Assert.True(result.TopEmptied);
        Assert.True(QemuChains.SameContents(ours, "top.qcow2", theirs, "top.qcow2", sameSize: true));
        Assert.True(QemuChains.SameContents(ours, "mid.qcow2", theirs, "mid.qcow2", sameSize: true));
        Assert.Empty(TopLayerExtents(ours, "top.qcow2"));
        QemuChains.AssertClean(ours, "top.qcow2");
        Assert.Contains(name, ProcessRunner.QemuImg(ours.Path, "info", "top.qcow2"), StringComparison.Ordinal);
    }

    [Fact]
    public void Commit_into_a_raw_base_grows_it_to_the_top_size()
    {
        using var ours = new ScratchDir();
        ProcessRunner.QemuImg(ours.Path, "create", "-q", "-f", "raw", "base.raw", "1M");
        ProcessRunner.QemuIo(ours.Path, "base.raw", "raw", "write -P 1 0 1M");
        ProcessRunner.QemuImg(ours.Path, "create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", "top.qcow2", "3M");
        ProcessRunner.QemuIo(ours.Path, "top.qcow2", "qcow2", "write -P 2 512k 1M", "write -P 3 2M 4k");
        using ScratchDir theirs = ours.CopyOf("base.raw", "top.qcow2");

        ImageCommit.Run(ours["top.qcow2"]);
        ProcessRunner.QemuImg(theirs.Path, "commit", "-q", "top.qcow2");

        Assert.Equal(3L << 20, new FileInfo(ours["base.raw"]).Length);
        Assert.True(QemuChains.SameContents(ours, "base.raw", theirs, "base.raw", sameSize: true));
    }

    [Fact]
    public void Commit_with_keep_leaves_the_top_unchanged()
    {
        using var ours = new ScratchDir();
        QemuChains.Build(ours, QemuChains.RawBase);
        using ScratchDir theirs = ours.CopyOf(QemuChains.Files(QemuChains.RawBase));
        List<string> before = TopLayerExtents(ours, "top.qcow2");

        ImageCommitResult result = ImageCommit.Run(ours["top.qcow2"], new ImageCommitOptions { KeepTop = true });
        ProcessRunner.QemuImg(theirs.Path, "commit", "-q", "-d", "top.qcow2");

        Assert.False(result.TopEmptied);
        Assert.True(QemuChains.SameContents(ours, "mid.qcow2", theirs, "mid.qcow2", sameSize: true));
        Assert.NotEmpty(before);
        Assert.Equal(before, TopLayerExtents(ours, "top.qcow2"));
    }

    [Fact]
    public void Commit_of_an_image_without_backing_file_is_refused()
    {
        using var dir = new ScratchDir();
        ProcessRunner.QemuImg(dir.Path, "create", "-q", "-f", "raw", "disk.raw", "1M");
        var e = Assert.Throws<ImageException>(() => ImageCommit.Run(dir["disk.raw"]));
        Assert.Equal(ErrorKind.InvalidArgument, e.Kind);
        Assert.Contains("backing file", e.Message, StringComparison.Ordinal);
    }
}
