using LibvirtStorage.Vhost.Blk;
using LibvirtStorage.Vhost.Virtqueue;
using Xunit;
using static LibvirtStorage.Vhost.Tests.Blk.BlkHarness;

namespace LibvirtStorage.Vhost.Tests.Blk;

/// <summary>VirtioBlkRequest.Parse: framing, directions, and hostile chains (virtio 1.2 §5.2.6, §2.6.4).</summary>
public sealed class VirtioBlkRequestTests
{
    [Fact]
    public void ThreeDescriptorRead_IsParsed()
    {
        using var h = new BlkHarness();
        h.WriteHeader(Header, 0, 42, reserved: 7);
        ref VirtioBlkRequest r = ref h.Parse((Header, 16, false), (Data, 4096, true), (Status, 1, true));
        Assert.Equal(VirtioBlkParseError.None, r.Error);
        Assert.Equal((uint)VirtioBlkRequestType.In, r.Type);
        Assert.Equal(42ul, r.Sector);
        Assert.Equal(4096u, r.DataLength);
        Assert.Equal(Status, r.StatusAddress.Value);
        Assert.Equal(1, r.SegmentCount);
        Assert.Equal(new DescriptorSegment(new(Data), 4096, true), r.Segments[0]);
    }

    [Fact]
    public void HeaderSplitAcrossOddDescriptors_IsReassembled()
    {
        using var h = new BlkHarness();
        h.WriteHeader(Header, 1, 0x0102030405060708);
        ref VirtioBlkRequest r = ref h.Parse((Header, 5, false), (Header + 5, 7, false), (Header + 12, 4, false), (Data, 512, false), (Status, 1, true));
        Assert.Equal(VirtioBlkParseError.None, r.Error);
        Assert.Equal((uint)VirtioBlkRequestType.Out, r.Type);
        Assert.Equal(0x0102030405060708ul, r.Sector);
        Assert.Equal(512u, r.DataLength);
    }

    [Fact]
    public void HeaderAndDataInOneDescriptor_DataStartsAfterHeader()
    {
        using var h = new BlkHarness();
        h.WriteHeader(Header, 1, 3);
        ref VirtioBlkRequest r = ref h.Parse((Header, 16 + 1024, false), (Status, 1, true));
        Assert.Equal(VirtioBlkParseError.None, r.Error);
        Assert.Equal(1024u, r.DataLength);
        Assert.Equal(new DescriptorSegment(new(Header + 16), 1024, false), r.Segments[0]);
    }

    [Fact]
    public void HeaderEndingInsideADescriptor_RestIsData()
    {
        using var h = new BlkHarness();
        h.WriteHeader(Header, 1, 3);
        ref VirtioBlkRequest r = ref h.Parse((Header, 10, false), (Header + 10, 6 + 512, false), (Status, 1, true));
        Assert.Equal(VirtioBlkParseError.None, r.Error);
        Assert.Equal(new DescriptorSegment(new(Header + 16), 512, false), r.Segments[0]);
    }

    [Fact]
    public void StatusSharingTheLastDataDescriptor_IsItsLastByte()
    {
        using var h = new BlkHarness();
        h.WriteHeader(Header, 0, 0);
        ref VirtioBlkRequest r = ref h.Parse((Header, 16, false), (Data, 512, true), (Data + 0x1000, 513, true));
        Assert.Equal(VirtioBlkParseError.None, r.Error);
        Assert.Equal(1024u, r.DataLength);
        Assert.Equal(Data + 0x1000 + 512, r.StatusAddress.Value);
        Assert.Equal(2, r.SegmentCount);
    }

    [Fact]
    public void EmptyDescriptors_AreSkipped()
    {
        using var h = new BlkHarness();
        h.WriteHeader(Header, 0, 0);
        ref VirtioBlkRequest r = ref h.Parse((Header, 16, false), (Data, 0, false), (Data, 0, true), (Data, 512, true), (Data + 0x1000, 0, true), (Status, 1, true));
        Assert.Equal(VirtioBlkParseError.None, r.Error);
        Assert.Equal(1, r.SegmentCount);
        Assert.Equal(512u, r.DataLength);
    }

    [Fact]
    public void IndirectChain_IsParsed()
    {
        using var h = new BlkHarness();
        h.WriteHeader(Header, 0, 8);
        h.Driver.AddIndirectChain(0x104000, (Header, 16, false), (Data, 4096, true), (0x100000, 4096, true), (Status, 1, true));
        ref VirtioBlkRequest r = ref h.PopAndParse();
        Assert.Equal(VirtioBlkParseError.None, r.Error);
        Assert.Equal(8192u, r.DataLength);
        Assert.Equal(2, r.SegmentCount);
    }

    [Theory]
    [InlineData(0u)]
    [InlineData(10u)]
    [InlineData(15u)]
    public void HeaderShorterThan16ReadableBytes_IsMalformed(uint readable)
    {
        using var h = new BlkHarness();
        h.WriteHeader(Header, 0, 0);
        ref VirtioBlkRequest r = ref readable == 0
            ? ref h.Parse((Header, 16, true), (Status, 1, true))
            : ref h.Parse((Header, readable, false), (Data, 512, true), (Status, 1, true));
        Assert.Equal(VirtioBlkParseError.HeaderTooShort, r.Error);
    }

    [Fact]
    public void OnlyAShortHeader_IsMalformed()
    {
        using var h = new BlkHarness();
        Assert.Equal(VirtioBlkParseError.HeaderTooShort, h.Parse((Header, 8, false)).Error);
    }

    [Fact]
    public void NoWritableDescriptor_HasNoStatusByte()
    {
        using var h = new BlkHarness();
        h.WriteHeader(Header, 1, 0);
        Assert.Equal(VirtioBlkParseError.NoStatusByte, h.Parse((Header, 16, false), (Data, 512, false), (Status, 1, false)).Error);
    }

    [Fact]
    public void EmptyLastWritableDescriptor_HasNoStatusByte()
    {
        using var h = new BlkHarness();
        h.WriteHeader(Header, 0, 0);
        Assert.Equal(VirtioBlkParseError.NoStatusByte, h.Parse((Header, 16, false), (Data, 512, true), (Status, 0, true)).Error);
    }

    [Fact]
    public void StatusInReadOnlyMemory_IsABadChain()
    {
        using var h = new BlkHarness();
        h.WriteHeader(Header, 1, 0);
        ref VirtioBlkRequest r = ref h.Parse((Header, 16, false), (ReadOnlyRegion, 1, true));
        Assert.Equal(VirtioBlkParseError.BadChain, r.Error);
        Assert.Equal(ChainError.BufferOutsideMemory, r.ChainError);
    }

    [Fact]
    public void StatusOutsideMemory_IsABadChain()
    {
        using var h = new BlkHarness();
        h.WriteHeader(Header, 1, 0);
        Assert.Equal(VirtioBlkParseError.BadChain, h.Parse((Header, 16, false), (0x30000, 1, true)).Error);
    }

    [Fact]
    public void HeaderInReadOnlyMemory_IsFine()
    {
        using var h = new BlkHarness();
        h.WriteHeader(ReadOnlyRegion, 4, 0);
        Assert.Equal(VirtioBlkParseError.None, h.Parse((ReadOnlyRegion, 16, false), (Status, 1, true)).Error);
    }

    [Theory]
    [InlineData(0x20000ul, 512u)] // in the gap after the two contiguous regions
    [InlineData(0x1FF00ul, 512u)] // runs off the end of the second region
    [InlineData(0x10FF00ul, 512u)] // runs off the end of the third
    [InlineData(0xFFFF_FFFF_FFFF_FF00ul, 512u)] // wraps around 2^64
    public void DataOutsideMemory_IsABadChain(ulong address, uint length)
    {
        using var h = new BlkHarness();
        h.WriteHeader(Header, 0, 0);
        Assert.Equal(VirtioBlkParseError.BadChain, h.Parse((Header, 16, false), (address, length, true), (Status, 1, true)).Error);
        Assert.Equal(0, h.Device.Reads);
    }

    [Fact]
    public void MoreDataSegmentsThanSegMax_IsMalformed()
    {
        using var h = new BlkHarness(settings: new VirtioBlkSettings { SegMax = 4 });
        h.WriteHeader(Header, 0, 0);
        var ok = new[] { (Header, 16u, false), (Data, 512u, true), (Data + 0x1000, 512u, true), (Data + 0x2000, 512u, true), (Data + 0x3000, 511u + 1, true), (Status, 1u, true) };
        Assert.Equal(VirtioBlkParseError.None, h.Parse(ok).Error);
        var tooMany = new[] { (Header, 16u, false), (Data, 512u, true), (Data + 0x1000, 512u, true), (Data + 0x2000, 512u, true), (Data + 0x3000, 512u, true), (Data + 0x4000, 513u, true) };
        Assert.Equal(VirtioBlkParseError.TooManySegments, h.Parse(tooMany).Error);
    }

    [Theory]
    [InlineData(0u, false)] // IN
    [InlineData(8u, false)] // GET_ID
    [InlineData(1u, true)] // OUT
    [InlineData(11u, true)] // DISCARD
    [InlineData(13u, true)] // WRITE_ZEROES
    [InlineData(4u, true)] // FLUSH
    [InlineData(4u, false)]
    public void DataOfTheWrongDirection_IsMalformed(uint type, bool dataWritable)
    {
        using var h = new BlkHarness();
        h.WriteHeader(Header, type, 0);
        Assert.Equal(VirtioBlkParseError.WrongDirection, h.Parse((Header, 16, false), (Data, 512, dataWritable), (Status, 1, true)).Error);
    }

    [Fact]
    public void UnknownType_AcceptsAnyData()
    {
        using var h = new BlkHarness();
        h.WriteHeader(Header, 99, 0);
        ref VirtioBlkRequest r = ref h.Parse((Header, 16, false), (Data, 512, false), (Data + 0x1000, 512, true), (Status, 1, true));
        Assert.Equal(VirtioBlkParseError.None, r.Error);
        Assert.Equal(99u, r.Type);
    }

    [Fact]
    public void LoopingChain_IsABadChain()
    {
        using var h = new BlkHarness();
        h.WriteHeader(Header, 0, 0);
        h.Driver.WriteDescriptor(0, Header, 16, VirtqLayout.DescFlagNext, 1);
        h.Driver.WriteDescriptor(1, Data, 512, (ushort)(VirtqLayout.DescFlagNext | VirtqLayout.DescFlagWrite), 1);
        h.Driver.Publish(0);
        ref VirtioBlkRequest r = ref h.PopAndParse();
        Assert.Equal(VirtioBlkParseError.BadChain, r.Error);
        Assert.Equal(ChainError.TooLong, r.ChainError);
    }

    [Fact]
    public void ReusedRequest_IsResetBetweenParses()
    {
        using var h = new BlkHarness();
        h.WriteHeader(Header, 0, 5);
        Assert.Equal(VirtioBlkParseError.None, h.Parse((Header, 16, false), (Data, 512, true), (Status, 1, true)).Error);
        h.WriteHeader(Header, 4, 0);
        ref VirtioBlkRequest r = ref h.Parse((Header, 16, false), (Status, 1, true));
        Assert.Equal(VirtioBlkParseError.None, r.Error);
        Assert.Equal(0, r.SegmentCount);
        Assert.Equal(0u, r.DataLength);
        Assert.Equal(0ul, r.Sector);
    }
}
