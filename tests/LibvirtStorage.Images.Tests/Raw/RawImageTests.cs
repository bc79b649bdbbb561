using System.Globalization;
using System.Text.Json;
using LibvirtStorage.Images.Tests.Infrastructure;
using Xunit;

namespace LibvirtStorage.Images.Tests.Raw;

public sealed class RawImageTests : IDisposable
{
    private const long MiB = 1 << 20;
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [Theory]
    [InlineData(Preallocation.Off)]
    [InlineData(Preallocation.Falloc)]
    [InlineData(Preallocation.Full)]
    public void Create_QemuSeesTheSameSizeAndAllocation(Preallocation preallocation)
    {
        string ours = _dir.File("ours.raw");
        ImageOpener.Create(ours, new ImageCreateOptions { Format = ImageFormat.Raw, Size = 3 * MiB, Preallocation = preallocation });
        string theirs = _dir.File("theirs.raw");
        string mode = preallocation.ToString().ToLowerInvariant();
        QemuTools.RunChecked("qemu-img", "create", "-f", "raw", "-o", "preallocation=" + mode, theirs, "3M");

        Assert.Equal(ImageFormat.Raw, ImageOpener.Probe(ours));
        Assert.Equal(3 * MiB, VirtualSizeByQemu(ours));
        using IBlockImage image = ImageOpener.Open(ours, new ImageOpenOptions { ReadOnly = true });
        Assert.Equal(3 * MiB, image.VirtualSize);

        // QEMU allocates the first block of a new raw file itself (for alignment probing); compare the rest.
        Assert.Equal(MapByQemu(theirs).Where(r => r.Start >= 65536), MapByQemu(ours).Where(r => r.Start >= 65536));
    }

    [Fact]
    public void Writes_ReadBackThroughQemuIo_AndQemuWrites_ReadBackThroughUs()
    {
        string path = NewImage(4 * MiB);
        using (IBlockImage image = ImageOpener.Open(path))
        {
            image.Write(0, Filled(512, 0x11));
            image.Write(4096 + 100, Filled(1000, 0x22));
            image.Write((3 * MiB) + 7, Filled(70_000, 0x33));
            image.Flush();
        }

        QemuIoOk(path, "read -P 0x11 0 512", "read -P 0 512 3684", "read -P 0x22 4196 1000", "read -P 0x33 3145735 70000");

        QemuIoOk(path, "write -P 0x44 1M 64k", "write -P 0x55 2M 1000");
        using (IBlockImage image = ImageOpener.Open(path, new ImageOpenOptions { ReadOnly = true }))
        {
            byte[] buffer = new byte[65536];
            image.Read(MiB, buffer);
            Assert.All(buffer, b => Assert.Equal(0x44, b));
            image.Read(2 * MiB, buffer.AsSpan(0, 1001));
            Assert.All(buffer.AsSpan(0, 1000).ToArray(), b => Assert.Equal(0x55, b));
            Assert.Equal(0, buffer[1000]);
        }
    }

    [Fact]
    public void Discard_MakesHoles_ThatQemuMapsAsZero()
    {
        string path = NewImage(4 * MiB);
        QemuIoOk(path, "write -P 0x66 0 4M");
        using (IBlockImage image = ImageOpener.Open(path))
        {
            image.Discard(MiB, MiB);
            byte[] buffer = new byte[MiB];
            image.Read(MiB, buffer);
            Assert.All(buffer, b => Assert.Equal(0, b));
        }

        Assert.Equal(
            new[] { new Run(0, MiB, false, true), new Run(MiB, MiB, true, false), new Run(2 * MiB, 2 * MiB, false, true) },
            MapByQemu(path));
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void WriteZeroes_ReadsZeroes_InQemuToo(bool unmap)
    {
        string path = NewImage(2 * MiB);
        QemuIoOk(path, "write -P 0x77 0 2M");
        using (IBlockImage image = ImageOpener.Open(path))
        {
            image.WriteZeroes(1000, 100_000, unmap);
            image.WriteZeroes(MiB, MiB, unmap);
        }

        QemuIoOk(path, "read -P 0x77 0 1000", "read -P 0 1000 100000", "read -P 0x77 101000 947576", "read -P 0 1M 1M");
    }

    [Fact]
    public void Resize_GrowsAndShrinks_AsQemuSeesIt()
    {
        string path = NewImage(MiB);
        using (IBlockImage image = ImageOpener.Open(path))
        {
            image.Write(MiB - 512, Filled(512, 0x12));
            image.Resize(3 * MiB);
            Assert.Equal(3 * MiB, image.VirtualSize);
            byte[] tail = new byte[512];
            image.Read((3 * MiB) - 512, tail);
            Assert.All(tail, b => Assert.Equal(0, b));
        }

        Assert.Equal(3 * MiB, VirtualSizeByQemu(path));
        QemuIoOk(path, "read -P 0x12 1048064 512", "read -P 0 1M 2M");

        using (IBlockImage image = ImageOpener.Open(path))
        {
            image.Resize(MiB / 2);
            Assert.Throws<ImageException>(() => image.Read(MiB / 2, new byte[1]));
        }

        Assert.Equal(MiB / 2, VirtualSizeByQemu(path));
    }

    [Fact]
    public void BlockStatus_MatchesQemuImgMap()
    {
        string path = NewImage(8 * MiB);
        QemuIoOk(path, "write -P 1 64k 64k", "write -P 2 1M 4k", "write -P 3 3M 1M", "write -P 4 8188k 4k", "discard 3200k 64k");

        using IBlockImage image = ImageOpener.Open(path, new ImageOpenOptions { ReadOnly = true });
        Assert.Equal(MapByQemu(path), MapByUs(image));
    }

    [Fact]
    public void BlockStatus_IsCappedAtTheRequestedLength()
    {
        string path = NewImage(2 * MiB);
        QemuIoOk(path, "write -P 1 0 1M");
        using IBlockImage image = ImageOpener.Open(path, new ImageOpenOptions { ReadOnly = true });
        BlockStatus status = image.GetBlockStatus(4096, 8192);
        Assert.Equal(new BlockStatus(8192, true, false, true, 4096), status);
        Assert.Equal(0, image.GetBlockStatus(2 * MiB, 4096).Length);
    }

    [Fact]
    public void UnalignedFileSize_IsRoundedUpToSectors_LikeQemu()
    {
        string path = _dir.File("odd.raw");
        File.WriteAllBytes(path, Filled(3_000_000, 9));
        using IBlockImage image = ImageOpener.Open(path, new ImageOpenOptions { ReadOnly = true });
        Assert.Equal(VirtualSizeByQemu(path), image.VirtualSize);
        Assert.Equal(3_000_320, image.VirtualSize);
        byte[] tail = new byte[400];
        image.Read(3_000_320 - 400, tail);
        Assert.All(tail.AsSpan(0, 80).ToArray(), b => Assert.Equal(9, b));
        Assert.All(tail.AsSpan(80).ToArray(), b => Assert.Equal(0, b));
    }

    [Fact]
    public void Direct_UnalignedBuffersAndOffsets_RoundTripThroughQemu()
    {
        string path = NewImage(2 * MiB);
        byte[] data = Filled(10_001, 0);
        new Random(3).NextBytes(data);
        using (IBlockImage image = ImageOpener.Open(path, new ImageOpenOptions { Direct = true }))
        {
            image.Write(12_345, data.AsSpan(1));
            image.Write(MiB, data.AsSpan(1, 8192));
            byte[] back = new byte[10_003];
            image.Read(12_345, back.AsSpan(3, 10_000));
            Assert.Equal(data.AsSpan(1).ToArray(), back.AsSpan(3).ToArray());
            image.Flush();
        }

        string expected = _dir.File("expected.raw");
        byte[] disk = new byte[2 * MiB];
        data.AsSpan(1).CopyTo(disk.AsSpan(12_345));
        data.AsSpan(1, 8192).CopyTo(disk.AsSpan((int)MiB));
        File.WriteAllBytes(expected, disk);
        ToolResult compare = QemuTools.Run("qemu-img", ["compare", "-f", "raw", "-F", "raw", path, expected]);
        Assert.True(compare.ExitCode == 0, compare.AllOutput);
        Assert.Equal(2 * MiB, new FileInfo(path).Length);
    }

    [Fact]
    public void ReadOnlyAndOutOfBounds_AreRefused()
    {
        string path = NewImage(MiB);
        using IBlockImage image = ImageOpener.Open(path, new ImageOpenOptions { ReadOnly = true });
        Assert.True(image.IsReadOnly);
        Assert.Equal(ErrorKind.ReadOnly, Assert.Throws<ImageException>(() => image.Write(0, new byte[512])).Kind);
        Assert.Equal(ErrorKind.ReadOnly, Assert.Throws<ImageException>(() => image.Discard(0, 512)).Kind);
        Assert.Equal(ErrorKind.OutOfBounds, Assert.Throws<ImageException>(() => image.Read(MiB - 511, new byte[512])).Kind);
        Assert.Equal(ErrorKind.OutOfBounds, Assert.Throws<ImageException>(() => image.Read(-1, new byte[1])).Kind);
    }

    private string NewImage(long size)
    {
        string path = _dir.File($"img-{Guid.NewGuid():N}.raw");
        ImageOpener.Create(path, new ImageCreateOptions { Format = ImageFormat.Raw, Size = size });
        return path;
    }

    private static byte[] Filled(int length, byte value)
    {
        byte[] data = new byte[length];
        Array.Fill(data, value);
        return data;
    }

    private static void QemuIoOk(string path, params string[] commands)
    {
        var args = new List<string> { "-f", "raw" };
        foreach (string command in commands)
        {
            args.Add("-c");
            args.Add(command);
        }

        args.Add(path);
        ToolResult result = QemuTools.Run("qemu-io", args);
        Assert.True(result.ExitCode == 0, result.AllOutput);
        Assert.DoesNotContain("Pattern verification failed", result.AllOutput, StringComparison.Ordinal);
        Assert.DoesNotContain("failed", result.AllOutput, StringComparison.OrdinalIgnoreCase);
    }

    private static long VirtualSizeByQemu(string path)
    {
        using JsonDocument info = JsonDocument.Parse(QemuTools.RunChecked("qemu-img", "info", "-f", "raw", "--output=json", path));
        return info.RootElement.GetProperty("virtual-size").GetInt64();
    }

    private static List<Run> MapByQemu(string path)
    {
        using JsonDocument map = JsonDocument.Parse(QemuTools.RunChecked("qemu-img", "map", "-f", "raw", "--output=json", path));
        var runs = new List<Run>();
        foreach (JsonElement e in map.RootElement.EnumerateArray())
        {
            Add(runs, new Run(e.GetProperty("start").GetInt64(), e.GetProperty("length").GetInt64(), e.GetProperty("zero").GetBoolean(), e.GetProperty("data").GetBoolean()));
        }

        return runs;
    }

    private static List<Run> MapByUs(IBlockImage image)
    {
        var runs = new List<Run>();
        for (long offset = 0; offset < image.VirtualSize;)
        {
            BlockStatus status = image.GetBlockStatus(offset, image.VirtualSize - offset);
            Assert.True(status.Length > 0);
            Assert.True(status.Allocated);
            if (status.Data)
            {
                Assert.Equal(offset, status.HostOffset);
            }

            Add(runs, new Run(offset, status.Length, status.Zero, status.Data));
            offset += status.Length;
        }

        return runs;
    }

    private static void Add(List<Run> runs, Run run)
    {
        if (runs.Count > 0 && runs[^1] is var last && last.Zero == run.Zero && last.Data == run.Data && last.Start + last.Length == run.Start)
        {
            runs[^1] = last with { Length = last.Length + run.Length };
            return;
        }

        runs.Add(run);
    }

    private sealed record Run(long Start, long Length, bool Zero, bool Data)
    {
        public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"[{Start}+{Length} zero={Zero} data={Data}]");
    }
}
