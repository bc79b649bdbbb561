using FsCheck.Xunit;
using LibvirtStorage.Vhost.Memory;
using Xunit;

namespace LibvirtStorage.Vhost.Tests.Memory;

/// <summary>GuestMemory and GuestMemoryMap against independent models, on random and edge-biased input.</summary>
public sealed class GuestMemoryPropertyTests
{
    [Property(MaxTest = 500, QuietOnSuccess = true)]
    public void AccessSucceedsExactlyWhenTheRangeIsMapped(ulong address, ulong length, bool writable, byte bias)
    {
        using var fake = new FakeGuestMemory((0, 0x10000, false), (0x10000, 0x10000, false), (0x100000, 0x1000, false), (0x200000, 0x1000, true));
        GuestMemory memory = fake.Memory;
        address = (bias % 5) switch
        {
            0 => address,
            1 => 0xff00 + address % 0x200,
            2 => 0x1ff00 + address % 0x200,
            3 => ulong.MaxValue - address % 0x100,
            _ => 0x200000 + address % 0x1100,
        };
        length = (bias / 5 % 3) switch
        {
            0 => length,
            1 => length % 0x300,
            _ => length % 0x20000,
        };

        bool expected = fake.Covers(address, length, writable);
        Assert.Equal(expected, memory.IsRangeValid(new GuestAddress(address), length, writable));
        Assert.Equal(expected, memory.TryGetSegments(new GuestAddress(address), length, writable, out GuestSegments pieces));
        ulong total = 0;
        foreach (Span<byte> piece in pieces)
        {
            Assert.True(fake.SpanInsideRegions(piece));
            if (writable)
            {
                piece.Fill(0x33);
            }

            total += (ulong)piece.Length;
        }

        Assert.Equal(expected ? length : 0, total);
        Assert.Equal(fake.Covers(address, 8, writable), writable
            ? memory.TryWrite(new GuestAddress(address), address)
            : memory.TryRead(new GuestAddress(address), out ulong _));
        Assert.True(fake.GuardsIntact());
    }

    [Property(MaxTest = 500, QuietOnSuccess = true)]
    public void MapValidationMatchesTheModel(ulong[] starts, ulong[] sizes, ulong[] users, byte bias)
    {
        int count = Math.Min(starts.Length, 6);
        var regions = new GuestRegion[count];
        for (int i = 0; i < count; i++)
        {
            ulong Pick(ulong[] values) => values.Length == 0 ? 0 : values[i % values.Length];
            ulong start = (bias & 1) == 0 ? starts[i] : starts[i] % 0x10 * 0x1000;
            ulong size = (bias & 2) == 0 ? Pick(sizes) : Pick(sizes) % 0x3 * 0x1000;
            ulong user = (bias & 4) == 0 ? Pick(users) : 0x7f00_0000_0000 + (Pick(users) % 0x20 * 0x1000);
            regions[i] = GuestRegion.FromPointer(new GuestAddress(start), size, user, 0x1000);
        }

        bool expected = IsValidModel(regions);
        Assert.Equal(expected, GuestMemoryMap.TryCreate(regions, out GuestMemoryMap? map, out string? reason));
        Assert.Equal(expected, reason is null);
        if (map is not null)
        {
            foreach (GuestRegion r in regions)
            {
                Assert.Equal(r.Start.Value + (r.Size / 2), map.Memory.TryTranslateUserAddress(r.UserAddress + (r.Size / 2), 1, out GuestAddress gpa) ? gpa.Value : 0);
                Assert.True(map.Memory.FindRegion(r.Last) >= 0);
            }

            map.Release();
        }
    }

    private static bool IsValidModel(GuestRegion[] regions)
    {
        foreach (GuestRegion r in regions)
        {
            if (r.Size == 0 || r.Start.Value + (r.Size - 1) < r.Start.Value || r.UserAddress + (r.Size - 1) < r.UserAddress)
            {
                return false;
            }
        }

        for (int i = 0; i < regions.Length; i++)
        {
            for (int j = i + 1; j < regions.Length; j++)
            {
                GuestRegion a = regions[i], b = regions[j];
                bool gpaOverlap = a.Start.Value <= b.Last && b.Start.Value <= a.Last;
                bool userOverlap = a.UserAddress <= b.UserAddress + (b.Size - 1) && b.UserAddress <= a.UserAddress + (a.Size - 1);
                if (gpaOverlap || userOverlap)
                {
                    return false;
                }
            }
        }

        return true;
    }
}
