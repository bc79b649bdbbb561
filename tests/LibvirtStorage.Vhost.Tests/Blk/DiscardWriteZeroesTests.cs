using LibvirtStorage.Vhost.Blk;
using Xunit;
using static LibvirtStorage.Vhost.Tests.Blk.BlkHarness;

namespace LibvirtStorage.Vhost.Tests.Blk;

/// <summary>DISCARD and WRITE_ZEROES: segment format, flags, limits, read-only, check-all-before-execute.</summary>
public sealed class DiscardWriteZeroesTests
{
    private static readonly VirtioBlkSettings FourSegments = new() { MaxDiscardSegments = 4, MaxWriteZeroesSegments = 4, MaxDiscardSectors = 64, MaxWriteZeroesSectors = 64 };

    private static VirtioBlkCompletion Send(BlkHarness h, VirtioBlkRequestType type, params (ulong Sector, uint Sectors, uint Flags)[] ranges)
    {
        h.WriteHeader(Header, (uint)type, 0);
        for (int i = 0; i < ranges.Length; i++)
        {
            h.WriteRange(Data + (16ul * (uint)i), ranges[i].Sector, ranges[i].Sectors, ranges[i].Flags);
        }

        return h.Run((Header, 16, false), (Data, 16u * (uint)ranges.Length, false), (Status, 1, true));
    }

    [Fact]
    public void Discard_OneSegment()
    {
        using var h = new BlkHarness();
        VirtioBlkCompletion c = Send(h, VirtioBlkRequestType.Discard, (8, 16, 0));
        Assert.Equal(VirtioBlkStatus.Ok, c.Status);
        Assert.Equal(1u, c.Written);
        Assert.Equal([(4096L, 8192L)], h.Device.Discards);
    }

    [Fact]
    public void Writethrough_FlushesAfterDiscardAndWriteZeroes()
    {
        using var h = new BlkHarness(settings: new VirtioBlkSettings { Writeback = false });
        Assert.Equal(VirtioBlkStatus.Ok, Send(h, VirtioBlkRequestType.Discard, (8, 16, 0)).Status);
        Assert.Equal(VirtioBlkStatus.Ok, Send(h, VirtioBlkRequestType.WriteZeroes, (2, 2, 0)).Status);
        Assert.Equal(2, h.Device.Flushes);
    }

    [Theory]
    [InlineData(0u, false)]
    [InlineData(1u, true)]
    public void WriteZeroes_PassesTheUnmapFlag(uint flags, bool unmap)
    {
        using var h = new BlkHarness();
        Assert.Equal(VirtioBlkStatus.Ok, Send(h, VirtioBlkRequestType.WriteZeroes, (2, 2, flags)).Status);
        Assert.Equal([(1024L, 1024L, unmap)], h.Device.Zeroed);
        Assert.All(h.Device.Data.AsSpan(1024, 1024).ToArray(), b => Assert.Equal(0, b));
    }

    [Fact]
    public void DiscardWithUnmap_IsUnsupported()
    {
        using var h = new BlkHarness();
        Assert.Equal(VirtioBlkStatus.Unsupported, Send(h, VirtioBlkRequestType.Discard, (0, 8, 1)).Status);
        Assert.Empty(h.Device.Discards);
    }

    [Theory]
    [InlineData(2u)]
    [InlineData(3u)]
    [InlineData(0x8000_0000u)]
    public void UnknownFlags_AreUnsupported_EvenWhenTheRangeIsAlsoBad(uint flags)
    {
        using var h = new BlkHarness();
        Assert.Equal(VirtioBlkStatus.Unsupported, Send(h, VirtioBlkRequestType.WriteZeroes, (0, 8, flags)).Status);
        Assert.Equal(VirtioBlkStatus.Unsupported, Send(h, VirtioBlkRequestType.Discard, (0, 8, flags)).Status);
        Assert.Equal(VirtioBlkStatus.Unsupported, Send(h, VirtioBlkRequestType.WriteZeroes, (ulong.MaxValue, 8, flags)).Status);
        Assert.Empty(h.Device.Zeroed);
        Assert.Empty(h.Device.Discards);
    }

    [Fact]
    public void MultipleSegments_UpToTheLimit_AllExecute()
    {
        using var h = new BlkHarness(settings: FourSegments);
        Assert.Equal(VirtioBlkStatus.Ok, Send(h, VirtioBlkRequestType.Discard, (0, 8, 0), (64, 8, 0), (128, 64, 0), (2040, 8, 0)).Status);
        Assert.Equal(4, h.Device.Discards.Count);
        Assert.Equal((2040L * 512, 8L * 512), h.Device.Discards[3]);
    }

    [Fact]
    public void TooManySegments_AreUnsupported()
    {
        using var h = new BlkHarness(); // the default limit is one segment, as in QEMU's handler
        Assert.Equal(VirtioBlkStatus.Unsupported, Send(h, VirtioBlkRequestType.Discard, (0, 8, 0), (8, 8, 0)).Status);
        using var h4 = new BlkHarness(settings: FourSegments);
        Assert.Equal(VirtioBlkStatus.Unsupported, Send(h4, VirtioBlkRequestType.WriteZeroes, (0, 8, 0), (8, 8, 0), (16, 8, 0), (24, 8, 0), (32, 8, 0)).Status);
        Assert.Empty(h4.Device.Zeroed);
    }

    [Fact]
    public void SegmentLongerThanTheLimit_IsIoError()
    {
        using var h = new BlkHarness(settings: FourSegments);
        Assert.Equal(VirtioBlkStatus.Ok, Send(h, VirtioBlkRequestType.WriteZeroes, (0, 64, 0)).Status);
        Assert.Equal(VirtioBlkStatus.IoError, Send(h, VirtioBlkRequestType.WriteZeroes, (0, 65, 0)).Status);
        Assert.Equal(VirtioBlkStatus.IoError, Send(h, VirtioBlkRequestType.Discard, (0, uint.MaxValue, 0)).Status);
    }

    [Theory]
    [InlineData(2048ul, 8u)] // past the end
    [InlineData(2044ul, 8u)] // straddles the end
    [InlineData(ulong.MaxValue, 8u)] // overflow
    [InlineData(0x0080_0000_0000_0000ul, 8u)] // sector << 9 wraps
    public void SegmentOutOfRange_IsIoError(ulong sector, uint sectors)
    {
        using var h = new BlkHarness();
        Assert.Equal(VirtioBlkStatus.IoError, Send(h, VirtioBlkRequestType.Discard, (sector, sectors, 0)).Status);
        Assert.Equal(VirtioBlkStatus.IoError, Send(h, VirtioBlkRequestType.WriteZeroes, (sector, sectors, 1)).Status);
    }

    [Fact]
    public void MisalignedSegmentOn4KDevice_IsIoError()
    {
        using var h = new BlkHarness(new FakeBlockDevice(blockSize: 4096));
        Assert.Equal(VirtioBlkStatus.IoError, Send(h, VirtioBlkRequestType.Discard, (1, 8, 0)).Status);
        Assert.Equal(VirtioBlkStatus.IoError, Send(h, VirtioBlkRequestType.Discard, (8, 4, 0)).Status);
        Assert.Equal(VirtioBlkStatus.Ok, Send(h, VirtioBlkRequestType.Discard, (8, 8, 0)).Status);
    }

    [Fact]
    public void OneBadSegment_StopsTheWholeRequestBeforeAnyIsExecuted()
    {
        using var h = new BlkHarness(settings: FourSegments);
        Assert.Equal(VirtioBlkStatus.IoError, Send(h, VirtioBlkRequestType.WriteZeroes, (0, 8, 0), (8, 8, 0), (4096, 8, 0)).Status);
        Assert.Equal(VirtioBlkStatus.Unsupported, Send(h, VirtioBlkRequestType.WriteZeroes, (0, 8, 0), (8, 8, 4)).Status);
        Assert.Empty(h.Device.Zeroed);
    }

    [Theory]
    [InlineData(0u)]
    [InlineData(8u)]
    [InlineData(17u)]
    [InlineData(31u)]
    public void DataNotWholeSegments_IsIoError(uint length)
    {
        using var h = new BlkHarness(settings: FourSegments);
        h.WriteHeader(Header, (uint)VirtioBlkRequestType.Discard, 0);
        h.WriteRange(Data, 0, 8, 0);
        VirtioBlkCompletion c = length == 0
            ? h.Run((Header, 16, false), (Status, 1, true))
            : h.Run((Header, 16, false), (Data, length, false), (Status, 1, true));
        Assert.Equal(VirtioBlkStatus.IoError, c.Status);
        Assert.Empty(h.Device.Discards);
    }

    [Fact]
    public void SegmentsSplitAcrossDescriptorsAndRegions_AreReassembled()
    {
        using var h = new BlkHarness(settings: FourSegments);
        h.WriteHeader(Header, (uint)VirtioBlkRequestType.Discard, 0);
        h.WriteRange(0x100000, 16, 8, 0);
        h.WriteRange(0x100010, 32, 8, 0);
        Span<byte> both = stackalloc byte[32];
        h.Fake.Bytes(0x100000, 32).CopyTo(both);
        both[..10].CopyTo(h.Fake.Bytes(0xFFF6, 10));
        both[10..].CopyTo(h.Fake.Bytes(0x10000, 22));
        VirtioBlkCompletion c = h.Run((Header, 16, false), (0xFFF6, 32, false), (Status, 1, true));
        Assert.Equal(VirtioBlkStatus.Ok, c.Status);
        Assert.Equal([(8192L, 4096L), (16384L, 4096L)], h.Device.Discards);
    }

    [Fact]
    public void ReadOnlyDevice_IsIoError()
    {
        using var h = new BlkHarness(new FakeBlockDevice(readOnly: true));
        Assert.Equal(VirtioBlkStatus.IoError, Send(h, VirtioBlkRequestType.Discard, (0, 8, 0)).Status);
        Assert.Equal(VirtioBlkStatus.IoError, Send(h, VirtioBlkRequestType.WriteZeroes, (0, 8, 0)).Status);
        Assert.Empty(h.Device.Discards);
        Assert.Empty(h.Device.Zeroed);
    }

    [Fact]
    public void DisabledCommands_AreUnsupported()
    {
        using var h = new BlkHarness(settings: new VirtioBlkSettings { MaxDiscardSectors = 0, MaxWriteZeroesSectors = 0 });
        Assert.Equal(VirtioBlkStatus.Unsupported, Send(h, VirtioBlkRequestType.Discard, (0, 8, 0)).Status);
        Assert.Equal(VirtioBlkStatus.Unsupported, Send(h, VirtioBlkRequestType.WriteZeroes, (0, 8, 0)).Status);
    }

    [Fact]
    public void DeviceFailure_IsIoError()
    {
        using var h = new BlkHarness(new FakeBlockDevice { FailWith = new IOException("no") });
        VirtioBlkCompletion c = Send(h, VirtioBlkRequestType.WriteZeroes, (0, 8, 1));
        Assert.Equal(VirtioBlkStatus.IoError, c.Status);
        Assert.IsType<IOException>(c.DeviceError);
    }
}
