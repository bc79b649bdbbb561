using LibvirtStorage.Images.Native;
using LibvirtStorage.Images.Operations;
using LibvirtStorage.Images.Tests.Infrastructure;
using Xunit;

namespace LibvirtStorage.Images.Tests.Operations;

public sealed class ImageConvertTests
{
    private static void Convert(ScratchDir dir, string source, string target, ImageCreateOptions options, ImageConvertOptions? convert = null,
        IProgress<double>? progress = null)
    {
        using IBlockImage input = ImageOpener.Open(dir[source], new ImageOpenOptions { ReadOnly = true });
        ImageConvert.Run(input, dir[target], options, convert, progress);
    }

    [Fact]
    public void Raw_to_raw_is_identical_and_stays_sparse()
    {
        using var dir = new ScratchDir();
        ProcessRunner.QemuImg(dir.Path, "create", "-q", "-f", "raw", "src.raw", "64M");
        ProcessRunner.QemuIo(dir.Path, "src.raw", "raw", "write -P 1 0 64k", "write -P 2 10M 1M", "write -z 20M 1M", "write -P 3 63M 4k");
        var progress = new RecordingProgress();
        Convert(dir, "src.raw", "dst.raw", new ImageCreateOptions { Format = ImageFormat.Raw }, progress: progress);
        Assert.True(QemuChains.SameContents(dir, "src.raw", dir, "dst.raw", sameSize: true));
        Assert.True(FileStat.AllocatedBytes(dir["dst.raw"]) <= 2 << 20, "zero runs were written");
        Assert.Equal(1.0, progress.Values[^1]);
        for (int i = 1; i < progress.Values.Count; i++)
        {
            Assert.True(progress.Values[i] >= progress.Values[i - 1]);
        }
    }

    [Fact]
    public void Zero_detection_skips_zero_bytes_inside_data()
    {
        using var dir = new ScratchDir();
        ProcessRunner.QemuImg(dir.Path, "create", "-q", "-f", "raw", "-o", "preallocation=full", "src.raw", "8M");
        ProcessRunner.QemuIo(dir.Path, "src.raw", "raw", "write -P 5 4M 8k");
        Convert(dir, "src.raw", "dst.raw", new ImageCreateOptions { Format = ImageFormat.Raw });
        Assert.True(QemuChains.SameContents(dir, "src.raw", dir, "dst.raw", sameSize: true));
        Assert.True(FileStat.AllocatedBytes(dir["dst.raw"]) <= 64 * 1024);

        Convert(dir, "src.raw", "full.raw", new ImageCreateOptions { Format = ImageFormat.Raw }, new ImageConvertOptions { SparseSize = 0 });
        Assert.True(FileStat.AllocatedBytes(dir["full.raw"]) >= 8 << 20);
    }

    [Fact]
    public void Refuses_compression_into_raw_and_converting_onto_itself()
    {
        using var dir = new ScratchDir();
        ProcessRunner.QemuImg(dir.Path, "create", "-q", "-f", "raw", "src.raw", "1M");
        var e = Assert.Throws<ImageException>(() =>
            Convert(dir, "src.raw", "dst.raw", new ImageCreateOptions { Format = ImageFormat.Raw }, new ImageConvertOptions { Compress = true }));
        Assert.Equal(ErrorKind.InvalidArgument, e.Kind);
        e = Assert.Throws<ImageException>(() => Convert(dir, "src.raw", "src.raw", new ImageCreateOptions { Format = ImageFormat.Raw }));
        Assert.Equal(ErrorKind.InvalidArgument, e.Kind);
    }

    [Theory]
    [MemberData(nameof(QemuChains.All), MemberType = typeof(QemuChains))]
    public void Chain_to_raw_equals_the_chain(QemuChains.Layout layout)
    {
        using var dir = new ScratchDir();
        QemuChains.Build(dir, layout);
        Convert(dir, "top.qcow2", "flat.raw", new ImageCreateOptions { Format = ImageFormat.Raw });
        Assert.True(QemuChains.SameContents(dir, "top.qcow2", dir, "flat.raw", sameSize: true));
    }

    [Theory]
    [InlineData("cluster_size=65536", false)]
    [InlineData("cluster_size=4096,compat=0.10", false)]
    [InlineData("extended_l2=on", false)]
    [InlineData("cluster_size=65536", true)]
    [InlineData("compression_type=zstd", true)]
    [InlineData("cluster_size=4096,refcount_bits=1", true)]
    public void Chain_to_qcow2_equals_the_chain_and_passes_check(string targetOptions, bool compress)
    {
        using var dir = new ScratchDir();
        QemuChains.Build(dir, QemuChains.RawBase);
        ImageCreateOptions target = Parse(targetOptions);
        Convert(dir, "top.qcow2", "flat.qcow2", target, new ImageConvertOptions { Compress = compress });
        Assert.True(QemuChains.SameContents(dir, "top.qcow2", dir, "flat.qcow2", sameSize: true));
        QemuChains.AssertClean(dir, "flat.qcow2");
        string info = ProcessRunner.QemuImg(dir.Path, "info", "--output=json", "flat.qcow2");
        Assert.DoesNotContain("backing-filename", info, StringComparison.Ordinal);
        if (compress)
        {
            string check = ProcessRunner.QemuImg(dir.Path, "check", "--output=json", "flat.qcow2");
            Assert.Contains("\"compressed-clusters\"", check, StringComparison.Ordinal);
        }
    }

    [Theory]
    [InlineData("zlib")]
    [InlineData("zstd")]
    public void Chain_over_a_compressed_base_converts_to_raw(string compression)
    {
        using var dir = new ScratchDir();
        ProcessRunner.QemuImg(dir.Path, "create", "-q", "-f", "raw", "src.raw", "4M");
        ProcessRunner.QemuIo(dir.Path, "src.raw", "raw", "write -P 1 0 1M", "write -P 2 3M 64k");
        ProcessRunner.QemuImg(dir.Path, "convert", "-c", "-O", "qcow2", "-o", $"compression_type={compression}", "src.raw", "comp.qcow2");
        ProcessRunner.QemuImg(dir.Path, "create", "-q", "-f", "qcow2", "-b", "comp.qcow2", "-F", "qcow2", "over.qcow2", "5M");
        ProcessRunner.QemuIo(dir.Path, "over.qcow2", "qcow2", "write -P 3 512k 100k", "write -P 4 4M 4k");
        Convert(dir, "over.qcow2", "flat.raw", new ImageCreateOptions { Format = ImageFormat.Raw });
        Assert.True(QemuChains.SameContents(dir, "over.qcow2", dir, "flat.raw", sameSize: true));
    }

    private static ImageCreateOptions Parse(string options)
    {
        var o = new ImageCreateOptions { Format = ImageFormat.Qcow2 };
        foreach (string item in options.Split(','))
        {
            string[] kv = item.Split('=');
            o = kv[0] switch
            {
                "cluster_size" => o with { ClusterSize = int.Parse(kv[1], System.Globalization.CultureInfo.InvariantCulture) },
                "compat" => o with { Version = kv[1] == "0.10" ? 2 : 3 },
                "extended_l2" => o with { ExtendedL2 = kv[1] == "on" },
                "compression_type" => o with { CompressionType = kv[1] == "zstd" ? CompressionType.Zstd : CompressionType.Zlib },
                "refcount_bits" => o with { RefcountBits = int.Parse(kv[1], System.Globalization.CultureInfo.InvariantCulture) },
                _ => throw new ArgumentException(item),
            };
        }

        return o;
    }

    private sealed class RecordingProgress : IProgress<double>
    {
        public List<double> Values { get; } = [];

        public void Report(double value) => Values.Add(value);
    }
}
