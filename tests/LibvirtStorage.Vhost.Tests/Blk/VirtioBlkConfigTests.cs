using System.Buffers.Binary;
using LibvirtStorage.Vhost.Blk;
using Xunit;

namespace LibvirtStorage.Vhost.Tests.Blk;

/// <summary>The config space layout (virtio 1.2 §5.2.4), feature bits and settings validation.</summary>
public sealed class VirtioBlkConfigTests
{
    [Fact]
    public void Layout_PutsEveryFieldAtItsSpecOffset()
    {
        var settings = new VirtioBlkSettings
        {
            NumQueues = 4, SegMax = 126, MaxDiscardSectors = 0x1234, MaxDiscardSegments = 3, DiscardSectorAlignment = 16,
            MaxWriteZeroesSectors = 0x5678, MaxWriteZeroesSegments = 2, WriteZeroesMayUnmap = true, Writeback = true,
        };
        VirtioBlkConfig config = VirtioBlkConfig.Create(new FakeBlockDevice(capacity: 1 << 20, blockSize: 4096), settings);
        Span<byte> c = stackalloc byte[VirtioBlkConfig.Size + 4];
        c.Fill(0xFF);
        config.WriteTo(c);

        Assert.Equal(2048ul, BinaryPrimitives.ReadUInt64LittleEndian(c)); // capacity in sectors
        Assert.Equal(0u, BinaryPrimitives.ReadUInt32LittleEndian(c[8..])); // size_max
        Assert.Equal(126u, BinaryPrimitives.ReadUInt32LittleEndian(c[12..])); // seg_max
        Assert.Equal(0u, BinaryPrimitives.ReadUInt32LittleEndian(c[16..])); // geometry
        Assert.Equal(4096u, BinaryPrimitives.ReadUInt32LittleEndian(c[20..])); // blk_size
        Assert.Equal(0ul, BinaryPrimitives.ReadUInt64LittleEndian(c[24..])); // topology
        Assert.Equal(1, c[32]); // writeback
        Assert.Equal(0, c[33]); // unused0
        Assert.Equal(4, BinaryPrimitives.ReadUInt16LittleEndian(c[34..])); // num_queues
        Assert.Equal(0x1234u, BinaryPrimitives.ReadUInt32LittleEndian(c[36..]));
        Assert.Equal(3u, BinaryPrimitives.ReadUInt32LittleEndian(c[40..]));
        Assert.Equal(16u, BinaryPrimitives.ReadUInt32LittleEndian(c[44..]));
        Assert.Equal(0x5678u, BinaryPrimitives.ReadUInt32LittleEndian(c[48..]));
        Assert.Equal(2u, BinaryPrimitives.ReadUInt32LittleEndian(c[52..]));
        Assert.Equal(1, c[56]); // write_zeroes_may_unmap
        Assert.True(c[57..60].IndexOfAnyExcept((byte)0) < 0); // unused1
        Assert.True(c[60..].IndexOfAnyExcept((byte)0xFF) < 0); // nothing written past the layout
    }

    [Fact]
    public void Writethrough_OffersNoFlushAndAZeroWritebackField()
    {
        VirtioBlkConfig config = VirtioBlkConfig.Create(new FakeBlockDevice(), new VirtioBlkSettings { Writeback = false });
        Assert.Equal(0ul, config.Features & VirtioBlkFeatures.Flush);
        Span<byte> c = stackalloc byte[VirtioBlkConfig.Size];
        config.WriteTo(c);
        Assert.Equal(0, c[32]);
    }

    [Fact]
    public void DiscardAlignment_DefaultsToTheBlockSize()
    {
        VirtioBlkConfig config = VirtioBlkConfig.Create(new FakeBlockDevice(blockSize: 4096), new VirtioBlkSettings());
        Span<byte> c = stackalloc byte[VirtioBlkConfig.Size];
        config.WriteTo(c);
        Assert.Equal(8u, BinaryPrimitives.ReadUInt32LittleEndian(c[44..]));
    }

    [Fact]
    public void WritableExport_OffersDiscardAndWriteZeroes()
    {
        ulong f = VirtioBlkConfig.Create(new FakeBlockDevice(), new VirtioBlkSettings()).Features;
        ulong expected = VirtioBlkFeatures.SegMax | VirtioBlkFeatures.BlockSize | VirtioBlkFeatures.Flush | VirtioBlkFeatures.MultiQueue
            | VirtioBlkFeatures.Discard | VirtioBlkFeatures.WriteZeroes;
        Assert.Equal(expected, f);
        Assert.Equal(1ul << 2 | 1ul << 6 | 1ul << 9 | 1ul << 12 | 1ul << 13 | 1ul << 14, f); // the spec's bit numbers
    }

    [Fact]
    public void ReadOnlyExport_OffersRoAndNoWriteCommands()
    {
        VirtioBlkConfig config = VirtioBlkConfig.Create(new FakeBlockDevice(readOnly: true), new VirtioBlkSettings());
        Assert.Equal(VirtioBlkFeatures.SegMax | VirtioBlkFeatures.BlockSize | VirtioBlkFeatures.Flush | VirtioBlkFeatures.MultiQueue | VirtioBlkFeatures.ReadOnly, config.Features);
        Assert.Equal(1ul << 5, VirtioBlkFeatures.ReadOnly);
        Span<byte> c = stackalloc byte[VirtioBlkConfig.Size];
        config.WriteTo(c);
        Assert.True(c[36..60].IndexOfAnyExcept((byte)0) < 0);
    }

    [Fact]
    public void DisabledCommands_AreNotOffered_AndTheirFieldsAreZero()
    {
        var settings = new VirtioBlkSettings { MaxDiscardSectors = 0, MaxWriteZeroesSectors = 0, Writeback = false };
        VirtioBlkConfig config = VirtioBlkConfig.Create(new FakeBlockDevice(), settings);
        Assert.Equal(0ul, config.Features & (VirtioBlkFeatures.Discard | VirtioBlkFeatures.WriteZeroes));
        Span<byte> c = stackalloc byte[VirtioBlkConfig.Size];
        config.WriteTo(c);
        Assert.Equal(0, c[32]);
        Assert.True(c[36..60].IndexOfAnyExcept((byte)0) < 0);
    }

    [Fact]
    public void NeverOffered_SizeMaxGeometryTopologyConfigWce()
    {
        ulong f = VirtioBlkConfig.Create(new FakeBlockDevice(), new VirtioBlkSettings()).Features;
        Assert.Equal(0ul, f & (VirtioBlkFeatures.SizeMax | VirtioBlkFeatures.Geometry | VirtioBlkFeatures.Topology | VirtioBlkFeatures.ConfigWce));
    }

    [Fact]
    public void CapacityRoundsDownToWholeSectors()
    {
        VirtioBlkConfig config = VirtioBlkConfig.Create(new FakeBlockDevice(capacity: 512 * 3 + 100), new VirtioBlkSettings());
        Assert.Equal(3ul, config.CapacitySectors);
    }

    [Theory]
    [InlineData(0u, 8)]
    [InlineData(34u, 2)]
    [InlineData(56u, 8)]
    [InlineData(200u, 56)]
    public void TryRead_ReturnsAWindow_ZeroPastTheLayout(uint offset, int length)
    {
        VirtioBlkConfig config = VirtioBlkConfig.Create(new FakeBlockDevice(), new VirtioBlkSettings { NumQueues = 3 });
        Span<byte> whole = stackalloc byte[256];
        config.WriteTo(whole);
        Span<byte> window = stackalloc byte[length];
        window.Fill(0xAB);
        Assert.True(config.TryRead(offset, window));
        Assert.True(window.SequenceEqual(whole.Slice((int)offset, length)));
    }

    [Fact]
    public void TryRead_RefusesAWrappingWindow()
    {
        VirtioBlkConfig config = VirtioBlkConfig.Create(new FakeBlockDevice(), new VirtioBlkSettings());
        Assert.False(config.TryRead(uint.MaxValue - 2, new byte[8]));
    }

    [Theory]
    [InlineData(0, 254u, 1u)]
    [InlineData(65, 254u, 1u)]
    [InlineData(1, 0u, 1u)]
    [InlineData(1, 257u, 1u)]
    [InlineData(1, 254u, 0u)]
    [InlineData(1, 254u, 257u)]
    public void BadSettings_Throw(int queues, uint segMax, uint discardSegments)
    {
        var settings = new VirtioBlkSettings { NumQueues = (ushort)queues, SegMax = segMax, MaxDiscardSegments = discardSegments };
        Assert.Throws<ArgumentOutOfRangeException>(settings.Validate);
        Assert.Throws<ArgumentOutOfRangeException>(() => new VirtioBlkHandler(settings));
    }

    [Fact]
    public void TooManySectorsPerSegment_Throws() =>
        Assert.Throws<ArgumentOutOfRangeException>(new VirtioBlkSettings { MaxWriteZeroesSectors = 1u << 22 }.Validate);

    [Theory]
    [InlineData(256)]
    [InlineData(1000)]
    [InlineData(0)]
    public void BadBlockSize_Throws(int blockSize) =>
        Assert.Throws<ArgumentOutOfRangeException>(() => VirtioBlkConfig.Create(new FakeBlockDevice(blockSize: blockSize), new VirtioBlkSettings()));
}
