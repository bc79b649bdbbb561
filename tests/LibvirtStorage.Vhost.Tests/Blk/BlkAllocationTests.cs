using LibvirtStorage.Vhost.Blk;
using LibvirtStorage.Vhost.Memory;
using LibvirtStorage.Vhost.Tests.Virtqueue;
using LibvirtStorage.Vhost.Virtqueue;
using Xunit;
using static LibvirtStorage.Vhost.Tests.Blk.BlkHarness;

namespace LibvirtStorage.Vhost.Tests.Blk;

/// <summary>Pop, parse, execute and complete IN/OUT requests without allocating (STYLE.md §5.3 hot-path rules).</summary>
public sealed class BlkAllocationTests
{
    private const int Rounds = 20;
    private const int PerRound = 50;

    [Theory]
    [InlineData(false)]
    [InlineData(true)] // with an inflight area (INFLIGHT_SHMFD): the tracked path allocates nothing either
    public void ThousandReadsAndWrites_AllocateNothing(bool tracked)
    {
        using var h = new BlkHarness(queueSize: 256);
        using var inflight = new TestInflightArea(1, 256);
        if (tracked)
            Assert.Equal(QueueError.None, h.Queue.AttachInflight(inflight.Area.Queue(0)));
        var request = new VirtioBlkRequest();
        Publish(h);
        Serve(h, ref request); // warm up: JIT, statics, tiering of the first calls
        long allocated = 0;
        int served = 0;
        for (int round = 0; round < Rounds; round++)
        {
            Publish(h); // the driver side allocates (params arrays); it is not measured
            long before = GC.GetAllocatedBytesForCurrentThread();
            served += Serve(h, ref request);
            allocated += GC.GetAllocatedBytesForCurrentThread() - before;
            while (h.Driver.TryTakeUsed(out _, out _))
            {
            }
        }

        Assert.Equal(Rounds * PerRound, served);
        Assert.Equal(0, allocated);
        Assert.Equal((Rounds + 1) * PerRound / 2, h.Device.Writes); // the warm-up round included
    }

    private static void Publish(BlkHarness h)
    {
        while (h.Driver.TryTakeUsed(out _, out _))
        {
        }

        for (int i = 0; i < PerRound; i++)
        {
            bool read = i % 2 == 0;
            ulong header = Header + (16ul * (uint)i);
            h.WriteHeader(header, read ? 0u : 1u, (ulong)i * 8);
            h.Driver.AddChain((header, 16, false), (Data + (0x1000ul * (uint)(i % 16)), 4096, read), (0x100000 + (ulong)i, 1, true));
        }
    }

    private static int Serve(BlkHarness h, ref VirtioBlkRequest request)
    {
        GuestMemory memory = h.Memory;
        int served = 0;
        while (h.Queue.TryPopAvail(memory, out DescriptorChain chain) == PopResult.Chain)
        {
            VirtioBlkRequest.Parse(ref chain, memory, h.Settings.SegMax, ref request);
            VirtioBlkCompletion completion = h.Handler.Execute(in request, memory, h.Device);
            if (completion.Status == VirtioBlkStatus.Ok)
            {
                served++;
            }

            h.Queue.AddUsed(memory, chain.Head, completion.Written);
        }

        return served;
    }
}
