using System.Runtime.InteropServices;
using LibvirtStorage.Images.Native;
using LibvirtStorage.Images.Tests.Infrastructure;
using Xunit;

namespace LibvirtStorage.Images.Tests.Native;

public sealed unsafe class ImageFileTests : IDisposable
{
    private const int FileSize = 1_000_003; // deliberately not a multiple of any block size
    private readonly TempDir _dir = new();
    private readonly string _path;
    private readonly byte[] _content;

    public ImageFileTests()
    {
        _path = _dir.File("data.bin");
        _content = new byte[FileSize];
        new Random(1).NextBytes(_content);
        File.WriteAllBytes(_path, _content);
    }

    public void Dispose() => _dir.Dispose();

    [Fact]
    public void Direct_ProbesAPowerOfTwoAlignment()
    {
        using ImageFile file = ImageFile.Open(_path, writable: false, direct: true);
        Assert.True(file.OffsetAlignment >= 512 && (file.OffsetAlignment & (file.OffsetAlignment - 1)) == 0);
        Assert.True(file.MemoryAlignment >= 1 && (file.MemoryAlignment & (file.MemoryAlignment - 1)) == 0);

        using ImageFile buffered = ImageFile.Open(_path, writable: false, direct: false);
        Assert.Equal(1, buffered.OffsetAlignment);
    }

    [Theory]
    [InlineData(0, 1)]
    [InlineData(1, 511)]
    [InlineData(511, 2)]
    [InlineData(4095, 4098)]
    [InlineData(123_457, 65_536)]
    [InlineData(FileSize - 10, 10)]
    [InlineData(FileSize - 10, 5000)]
    [InlineData(FileSize + 7, 100)]
    public void Direct_UnalignedReads_MatchTheFile_AndReadZeroesPastTheEnd(long offset, int length)
    {
        using ImageFile file = ImageFile.Open(_path, writable: false, direct: true);
        byte[] buffer = new byte[length];
        Array.Fill(buffer, (byte)0xEE);
        file.Read(buffer, offset);
        Assert.Equal(Expected(_content, offset, length), buffer);
    }

    [Fact]
    public void Direct_AlignedReadAcrossAnUnalignedEndOfFile_ZeroFillsTheTail()
    {
        using ImageFile file = ImageFile.Open(_path, writable: false, direct: true);
        long offset = FileSize & ~(long)(file.OffsetAlignment - 1);
        using var buffer = new AlignedBuffer(4 * file.OffsetAlignment, file.OffsetAlignment);
        buffer.Span.Fill(0xEE);
        file.Read(buffer.Span, offset);
        Assert.Equal(Expected(_content, offset, buffer.Span.Length), buffer.Span.ToArray());
    }

    [Theory]
    [InlineData(100, 200)]
    [InlineData(4000, 200)]
    [InlineData(512, 1024)]
    [InlineData(777, 100_000)]
    public void Direct_UnalignedWritesInside_KeepNeighboursAndLength(long offset, int length)
    {
        byte[] data = Pattern(length, 7);
        using (ImageFile file = ImageFile.Open(_path, writable: true, direct: true))
        {
            file.Write(data, offset);
            Assert.Equal(FileSize, file.Length);
        }

        data.CopyTo(_content, offset);
        Assert.Equal(_content, File.ReadAllBytes(_path));
    }

    [Theory]
    [InlineData(FileSize - 3, 10)]
    [InlineData(FileSize, 1)]
    [InlineData(FileSize + 1000, 3)]
    [InlineData(FileSize - 5000, 9000)]
    public void Direct_WritesPastTheEnd_GrowTheFileExactly(long offset, int length)
    {
        byte[] data = Pattern(length, 9);
        using (ImageFile file = ImageFile.Open(_path, writable: true, direct: true))
        {
            file.Write(data, offset);
            Assert.Equal(offset + length, file.Length);

            byte[] back = new byte[length];
            file.Read(back, offset);
            Assert.Equal(data, back);
        }

        byte[] expected = new byte[offset + length];
        _content.CopyTo(expected, 0);
        data.CopyTo(expected, offset);
        Assert.Equal(expected, File.ReadAllBytes(_path));
    }

    [Fact]
    public void Direct_AlignedRangeFromUnalignedMemory_IsWrittenAsIs()
    {
        byte[] data = Pattern(8192 + 1, 11);
        using (ImageFile file = ImageFile.Open(_path, writable: true, direct: true))
        {
            // Skipping one byte of a managed array makes the memory unaligned for O_DIRECT.
            file.Write(data.AsSpan(1, 8192), 8192);
            byte[] back = new byte[8192 + 1];
            file.Read(back.AsSpan(1), 8192);
            Assert.Equal(data.AsSpan(1).ToArray(), back.AsSpan(1).ToArray());
        }

        data.AsSpan(1).CopyTo(_content.AsSpan(8192));
        Assert.Equal(_content, File.ReadAllBytes(_path));
    }

    [Fact]
    public void Direct_ConcurrentSubBlockWritesToTheSameBlocks_AreAllKept()
    {
        // 64 writers, each 100 bytes into the same few blocks: the read-modify-write of one must
        // not write back stale bytes over another's.
        using (ImageFile file = ImageFile.Open(_path, writable: true, direct: true))
        {
            Parallel.For(0, 64, new ParallelOptions { MaxDegreeOfParallelism = 8 }, i =>
                file.Write(Pattern(100, i), 1000 + (i * 100)));
        }

        for (int i = 0; i < 64; i++)
        {
            Pattern(100, i).CopyTo(_content, 1000 + (i * 100));
        }

        Assert.Equal(_content, File.ReadAllBytes(_path));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void Direct_RandomReadsAndWrites_MatchAnInMemoryModel(int seed)
    {
        var random = new Random(seed);
        var model = new List<byte>(_content);
        using ImageFile file = ImageFile.Open(_path, writable: true, direct: true);
        for (int op = 0; op < 300; op++)
        {
            long offset = random.Next(3) == 0 ? model.Count - random.Next(-3000, 3000) : random.Next(model.Count + 5000);
            offset = Math.Max(0, offset);
            int length = random.Next(1, 3) == 1 ? random.Next(1, 600) : random.Next(1, 20_000);
            int skew = random.Next(4) == 0 ? 0 : random.Next(1, 64); // unaligned memory most of the time
            byte[] buffer = new byte[length + skew];
            if (random.Next(2) == 0)
            {
                random.NextBytes(buffer);
                file.Write(buffer.AsSpan(skew), offset);
                while (model.Count < offset + length)
                {
                    model.Add(0);
                }

                for (int i = 0; i < length; i++)
                {
                    model[(int)offset + i] = buffer[skew + i];
                }

                Assert.Equal(model.Count, file.Length);
            }
            else
            {
                file.Read(buffer.AsSpan(skew), offset);
                Assert.Equal(Expected([.. model], offset, length), buffer.AsSpan(skew).ToArray());
            }
        }

        Assert.Equal([.. model], File.ReadAllBytes(_path));
    }

    [Fact]
    public void Buffered_ReadsPastTheEnd_AreZeroes()
    {
        using ImageFile file = ImageFile.Open(_path, writable: false, direct: false);
        byte[] buffer = new byte[100];
        Array.Fill(buffer, (byte)1);
        file.Read(buffer, FileSize - 50);
        Assert.Equal(Expected(_content, FileSize - 50, 100), buffer);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void WriteZeroes_InsideAndPastTheEnd(bool direct)
    {
        using (ImageFile file = ImageFile.Open(_path, writable: true, direct: direct))
        {
            file.WriteZeroes(1000, 70_000, unmap: true);
            file.WriteZeroes(FileSize - 100, 300, unmap: false);
            Assert.Equal(FileSize + 200, file.Length);
        }

        byte[] expected = new byte[FileSize + 200];
        _content.CopyTo(expected, 0);
        Array.Clear(expected, 1000, 70_000);
        Array.Clear(expected, FileSize - 100, 100);
        Assert.Equal(expected, File.ReadAllBytes(_path));
    }

    [Fact]
    public void Open_MissingFile_IsAnImageException()
    {
        var e = Assert.Throws<ImageException>(() => ImageFile.Open(_dir.File("missing"), writable: false, direct: false));
        Assert.Contains("missing", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Direct_Qcow2EngineOnTop_WritesAnImageQemuAccepts()
    {
        // The qcow2 engine writes 8-byte table entries and 104-byte headers: every one goes through
        // the bounced read-modify-write path, concurrently with aligned data writes.
        string image = _dir.File("direct.qcow2");
        string expected = _dir.File("expected.raw");
        ImageOpener.Create(image, new ImageCreateOptions { Size = 8 << 20, ClusterSize = 4096 });
        byte[] disk = new byte[8 << 20];
        using (IBlockImage opened = ImageOpener.Open(image, new ImageOpenOptions { Direct = true }))
        {
            Parallel.For(0, 200, new ParallelOptions { MaxDegreeOfParallelism = 8 }, i =>
            {
                long offset = (i * 40_009L) % ((8 << 20) - 5000);
                byte[] data = Pattern(1000 + (i * 17), i);
                opened.Write(offset, data);
            });

            // The writes never overlap (each is under 4.4 KiB, 40 KiB apart), so replaying them gives the disk.
            for (int i = 0; i < 200; i++)
            {
                long offset = (i * 40_009L) % ((8 << 20) - 5000);
                byte[] data = Pattern(1000 + (i * 17), i);
                data.CopyTo(disk, offset);
            }

            opened.Flush();
            byte[] back = new byte[disk.Length];
            opened.Read(0, back);
            Assert.Equal(disk, back);
        }

        File.WriteAllBytes(expected, disk);
        QemuTools.RunChecked("qemu-img", "check", image);
        ToolResult compare = QemuTools.Run("qemu-img", ["compare", "-f", "qcow2", "-F", "raw", image, expected]);
        Assert.True(compare.ExitCode == 0, compare.AllOutput);
    }

    private static byte[] Expected(byte[] content, long offset, int length)
    {
        byte[] expected = new byte[length];
        if (offset < content.Length)
        {
            int n = (int)Math.Min(length, content.Length - offset);
            Array.Copy(content, offset, expected, 0, n);
        }

        return expected;
    }

    private static byte[] Pattern(int length, int seed)
    {
        byte[] data = new byte[length];
        new Random(seed + 1000).NextBytes(data);
        return data;
    }

    private sealed class AlignedBuffer : IDisposable
    {
        private readonly void* _memory;
        private readonly int _length;

        public AlignedBuffer(int length, int alignment)
        {
            _memory = NativeMemory.AlignedAlloc((nuint)length, (nuint)alignment);
            _length = length;
        }

        public Span<byte> Span => new(_memory, _length);

        public void Dispose() => NativeMemory.AlignedFree(_memory);
    }
}
