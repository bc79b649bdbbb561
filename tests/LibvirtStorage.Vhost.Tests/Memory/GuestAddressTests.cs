using LibvirtStorage.Vhost.Memory;
using Xunit;

namespace LibvirtStorage.Vhost.Tests.Memory;

public sealed class GuestAddressTests
{
    [Fact]
    public void CheckedAdd_AddsWithinRange()
    {
        Assert.True(new GuestAddress(0x1000).CheckedAdd(0x234, out GuestAddress sum));
        Assert.Equal(new GuestAddress(0x1234), sum);
        Assert.True(new GuestAddress(ulong.MaxValue - 1).CheckedAdd(1, out sum));
        Assert.Equal(ulong.MaxValue, sum.Value);
    }

    [Fact]
    public void CheckedAdd_RefusesWrapAround()
    {
        Assert.False(new GuestAddress(ulong.MaxValue).CheckedAdd(1, out GuestAddress sum));
        Assert.Equal(default, sum);
        Assert.False(new GuestAddress(2).CheckedAdd(ulong.MaxValue - 1, out _));
    }

    [Theory]
    [InlineData(0ul, 0ul, true)]
    [InlineData(ulong.MaxValue, 0ul, true)]
    [InlineData(ulong.MaxValue, 1ul, true)]
    [InlineData(ulong.MaxValue, 2ul, false)]
    [InlineData(0ul, ulong.MaxValue, true)]
    [InlineData(1ul, ulong.MaxValue, true)]
    [InlineData(2ul, ulong.MaxValue, false)]
    public void RangeFits_IsExactAtTheTopOfTheAddressSpace(ulong address, ulong length, bool fits) =>
        Assert.Equal(fits, new GuestAddress(address).RangeFits(length));

    [Fact]
    public void ToString_IsHex() => Assert.Equal("0xff", new GuestAddress(255).ToString());
}
