using LibvirtStorage.Vhost.Memory;
using Xunit;

namespace LibvirtStorage.Vhost.Tests.Memory;

public sealed class GuestMemoryTests : IDisposable
{
    private readonly FakeGuestMemory _fake = new((0, 0x10000, false), (0x10000, 0x10000, false), (0x100000, 0x1000, false), (0x200000, 0x1000, true));

    private GuestMemory Memory => _fake.Memory;

    public void Dispose() => _fake.Dispose();

    [Fact]
    public void ReadAndWrite_CopyValuesInsideARegion()
    {
        Assert.True(Memory.TryWrite(new GuestAddress(0x100), 0x1122334455667788ul));
        Assert.True(Memory.TryRead(new GuestAddress(0x100), out ulong value));
        Assert.Equal(0x1122334455667788ul, value);
        Assert.Equal(0x88, _fake.Bytes(0x100, 1)[0]); // little-endian in place
        Assert.True(Memory.TryRead(new GuestAddress(0x101), out uint unaligned));
        Assert.Equal(0x44556677u, unaligned);
    }

    [Fact]
    public void ReadAndWrite_CrossContiguousRegions()
    {
        Assert.True(Memory.TryWrite(new GuestAddress(0xfffc), 0xa1a2a3a4a5a6a7a8ul));
        Assert.Equal(0xa5, _fake.Bytes(0xfffc, 4)[3]);
        Assert.Equal(0xa4, _fake.Bytes(0x10000, 4)[0]);
        Assert.True(Memory.TryRead(new GuestAddress(0xfffc), out ulong value));
        Assert.Equal(0xa1a2a3a4a5a6a7a8ul, value);
    }

    [Theory]
    [InlineData(0x1fffcul)] // runs off the end of the second region into the gap
    [InlineData(0x20000ul)] // in the gap
    [InlineData(0x100ffcul)] // runs off the end of an isolated region
    [InlineData(ulong.MaxValue - 3)] // wraps around 2^64
    [InlineData(ulong.MaxValue)]
    public void ReadAndWrite_RefuseRangesOutsideMemory(ulong address)
    {
        Assert.False(Memory.TryRead(new GuestAddress(address), out ulong value));
        Assert.Equal(0ul, value);
        Assert.False(Memory.TryWrite(new GuestAddress(address), ulong.MaxValue));
        Assert.True(_fake.GuardsIntact());
    }

    [Fact]
    public void Write_RefusesReadOnlyRegions()
    {
        Assert.False(Memory.TryWrite(new GuestAddress(0x200000), 1));
        Assert.False(Memory.TryStoreRelease16(new GuestAddress(0x200000), 1));
        Assert.True(Memory.TryRead(new GuestAddress(0x200000), out int _));
        Assert.True(Memory.TryLoadAcquire16(new GuestAddress(0x200000), out _));
    }

    [Fact]
    public void AcquireAndRelease16_RequireAlignmentAndMemory()
    {
        Assert.True(Memory.TryStoreRelease16(new GuestAddress(0x42), 0xbeef));
        Assert.True(Memory.TryLoadAcquire16(new GuestAddress(0x42), out ushort value));
        Assert.Equal(0xbeef, value);
        Assert.False(Memory.TryStoreRelease16(new GuestAddress(0x43), 1));
        Assert.False(Memory.TryLoadAcquire16(new GuestAddress(0x43), out _));
        Assert.False(Memory.TryLoadAcquire16(new GuestAddress(0x20000), out _));
        Assert.False(Memory.TryLoadAcquire16(new GuestAddress(ulong.MaxValue - 1), out _));
    }

    [Fact]
    public void Segments_SplitAtRegionBoundaries()
    {
        _fake.Bytes(0xfff0, 16).Fill(1);
        _fake.Bytes(0x10000, 16).Fill(2);
        Assert.True(Memory.TryGetSegments(new GuestAddress(0xfff0), 32, writable: true, out GuestSegments segments));
        Assert.Equal(32ul, segments.Remaining);
        int count = 0;
        foreach (Span<byte> piece in segments)
        {
            Assert.Equal(16, piece.Length);
            Assert.All(piece.ToArray(), b => Assert.Equal(count + 1, b));
            Assert.True(_fake.SpanInsideRegions(piece));
            count++;
        }

        Assert.Equal(2, count);
    }

    [Fact]
    public void Segments_CopyTo_GathersTheRange()
    {
        _fake.Bytes(0xfffe, 2).Fill(7);
        _fake.Bytes(0x10000, 2).Fill(9);
        Assert.True(Memory.TryGetSegments(new GuestAddress(0xfffe), 4, writable: false, out GuestSegments segments));
        var buffer = new byte[4];
        segments.CopyTo(buffer);
        Assert.Equal(new byte[] { 7, 7, 9, 9 }, buffer);
    }

    [Fact]
    public void Segments_OfZeroLengthAreValidAnywhere()
    {
        Assert.True(Memory.TryGetSegments(new GuestAddress(ulong.MaxValue), 0, writable: true, out GuestSegments segments));
        Assert.False(segments.MoveNext());
    }

    [Theory]
    [InlineData(0x1fff0ul, 0x20ul, false)] // off the end into the gap
    [InlineData(0xfff0ul, 0x20000ul, false)] // past both contiguous regions
    [InlineData(0x30000ul, 1ul, false)] // gap
    [InlineData(0x200000ul, 0x10ul, true)] // writable access to a read-only region
    [InlineData(0x1000ul, ulong.MaxValue, false)] // wraps
    [InlineData(ulong.MaxValue, 2ul, false)] // wraps
    public void Segments_RefuseRangesOutsideMemory(ulong address, ulong length, bool writable)
    {
        Assert.False(Memory.TryGetSegments(new GuestAddress(address), length, writable, out GuestSegments segments));
        Assert.False(segments.MoveNext());
        Assert.False(Memory.IsRangeValid(new GuestAddress(address), length, writable));
    }

    [Fact]
    public void Segments_ReadOnlyAccessToReadOnlyRegionIsAllowed() =>
        Assert.True(Memory.IsRangeValid(new GuestAddress(0x200000), 0x1000, writable: false));
}
