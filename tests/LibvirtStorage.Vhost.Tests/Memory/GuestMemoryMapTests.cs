using LibvirtStorage.Vhost.Memory;
using Xunit;

namespace LibvirtStorage.Vhost.Tests.Memory;

public sealed class GuestMemoryMapTests
{
    private const nint FakeHost = 0x1000; // never dereferenced: these tests only validate tables

    [Fact]
    public void TryCreate_SortsRegionsAndFindsThemByGuestAddress()
    {
        using var fake = new FakeGuestMemory((0x100000, 0x1000, false), (0, 0x1000, false), (0x1000, 0x1000, false));
        GuestMemory memory = fake.Memory;
        Assert.Equal(3, fake.Map.RegionCount);
        Assert.Equal(0, memory.FindRegion(0));
        Assert.Equal(0, memory.FindRegion(0xfff));
        Assert.Equal(1, memory.FindRegion(0x1000));
        Assert.Equal(1, memory.FindRegion(0x1fff));
        Assert.Equal(-1, memory.FindRegion(0x2000));
        Assert.Equal(-1, memory.FindRegion(0xfffff));
        Assert.Equal(2, memory.FindRegion(0x100000));
        Assert.Equal(-1, memory.FindRegion(0x101000));
        Assert.Equal(-1, memory.FindRegion(ulong.MaxValue));
    }

    [Fact]
    public void TryCreate_RefusesAnEmptyRegion() =>
        AssertRefused("empty", Region(0, 0x1000), Region(0x2000, 0));

    [Theory]
    [InlineData(0x0ul, 0x2000ul, 0x1000ul, 0x1000ul)] // second starts inside the first
    [InlineData(0x0ul, 0x4000ul, 0x1000ul, 0x1000ul)] // second contained in the first
    [InlineData(0x1000ul, 0x1000ul, 0x1000ul, 0x1000ul)] // identical
    [InlineData(0x1000ul, 0x1000ul, 0x0ul, 0x1001ul)] // first ends one byte inside the second
    public void TryCreate_RefusesOverlappingGuestRanges(ulong a, ulong aSize, ulong b, ulong bSize) =>
        AssertRefused("overlap", Region(a, aSize, 0x10_0000), Region(b, bSize, 0x20_0000));

    [Fact]
    public void TryCreate_RefusesOverlappingFrontEndRanges() =>
        AssertRefused("front-end address ranges overlap", Region(0, 0x1000, 0x5000), Region(0x10000, 0x1000, 0x5800));

    [Fact]
    public void TryCreate_RefusesGuestWrapAround() =>
        AssertRefused("wraps", Region(ulong.MaxValue - 0xfff, 0x1001));

    [Fact]
    public void TryCreate_RefusesFrontEndWrapAround() =>
        AssertRefused("wraps", Region(0, 0x1000, ulong.MaxValue - 0x10));

    [Fact]
    public void TryCreate_AcceptsTheTopOfTheAddressSpaceAndAdjacentRegions()
    {
        Assert.True(GuestMemoryMap.TryCreate([Region(ulong.MaxValue - 0xfff, 0x1000), Region(0, 0x1000, 0x9000), Region(0x1000, 0x1000, 0xa000)], out GuestMemoryMap? map, out string? reason), reason);
        Assert.Equal(3, map!.RegionCount);
        Assert.Equal(2, map.Memory.FindRegion(ulong.MaxValue));
        map.Release();
    }

    [Fact]
    public void TranslateUserAddress_FindsTheRegionAndChecksTheLength()
    {
        using var fake = FakeGuestMemory.Standard();
        GuestMemory memory = fake.Memory;
        Assert.True(memory.TryTranslateUserAddress(FakeGuestMemory.UserBase + 0x100010, 0x100, out GuestAddress gpa));
        Assert.Equal(0x100010ul, gpa.Value);
        Assert.True(memory.TryTranslateUserAddress(FakeGuestMemory.UserBase + 0xfff0, 0x10, out gpa));
        Assert.Equal(0xfff0ul, gpa.Value);
        Assert.False(memory.TryTranslateUserAddress(FakeGuestMemory.UserBase + 0xfff0, 0x11, out _)); // runs into the next region
        Assert.False(memory.TryTranslateUserAddress(FakeGuestMemory.UserBase + 0x20000, 1, out _)); // gap
        Assert.False(memory.TryTranslateUserAddress(0x10, 1, out _)); // below every region
        Assert.False(memory.TryTranslateUserAddress(ulong.MaxValue, ulong.MaxValue, out _));
    }

    [Fact]
    public void Slot_KeepsRegionsMappedUntilTheLastLeaseEnds()
    {
        GuestRegion first = Region(0, 0x1000);
        GuestRegion second = Region(0x1000, 0x1000);
        using var slot = new GuestMemorySlot();
        Assert.True(GuestMemoryMap.TryCreate([first], out GuestMemoryMap? map1, out _));
        slot.Replace(map1!);
        first.Dispose(); // the owner forgets it: only map1 keeps it alive now

        GuestMemoryLease lease = slot.Acquire();
        Assert.Same(map1!.Memory, lease.Memory);
        Assert.True(GuestMemoryMap.TryCreate([second], out GuestMemoryMap? map2, out _));
        slot.Replace(map2!);
        Assert.False(first.IsReleased); // a worker still holds map1

        lease.Dispose();
        Assert.True(first.IsReleased);
        using (GuestMemoryLease fresh = slot.Acquire())
        {
            Assert.Same(map2!.Memory, fresh.Memory);
        }

        Assert.False(second.IsReleased); // still owned by its creator and map2
        second.Dispose();
        Assert.False(second.IsReleased); // map2 is current
        slot.Dispose();
        Assert.True(second.IsReleased);
    }

    [Fact]
    public void TryAddAndTryRemove_BuildNewMapsAndKeepSharedRegionsAlive()
    {
        GuestRegion a = Region(0, 0x1000);
        GuestRegion b = Region(0x4000, 0x1000, 0x9000);
        Assert.True(GuestMemoryMap.TryCreate([a], out GuestMemoryMap? map1, out _));
        Assert.True(map1!.TryAdd(b, out GuestMemoryMap? map2, out string? reason), reason);
        Assert.Equal(2, map2!.RegionCount);
        Assert.False(map2.TryAdd(Region(0x4800, 0x1000, 0x20000), out _, out reason));
        Assert.Contains("overlap", reason, StringComparison.Ordinal);

        Assert.False(map2.TryRemove(new GuestAddress(0x4000), 0x1000, 0xdead, out _, out _)); // user address differs
        Assert.True(map2.TryRemove(new GuestAddress(0x4000), 0x1000, 0x9000, out GuestMemoryMap? map3, out GuestRegion? removed));
        Assert.Same(b, removed);
        Assert.Equal(1, map3!.RegionCount);

        a.Dispose();
        b.Dispose();
        map1.Release();
        map2.Release();
        Assert.True(b.IsReleased);
        Assert.False(a.IsReleased);
        map3.Release();
        Assert.True(a.IsReleased);
    }

    [Fact]
    public void TryCreate_RefusesARegionAlreadyReleased()
    {
        GuestRegion gone = Region(0, 0x1000);
        GuestRegion live = Region(0x1000, 0x1000);
        gone.Dispose();
        Assert.False(GuestMemoryMap.TryCreate([live, gone], out _, out string? reason));
        Assert.Contains("released", reason, StringComparison.Ordinal);
        Assert.False(live.IsReleased);
        live.Dispose();
        Assert.True(live.IsReleased); // the failed attempt gave back the reference it took
    }

    [Fact]
    public void EmptyMap_RefusesEveryAccess()
    {
        GuestMemory memory = GuestMemoryMap.CreateEmpty().Memory;
        Assert.False(memory.TryRead(new GuestAddress(0), out ulong _));
        Assert.False(memory.TryGetSegments(new GuestAddress(0), 1, false, out _));
        Assert.False(memory.TryTranslateUserAddress(0, 1, out _));
    }

    private static GuestRegion Region(ulong gpa, ulong size, ulong? user = null) =>
        GuestRegion.FromPointer(new GuestAddress(gpa), size, user ?? gpa + 0x1_0000_0000, FakeHost);

    private static void AssertRefused(string expected, params GuestRegion[] regions)
    {
        Assert.False(GuestMemoryMap.TryCreate(regions, out GuestMemoryMap? map, out string? reason));
        Assert.Null(map);
        Assert.Contains(expected, reason, StringComparison.Ordinal);
        foreach (GuestRegion r in regions)
        {
            Assert.False(r.IsReleased);
        }
    }
}
