using System.Buffers.Binary;
using System.Text.Json;
using LibvirtStorage.Images.Native;
using LibvirtStorage.Images.Qcow2;
using LibvirtStorage.Images.Tests.Infrastructure;
using Xunit;

namespace LibvirtStorage.Images.Tests.Qcow2;

public sealed class Qcow2CompressionTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    public static TheoryData<CompressionType> Types => new(CompressionType.Zlib, CompressionType.Zstd);

    public static TheoryData<CompressionType, int> TypesAndClusterSizes()
    {
        var data = new TheoryData<CompressionType, int>();
        foreach (CompressionType type in new[] { CompressionType.Zlib, CompressionType.Zstd })
        {
            foreach (int size in new[] { 512, 4096, 65536, 2 << 20 })
            {
                data.Add(type, size);
            }
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(TypesAndClusterSizes))]
    public void RoundTrip_CompressibleCluster(CompressionType type, int clusterSize)
    {
        byte[] cluster = Compressible(clusterSize, seed: clusterSize);
        byte[] compressed = new byte[clusterSize - 1];
        int length = Qcow2Compression.Compress(type, cluster, compressed);
        Assert.InRange(length, 1, clusterSize / 2);

        byte[] back = new byte[clusterSize];
        Assert.Equal(clusterSize, Qcow2Compression.Decompress(type, compressed, back));
        Assert.Equal(cluster, back);
    }

    [Theory]
    [MemberData(nameof(Types))]
    public void Compress_RandomData_DoesNotFit_ReturnsMinusOne(CompressionType type)
    {
        byte[] cluster = new byte[65536];
        new Random(1).NextBytes(cluster);
        Assert.Equal(-1, Qcow2Compression.Compress(type, cluster, new byte[65535]));
        Assert.Equal(-1, Qcow2Compression.Compress(type, new byte[4096], Span<byte>.Empty));
    }

    [Theory]
    [MemberData(nameof(Types))]
    public void Decompress_IgnoresBytesAfterTheStream(CompressionType type)
    {
        // qcow2 stores compressed lengths in whole sectors, so the input runs on into the next cluster.
        byte[] cluster = Compressible(65536, seed: 3);
        byte[] compressed = CompressCluster(type, cluster);
        byte[] noise = new byte[1000];
        new Random(4).NextBytes(noise);

        byte[] back = new byte[65536];
        Qcow2Compression.Decompress(type, [.. compressed, .. noise], back);
        Assert.Equal(cluster, back);
    }

    [Fact]
    public void Zlib_OurOutput_InflatesWithWindowBitsMinus12()
    {
        byte[] cluster = Compressible(65536, seed: 5);
        byte[] compressed = CompressCluster(CompressionType.Zlib, cluster);
        Assert.Equal(cluster, InflateMinus12(compressed, cluster.Length));
    }

    [Fact]
    public void Zlib_DecompressesWhatPythonZlibProducesWithWindowBitsMinus12()
    {
        byte[] cluster = Compressible(65536, seed: 6);
        byte[] compressed = PythonDeflate(cluster, windowBits: -12);
        byte[] back = new byte[cluster.Length];
        Qcow2Compression.Decompress(CompressionType.Zlib, compressed, back);
        Assert.Equal(cluster, back);
    }

    [Fact]
    public void Zlib_FarDistancesWithinOneCluster_AreAccepted_LikeQemu()
    {
        // 8 KiB of noise repeated: a 32 KiB-window encoder copies from 8 KiB back. QEMU inflates a
        // cluster in one call, where zlib resolves distances from the output buffer rather than its
        // 4 KiB window, so QEMU reads such a cluster and so must we.
        byte[] half = new byte[8192];
        new Random(7).NextBytes(half);
        byte[] cluster = [.. half, .. half];
        byte[] compressed = PythonDeflate(cluster, windowBits: -15);
        Assert.True(compressed.Length < cluster.Length - 4096, "the encoder should have used the far match");

        byte[] back = new byte[cluster.Length];
        Qcow2Compression.Decompress(CompressionType.Zlib, compressed, back);
        Assert.Equal(cluster, back);
    }

    [Theory]
    [MemberData(nameof(Types))]
    public void Decompress_Truncated_IsCorrupt(CompressionType type)
    {
        byte[] cluster = Compressible(65536, seed: 8);
        byte[] compressed = CompressCluster(type, cluster);
        int length = compressed.Length;

        // (zlib may fill the cluster without the stream's last byte, which QEMU accepts too.)
        int[] cuts = type == CompressionType.Zstd ? [0, 1, length / 2, length - 1] : [0, 1, length / 2];
        foreach (int cut in cuts)
        {
            var e = Assert.Throws<ImageException>(() => Qcow2Compression.Decompress(type, compressed.AsSpan(0, cut), new byte[65536]));
            Assert.Equal(ErrorKind.Corrupt, e.Kind);
        }
    }

    [Theory]
    [MemberData(nameof(Types))]
    public void Decompress_Garbage_IsCorrupt(CompressionType type)
    {
        var random = new Random(9);
        for (int i = 0; i < 200; i++)
        {
            byte[] garbage = new byte[random.Next(1, 4096)];
            random.NextBytes(garbage);
            var e = Assert.Throws<ImageException>(() => Qcow2Compression.Decompress(type, garbage, new byte[65536]));
            Assert.Equal(ErrorKind.Corrupt, e.Kind);
        }
    }

    [Theory]
    [MemberData(nameof(Types))]
    public void Decompress_MutatedStreams_EitherSucceedOrAreCorrupt(CompressionType type)
    {
        byte[] cluster = Compressible(65536, seed: 20);
        byte[] compressed = CompressCluster(type, cluster);
        int length = compressed.Length;
        var random = new Random(21);
        int corrupt = 0;
        for (int i = 0; i < 500; i++)
        {
            byte[] mutated = compressed.ToArray();
            for (int flips = random.Next(1, 8); flips > 0; flips--)
            {
                mutated[random.Next(mutated.Length)] ^= (byte)(1 << random.Next(8));
            }

            try
            {
                Qcow2Compression.Decompress(type, mutated, new byte[65536]);
            }
            catch (ImageException e) when (e.Kind == ErrorKind.Corrupt)
            {
                corrupt++;
            }
        }

        Assert.True(corrupt > 0);
    }

    [Fact]
    public void Zstd_AcceptsConcatenatedFrames_LikeQemu()
    {
        byte[] cluster = Compressible(65536, seed: 10);
        byte[] both = [
            .. CompressCluster(CompressionType.Zstd, cluster.AsSpan(0, 20000)),
            .. CompressCluster(CompressionType.Zstd, cluster.AsSpan(20000)),
        ];

        byte[] back = new byte[65536];
        Qcow2Compression.Decompress(CompressionType.Zstd, both, back);
        Assert.Equal(cluster, back);
    }

    [Fact]
    public void Zstd_FrameLongerThanTheCluster_IsCorrupt()
    {
        byte[] data = Compressible(65536, seed: 11);
        byte[] compressed = CompressCluster(CompressionType.Zstd, data);
        var e = Assert.Throws<ImageException>(() => Qcow2Compression.Decompress(CompressionType.Zstd, compressed, new byte[4096]));
        Assert.Equal(ErrorKind.Corrupt, e.Kind);
    }

    [Fact]
    public void Zlib_StreamLongerThanTheCluster_IsAccepted_LikeQemu()
    {
        // QEMU accepts Z_BUF_ERROR with a full output: only dst.Length bytes are needed.
        byte[] data = Compressible(65536, seed: 12);
        byte[] compressed = CompressCluster(CompressionType.Zlib, data);
        byte[] back = new byte[4096];
        Qcow2Compression.Decompress(CompressionType.Zlib, compressed, back);
        Assert.Equal(data.AsSpan(0, 4096).ToArray(), back);
    }

    [Fact]
    public void Zstd_FrameAskingForAHugeWindow_IsRefusedWithoutAllocatingIt()
    {
        // Frame header: magic, descriptor 0x00 (no single segment, no checksum, no content size),
        // window descriptor 0xF8 (exponent 31: a 2 GiB window), then an empty raw last block.
        byte[] frame = [0x28, 0xB5, 0x2F, 0xFD, 0x00, 0xF8, 0x01, 0x00, 0x00];
        var e = Assert.Throws<ImageException>(() => Qcow2Compression.Decompress(CompressionType.Zstd, frame, new byte[65536]));
        Assert.Equal(ErrorKind.Corrupt, e.Kind);
    }

    [Fact]
    public void ConcurrentUse_FromManyThreads_RoundTrips()
    {
        Parallel.For(0, 64, i =>
        {
            CompressionType type = i % 2 == 0 ? CompressionType.Zlib : CompressionType.Zstd;
            byte[] cluster = Compressible(65536, seed: 100 + i);
            byte[] compressed = CompressCluster(type, cluster);
            byte[] back = new byte[65536];
            Qcow2Compression.Decompress(type, compressed, back);
            Assert.Equal(cluster, back);
        });
    }

    [Theory]
    [InlineData("zlib", CompressionType.Zlib)]
    [InlineData("zstd", CompressionType.Zstd)]
    public void QemuCompressedClusters_DecompressWithOurs(string qemuType, CompressionType type)
    {
        byte[] disk = Compressible(4 * 65536, seed: 13);
        string image = QemuCompressedImage(disk, qemuType);
        using var qcow2 = new CompressedClusterFile(image);
        for (int i = 0; i < 4; i++)
        {
            byte[] back = new byte[65536];
            Qcow2Compression.Decompress(type, qcow2.ReadCompressed(i), back);
            Assert.Equal(disk.AsSpan(i * 65536, 65536).ToArray(), back);
        }
    }

    [Fact]
    public void Zlib_OurBytes_AreQemusBytes()
    {
        byte[] disk = Compressible(4 * 65536, seed: 14);
        string image = QemuCompressedImage(disk, "zlib");
        using var qcow2 = new CompressedClusterFile(image);
        for (int i = 0; i < 4; i++)
        {
            byte[] ours = CompressCluster(CompressionType.Zlib, disk.AsSpan(i * 65536, 65536));
            Assert.Equal(ours, qcow2.ReadCompressed(i)[..ours.Length]);
        }
    }

    [Theory]
    [InlineData("zlib", CompressionType.Zlib)]
    [InlineData("zstd", CompressionType.Zstd)]
    public void OurCompressedClusters_ReadBackThroughQemu(string qemuType, CompressionType type)
    {
        // Start from a QEMU image with compressed clusters, then point each L2 entry at our own
        // compression of different data, appended to the file. qemu-io must read our data back.
        byte[] disk = Compressible(4 * 65536, seed: 15);
        string image = QemuCompressedImage(disk, qemuType);
        byte[] replacement = Compressible(4 * 65536, seed: 16);
        using (var qcow2 = new CompressedClusterFile(image, writable: true))
        {
            for (int i = 0; i < 4; i++)
            {
                qcow2.ReplaceCompressed(i, CompressCluster(type, replacement.AsSpan(i * 65536, 65536)));
            }
        }

        string expected = _dir.File("expected.raw");
        File.WriteAllBytes(expected, replacement);
        ToolResult compare = QemuTools.Run("qemu-img", ["compare", "-f", "qcow2", "-F", "raw", image, expected]);
        Assert.True(compare.ExitCode == 0, compare.AllOutput);
    }

    [Theory]
    [InlineData("zlib", 65536)]
    [InlineData("zstd", 65536)]
    [InlineData("zlib", 2 << 20)]
    [InlineData("zstd", 2 << 20)]
    [InlineData("zlib", 512)]
    [InlineData("zstd", 512)]
    public void Engine_ReadsQemuCompressedImages(string qemuType, int clusterSize)
    {
        byte[] disk = Compressible(Math.Max(4 * clusterSize, 1 << 20), seed: 17);
        string image = QemuCompressedImage(disk, qemuType, clusterSize);
        using IBlockImage opened = ImageOpener.Open(image, new ImageOpenOptions { ReadOnly = true });
        byte[] back = new byte[disk.Length];
        opened.Read(0, back);
        Assert.Equal(disk, back);
    }

    [Theory]
    [InlineData(CompressionType.Zlib, "zlib")]
    [InlineData(CompressionType.Zstd, "zstd")]
    public void Engine_CompressedWrites_PassQemuImgCheckAndCompare(CompressionType type, string qemuType)
    {
        byte[] disk = Compressible(4 * 65536, seed: 18);
        string image = _dir.File("ours.qcow2");
        ImageOpener.Create(image, new ImageCreateOptions { Size = disk.Length, CompressionType = type });
        using (var opened = (Qcow2Image)ImageOpener.Open(image))
        {
            for (int i = 0; i < 4; i++)
            {
                opened.WriteCompressed(i * 65536L, disk.AsSpan(i * 65536, 65536));
            }

            opened.Flush();
        }

        QemuTools.RunChecked("qemu-img", "check", image);
        Assert.Contains("compression type: " + qemuType, QemuTools.RunChecked("qemu-img", "info", image), StringComparison.Ordinal);
        string expected = _dir.File("expected.raw");
        File.WriteAllBytes(expected, disk);
        ToolResult compare = QemuTools.Run("qemu-img", ["compare", "-f", "qcow2", "-F", "raw", image, expected]);
        Assert.True(compare.ExitCode == 0, compare.AllOutput);
        using JsonDocument map = JsonDocument.Parse(QemuTools.RunChecked("qemu-img", "map", "--output=json", image));
        Assert.All(map.RootElement.EnumerateArray(), e => Assert.False(e.TryGetProperty("offset", out _), "compressed clusters have no plain host offset"));
    }

    /// <summary>Compresses one cluster the way QEMU asks (into cluster size - 1 bytes) and returns exactly the compressed bytes.</summary>
    private static byte[] CompressCluster(CompressionType type, ReadOnlySpan<byte> cluster)
    {
        byte[] buffer = new byte[cluster.Length - 1];
        int length = Qcow2Compression.Compress(type, cluster, buffer);
        Assert.True(length > 0, "the test data should compress");
        return buffer.AsSpan(0, length).ToArray();
    }

    private string QemuCompressedImage(byte[] disk, string compressionType, int clusterSize = 65536)
    {
        string raw = _dir.File($"src-{compressionType}.raw");
        File.WriteAllBytes(raw, disk);
        string image = _dir.File($"c-{compressionType}.qcow2");
        QemuTools.RunChecked("qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", "-o", $"compression_type={compressionType},cluster_size={clusterSize}", raw, image);
        return image;
    }

    /// <summary>Text-like data that compresses to roughly a third, different for every seed.</summary>
    private static byte[] Compressible(int size, int seed)
    {
        var random = new Random(seed);
        string[] words = ["qcow2", "cluster", "refcount", "lvstord", "guest", "virtio", "backing", "snapshot", "L2", "zstd"];
        byte[] data = new byte[size];
        int pos = 0;
        while (pos < size)
        {
            string word = words[random.Next(words.Length)] + (random.Next(4) == 0 ? random.Next(1000).ToString(System.Globalization.CultureInfo.InvariantCulture) : string.Empty) + " ";
            foreach (char c in word)
            {
                if (pos == size)
                {
                    break;
                }

                data[pos++] = (byte)c;
            }
        }

        return data;
    }

    private static unsafe byte[] InflateMinus12(ReadOnlySpan<byte> compressed, int size)
    {
        byte[] output = new byte[size];
        ZStream strm = default;
        Assert.Equal(Zlib.Z_OK, Zlib.inflateInit2_(&strm, -12, Zlib.zlibVersion(), sizeof(ZStream)));
        try
        {
            fixed (byte* pIn = compressed)
            fixed (byte* pOut = output)
            {
                strm.NextIn = pIn;
                strm.AvailIn = (uint)compressed.Length;
                strm.NextOut = pOut;
                strm.AvailOut = (uint)output.Length;
                Assert.Equal(Zlib.Z_STREAM_END, Zlib.inflate(&strm, Zlib.Z_FINISH));
                Assert.Equal(0u, strm.AvailOut);
                Assert.Equal(0u, strm.AvailIn);
            }
        }
        finally
        {
            Zlib.inflateEnd(&strm);
        }

        return output;
    }

    private byte[] PythonDeflate(byte[] data, int windowBits)
    {
        string input = _dir.File("py.in");
        string output = _dir.File("py.out");
        File.WriteAllBytes(input, data);
        QemuTools.RunChecked(
            "python3",
            "-c",
            "import sys, zlib; c = zlib.compressobj(6, zlib.DEFLATED, int(sys.argv[3]), 9); " +
            "open(sys.argv[2], 'wb').write(c.compress(open(sys.argv[1], 'rb').read()) + c.flush())",
            input,
            output,
            windowBits.ToString(System.Globalization.CultureInfo.InvariantCulture));
        return File.ReadAllBytes(output);
    }

    /// <summary>Just enough qcow2 (qcow2.txt "Compressed Clusters Descriptor") to find and replace compressed clusters of the first L2 table.</summary>
    private sealed class CompressedClusterFile : IDisposable
    {
        private readonly FileStream _stream;
        private readonly int _clusterBits;
        private readonly long _l2Offset;

        public CompressedClusterFile(string path, bool writable = false)
        {
            _stream = new FileStream(path, FileMode.Open, writable ? FileAccess.ReadWrite : FileAccess.Read);
            byte[] header = ReadAt(0, 48);
            _clusterBits = (int)BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(20));
            long l1 = (long)BinaryPrimitives.ReadUInt64BigEndian(header.AsSpan(40));
            _l2Offset = (long)(BinaryPrimitives.ReadUInt64BigEndian(ReadAt(l1, 8)) & 0x00fffffffffffe00UL);
        }

        private int OffsetBits => 62 - (_clusterBits - 8);

        public byte[] ReadCompressed(int index)
        {
            ulong entry = BinaryPrimitives.ReadUInt64BigEndian(ReadAt(_l2Offset + (8L * index), 8));
            Assert.True((entry & (1UL << 62)) != 0, $"cluster {index} is not compressed");
            long offset = (long)(entry & ((1UL << OffsetBits) - 1));
            long sectors = (long)((entry >> OffsetBits) & ((1UL << (_clusterBits - 8)) - 1)) + 1;
            return ReadAt(offset, (int)((sectors * 512) - (offset & 511)));
        }

        public void ReplaceCompressed(int index, ReadOnlySpan<byte> data)
        {
            long offset = (_stream.Length + 511) & ~511L;
            _stream.Position = offset;
            _stream.Write(data);
            _stream.SetLength((offset + data.Length + 511) & ~511L);
            ulong sectors = (ulong)((data.Length + 511) / 512);
            ulong entry = (1UL << 62) | ((sectors - 1) << OffsetBits) | (ulong)offset;
            byte[] raw = new byte[8];
            BinaryPrimitives.WriteUInt64BigEndian(raw, entry);
            _stream.Position = _l2Offset + (8L * index);
            _stream.Write(raw);
        }

        public void Dispose() => _stream.Dispose();

        private byte[] ReadAt(long offset, int length)
        {
            byte[] buffer = new byte[length];
            _stream.Position = offset;
            _stream.ReadExactly(buffer);
            return buffer;
        }
    }
}
