using LibvirtStorage.Vhost.Memory;
using Xunit;

namespace LibvirtStorage.Vhost.Tests.Memory;

public sealed class GuestMemorySlotTests
{
    private const int Swaps = 2000;

    [Fact]
    public async Task ConcurrentLeasesNeverSeeAReleasedRegion()
    {
        using var slot = new GuestMemorySlot();
        var regions = new GuestRegion[Swaps];
        for (int i = 0; i < Swaps; i++)
        {
            regions[i] = GuestRegion.FromPointer(new GuestAddress((ulong)i * 0x1000), 0x1000, 0x5000, 0x1000);
        }

        using var stop = new CancellationTokenSource();
        int violations = 0;
        long leases = 0;

        void Worker()
        {
            while (!stop.IsCancellationRequested)
            {
                using GuestMemoryLease lease = slot.Acquire();
                if (lease.Memory.TryTranslateUserAddress(0x5000, 1, out GuestAddress gpa) && regions[gpa.Value / 0x1000].IsReleased)
                {
                    // However many swaps happened since, the region behind this lease must still be alive.
                    Interlocked.Increment(ref violations);
                }

                Interlocked.Increment(ref leases);
            }
        }

        Task[] workers = [Task.Run(Worker), Task.Run(Worker)];
        while (Interlocked.Read(ref leases) == 0)
        {
            await Task.Delay(1); // both cores may be busy: let the workers start before swapping
        }

        foreach (GuestRegion region in regions)
        {
            Assert.True(GuestMemoryMap.TryCreate([region], out GuestMemoryMap? map, out _));
            slot.Replace(map!);
            region.Dispose(); // only maps keep it alive from here on
            Thread.SpinWait(200); // give the workers time to lease this map
        }

        await stop.CancelAsync();
        await Task.WhenAll(workers);
        Assert.Equal(0, violations);
        Assert.True(Interlocked.Read(ref leases) > 1);
        slot.Dispose();
        Assert.All(regions, r => Assert.True(r.IsReleased));
    }
}
