using LibvirtStorage.Vhost.Memory;
using LibvirtStorage.Vhost.Tests.Memory;
using LibvirtStorage.Vhost.Virtqueue;
using Xunit;

namespace LibvirtStorage.Vhost.Tests.Virtqueue;

/// <summary>The data path allocates nothing per request (STYLE.md §5.3 hot-path rules).</summary>
public sealed class AllocationTests
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)] // with an inflight area: marking on pop, clearing around AddUsed
    public void PopWalkCompleteAndNotify_AllocateNothing(bool tracked)
    {
        using var fake = FakeGuestMemory.Standard();
        GuestMemory memory = fake.Memory;
        var driver = new FakeDriver(memory, 64) { EventIdx = true };
        SplitVirtqueue queue = driver.CreateQueue(eventIdx: true);
        using var inflight = new TestInflightArea(1, 64);
        if (tracked)
            Assert.Equal(QueueError.None, queue.AttachInflight(inflight.Area.Queue(0)));
        using var slot = new GuestMemorySlot();

        Serve(queue, memory, slot); // warm up (JIT, statics)
        long before = 0, after = 0;
        for (int round = 0; round < 20; round++)
        {
            for (int i = 0; i < 32; i++)
            {
                driver.AddIndirectChain(0x104000 + (ulong)(i * 64), (0x100000, 16, false), (0xfff0, 0x20, true), (0x100100 + (ulong)i, 1, true));
            }

            before = GC.GetAllocatedBytesForCurrentThread();
            Serve(queue, memory, slot);
            after = GC.GetAllocatedBytesForCurrentThread();
            Assert.Equal(0, after - before);
            while (driver.TryTakeUsed(out _, out _))
            {
            }
        }

        Assert.Equal(tracked, inflight.Area.Queue(0).UsedIdx == driver.UsedIdx && driver.UsedIdx != 0);
    }

    private static void Serve(SplitVirtqueue queue, GuestMemory memory, GuestMemorySlot slot)
    {
        using GuestMemoryLease lease = slot.Acquire(); // a lease per batch, as workers take it
        queue.DisableNotification(memory);
        do
        {
            while (queue.TryPopAvail(memory, out DescriptorChain chain) == PopResult.Chain)
            {
                uint written = 0;
                while (chain.TryNext(out DescriptorSegment segment))
                {
                    if (segment.Writable && memory.TryGetSegments(segment.Address, segment.Length, writable: true, out GuestSegments pieces))
                    {
                        foreach (Span<byte> piece in pieces)
                        {
                            piece.Fill(1);
                            written += (uint)piece.Length;
                        }
                    }
                }

                queue.AddUsed(memory, chain.Head, written);
            }
        }
        while (queue.EnableNotification(memory));

        queue.NeedsNotification(memory);
    }
}
