using System.Runtime.InteropServices;
using LibvirtStorage.Vhost.Memory;
using LibvirtStorage.Vhost.Protocol;
using LibvirtStorage.Vhost.Tests.Protocol;
using LibvirtStorage.Vhost.Tests.Virtqueue;
using Microsoft.Win32.SafeHandles;
using Xunit;

namespace LibvirtStorage.Vhost.Tests.Backend;

/// <summary>
/// GET/SET_INFLIGHT_FD through the dispatcher, and a back-end restart with a request in flight: the new back-end,
/// given the area the front-end kept, completes exactly the unfinished requests, in counter order, then new ones.
/// </summary>
public sealed class InflightTests
{
    private const ushort Queues = 2;

    private static void AssertStillServing(BackendHarness h)
    {
        h.Frontend.Send(FrontendRequest.GetQueueNum);
        Assert.Equal(2UL, h.Frontend.ReceiveU64Reply(FrontendRequest.GetQueueNum));
        Assert.Null(h.Ended);
    }

    /// <summary>GET_INFLIGHT_FD as QEMU's vhost_dev_get_inflight sends it; returns the reply and the fd.</summary>
    private static (VhostUserInflight Reply, SafeFileHandle Fd) GetInflight(BackendHarness h, ushort queues = Queues, ushort size = BackendHarness.QueueSize)
    {
        h.Frontend.Send(FrontendRequest.GetInflightFd, new VhostUserInflight(0, 0, queues, size));
        var reply = MemoryMarshal.Read<VhostUserInflight>(h.Frontend.ReceiveReply(FrontendRequest.GetInflightFd));
        Assert.Equal(1, h.Frontend.ReplyFds.Count);
        return (reply, h.Frontend.ReplyFds.Take(0));
    }

    private static ulong SetInflight(BackendHarness h, SafeFileHandle fd, VhostUserInflight description) =>
        h.Request(FrontendRequest.SetInflightFd, description, [fd]);

    [Fact]
    public void Inflight_shmfd_is_offered()
    {
        using var h = new BackendHarness();
        h.Frontend.Send(FrontendRequest.GetProtocolFeatures);
        var offered = (VhostUserProtocolFeatures)h.Frontend.ReceiveU64Reply(FrontendRequest.GetProtocolFeatures);
        Assert.True(offered.HasFlag(VhostUserProtocolFeatures.InflightShmfd));
    }

    [Fact]
    public void Get_inflight_fd_returns_a_zeroed_sealed_area_in_QEMUs_layout()
    {
        using var h = new BackendHarness();
        h.Negotiate(inflight: true);
        var (reply, fd) = GetInflight(h, queues: 2, size: 64);
        using (fd)
        {
            // Per queue: ALIGN_UP(16 · 64 + 2, 64) = 1088 bytes (16-byte header + 64 entries of 16 bytes fit in it).
            Assert.Equal(2UL * 1088, reply.MmapSize);
            Assert.Equal(0UL, reply.MmapOffset);
            Assert.Equal(2, reply.QueueCount);
            Assert.Equal(64, reply.QueueSize);
            Assert.Equal(2 * 1088, RandomAccess.GetLength(fd));
            var bytes = new byte[2 * 1088];
            Assert.Equal(bytes.Length, RandomAccess.Read(fd, bytes, 0));
            Assert.All(bytes, b => Assert.Equal(0, b));
            int seals = LibC.Fcntl((int)fd.DangerousGetHandle(), LibC.FGetSeals, 0);
            Assert.Equal(LibC.SealGrow | LibC.SealShrink | LibC.SealSeal, seals & (LibC.SealGrow | LibC.SealShrink | LibC.SealSeal));

            Assert.Equal(0UL, SetInflight(h, fd, reply));
            AssertStillServing(h);
        }
    }

    [Fact]
    public void Inflight_requests_need_the_protocol_feature()
    {
        using var h = new BackendHarness();
        h.Negotiate();
        using var area = new TestInflightArea(Queues, BackendHarness.QueueSize);
        Assert.NotEqual(0UL, SetInflight(h, area.Fd, new VhostUserInflight(InflightArea.AreaSize(Queues, 64), 0, Queues, 64)));
        Assert.Contains("INFLIGHT_SHMFD was not negotiated", h.LogText, StringComparison.Ordinal);
        h.Frontend.Send(FrontendRequest.GetInflightFd, new VhostUserInflight(0, 0, Queues, 64));
        Assert.True(h.WaitEnded(), "a failed GET_INFLIGHT_FD has no reply to give: the connection breaks");
    }

    [Fact]
    public void A_restarted_back_end_completes_the_request_in_flight_once_then_the_queued_and_new_ones()
    {
        var first = new PatternDevice { Pattern = 0x11 };
        using var h = new BackendHarness(first);
        h.Negotiate(inflight: true);
        Assert.Equal(0UL, h.SendMemTable());
        var (description, inflightFd) = GetInflight(h);
        using SafeFileHandle kept = inflightFd; // QEMU keeps the area across reconnects
        Assert.Equal(0UL, SetInflight(h, kept, description));
        QueueEnd q = h.StartQueue(0, 0x0);
        FakeDriver driver = q.Driver;

        // One request completes normally.
        ushort done = driver.AddChain((0x10000, 16, false), (0x20000, 16, true));
        Assert.True(q.KickAndWaitForCall());
        Assert.True(driver.TryTakeUsed(out uint id, out _));
        Assert.Equal(done, id);

        // The next one blocks in the device; two more wait on the avail ring behind it.
        first.Gate = new ManualResetEventSlim(false);
        first.Entered.Reset();
        ushort blocked = driver.AddChain((0x10100, 16, false), (0x20100, 16, true));
        TestNative.WriteU64(q.Kick, 1);
        Assert.True(first.Entered.Wait(5000), "the device never saw the request");
        ushort queued1 = driver.AddChain((0x10200, 16, false), (0x20200, 16, true));
        ushort queued2 = driver.AddChain((0x10300, 16, false), (0x20300, 16, true));
        TestNative.WriteU64(q.Kick, 1);

        // The back-end dies with it in flight (the device call fails instead of completing: nothing is published).
        first.DieWhenReleased = true;
        first.Gate.Set();
        var second = new PatternDevice { Pattern = 0x22 };
        h.Reconnect(second);
        Assert.Equal(1, first.Chains);
        Assert.Equal(1, driver.UsedIdx);

        // QEMU's reconnect: features, memory, the kept area, then the rings with base = used idx.
        h.Negotiate(inflight: true);
        Assert.Equal(0UL, h.SendMemTable());
        Assert.Equal(0UL, SetInflight(h, kept, description));
        QueueEnd q2 = h.StartQueue(0, 0x0, baseIndex: driver.UsedIdx, driver: driver);
        Assert.True(q2.WaitForCall(), "the resubmitted request was not completed");
        var order = new List<uint>();
        var deadline = DateTime.UtcNow.AddSeconds(5);
        while (order.Count < 3 && DateTime.UtcNow < deadline)
        {
            if (driver.TryTakeUsed(out id, out uint length))
            {
                order.Add(id);
                Assert.Equal(16u, length);
            }
            else
            {
                q2.WaitForCall(100);
            }
        }

        Assert.Equal([blocked, queued1, queued2], order);
        Assert.Equal(3, second.Chains);
        for (ulong buffer = 0x20100; buffer <= 0x20300; buffer += 0x100)
            Assert.All(h.ReadGuest(buffer, 16), b => Assert.Equal(0x22, b));
        Assert.All(h.ReadGuest(0x20000, 16), b => Assert.Equal(0x11, b));

        // And new requests afterwards, exactly once each.
        ushort fresh = driver.AddChain((0x10400, 16, false), (0x20400, 16, true));
        Assert.True(q2.KickAndWaitForCall());
        Assert.True(driver.TryTakeUsed(out id, out _));
        Assert.Equal(fresh, id);
        Assert.False(driver.TryTakeUsed(out _, out _));
        Assert.Equal(4, second.Chains);
        Assert.Equal(5, driver.UsedIdx);
        Assert.Null(h.Ended);
    }

    [Fact]
    public void Requests_in_flight_in_parallel_are_all_resubmitted_and_run_in_parallel_again()
    {
        var first = new PatternDevice { Pattern = 0x11, ParallelRequestsPerQueue = 4, Gate = new ManualResetEventSlim(false) };
        using var h = new BackendHarness(first);
        h.Negotiate(inflight: true);
        Assert.Equal(0UL, h.SendMemTable());
        var (description, inflightFd) = GetInflight(h);
        using SafeFileHandle kept = inflightFd;
        Assert.Equal(0UL, SetInflight(h, kept, description));
        QueueEnd q = h.StartQueue(0, 0x0);
        FakeDriver driver = q.Driver;

        // Four requests inside the device at once, then the back-end dies with all of them in flight.
        var heads = new List<uint>();
        for (int i = 0; i < 4; i++)
            heads.Add(driver.AddChain((0x10000 + (0x100ul * (uint)i), 16, false), (0x20000 + (0x100ul * (uint)i), 16, true)));
        TestNative.WriteU64(q.Kick, 1);
        Assert.True(SpinWait.SpinUntil(() => first.Inside == 4, 5000), "the four requests never were in flight together");
        first.DieWhenReleased = true;
        first.Gate.Set();
        var second = new PatternDevice { Pattern = 0x22, ParallelRequestsPerQueue = 4, Rendezvous = 4 };
        h.Reconnect(second);
        Assert.Equal(0, first.Chains);
        Assert.Equal(0, driver.UsedIdx);

        h.Negotiate(inflight: true);
        Assert.Equal(0UL, h.SendMemTable());
        Assert.Equal(0UL, SetInflight(h, kept, description));
        QueueEnd q2 = h.StartQueue(0, 0x0, baseIndex: driver.UsedIdx, driver: driver);
        var order = new List<uint>();
        var deadline = DateTime.UtcNow.AddSeconds(15);
        while (order.Count < 4 && DateTime.UtcNow < deadline)
        {
            if (driver.TryTakeUsed(out uint id, out uint length))
            {
                order.Add(id);
                Assert.Equal(16u, length);
            }
            else
            {
                q2.WaitForCall(100);
            }
        }

        // Resubmitted heads go through the same parallel round, and are published in the order they were popped.
        Assert.Equal(heads, order);
        Assert.False(second.RendezvousMissed, "the resubmitted requests did not run in parallel");
        Assert.Equal(4, second.Chains);
        for (ulong buffer = 0x20000; buffer <= 0x20300; buffer += 0x100)
            Assert.All(h.ReadGuest(buffer, 16), b => Assert.Equal(0x22, b));
        ushort fresh = driver.AddChain((0x10400, 16, false), (0x20400, 16, true));
        Assert.True(q2.KickAndWaitForCall());
        Assert.True(driver.TryTakeUsed(out uint freshId, out _));
        Assert.Equal(fresh, freshId);
        Assert.Equal(5, driver.UsedIdx);
        Assert.Null(h.Ended);
    }

    [Fact]
    public void A_graceful_restart_leaves_nothing_to_resubmit()
    {
        using var h = new BackendHarness(new PatternDevice());
        h.Negotiate(inflight: true);
        Assert.Equal(0UL, h.SendMemTable());
        var (description, inflightFd) = GetInflight(h);
        using SafeFileHandle kept = inflightFd;
        Assert.Equal(0UL, SetInflight(h, kept, description));
        QueueEnd q = h.StartQueue(0, 0x0);
        q.Driver.AddChain((0x10000, 16, false), (0x20000, 16, true));
        Assert.True(q.KickAndWaitForCall());

        var second = new PatternDevice();
        h.Reconnect(second);
        h.Negotiate(inflight: true);
        Assert.Equal(0UL, h.SendMemTable());
        Assert.Equal(0UL, SetInflight(h, kept, description));
        h.StartQueue(0, 0x0, baseIndex: q.Driver.UsedIdx, driver: q.Driver);
        Thread.Sleep(100);
        Assert.Equal(0, second.Chains);
        Assert.Equal(1, q.Driver.UsedIdx);
    }

    [Fact]
    public void A_queue_started_on_a_used_ring_with_entries_calls_once_for_completions_whose_call_was_lost()
    {
        using var h = new BackendHarness();
        h.Negotiate(inflight: true);
        Assert.Equal(0UL, h.SendMemTable());
        // A previous back-end published 5 used entries; the front-end lost the call for the last of them.
        var driver = new FakeDriver(h.Memory, BackendHarness.QueueSize, 0, 0x1000, 0x2000);
        driver.StartAt(5);
        QueueEnd q = h.StartQueue(0, 0x0, baseIndex: 5, driver: driver);
        Assert.True(q.WaitForCall(), "no call at start");
        Assert.False(q.WaitForCall(200), "more than one call at start");

        // A fresh ring has nothing to announce.
        QueueEnd fresh = h.StartQueue(1, 0x10000);
        Assert.False(fresh.WaitForCall(200));
    }

    public static TheoryData<string> HostileDescriptions() =>
    [
        "size beyond the fd", "offset beyond the fd", "size too small for the queues", "more queues than the device",
        "unaligned offset", "not sealed", "queue size 0",
    ];

    [Theory]
    [MemberData(nameof(HostileDescriptions))]
    public void A_hostile_set_inflight_fd_is_refused_cleanly(string hostile)
    {
        using var h = new BackendHarness();
        h.Negotiate(inflight: true);
        using var area = new TestInflightArea(Queues, BackendHarness.QueueSize);
        using SafeFileHandle unsealed = TestNative.MemFd("unsealed", 1 << 16, @sealed: false);
        ulong size = InflightArea.AreaSize(Queues, BackendHarness.QueueSize);
        SafeFileHandle fd = area.Fd;
        VhostUserInflight description = hostile switch
        {
            "size beyond the fd" => new(size + 4096, 0, Queues, BackendHarness.QueueSize),
            "offset beyond the fd" => new(size, 64, Queues, BackendHarness.QueueSize),
            "size too small for the queues" => new(size - 1, 0, Queues, BackendHarness.QueueSize),
            "more queues than the device" => new(size, 0, 3, BackendHarness.QueueSize),
            "unaligned offset" => new(64, 4, 1, 1),
            "queue size 0" => new(size, 0, Queues, 0),
            _ => new(size, 0, Queues, BackendHarness.QueueSize),
        };
        if (hostile == "not sealed")
            fd = unsealed;
        Assert.NotEqual(0UL, SetInflight(h, fd, description));
        AssertStillServing(h);
        // Nothing was attached: a queue starts untracked.
        Assert.Equal(0UL, h.SendMemTable());
        h.StartQueue(0, 0x0);
        Assert.False(h.Backend.Dispatcher.Vring(0).Queue.IsTracked);
    }

    [Fact]
    public void Set_inflight_fd_on_a_started_queue_is_refused()
    {
        using var h = new BackendHarness();
        h.Negotiate(inflight: true);
        Assert.Equal(0UL, h.SendMemTable());
        h.StartQueue(0, 0x0);
        using var area = new TestInflightArea(Queues, BackendHarness.QueueSize);
        Assert.NotEqual(0UL, SetInflight(h, area.Fd, new VhostUserInflight(InflightArea.AreaSize(Queues, 64), 0, Queues, 64)));
        Assert.Contains("vring 0 is started", h.LogText, StringComparison.Ordinal);
        AssertStillServing(h);
    }

    [Theory]
    [InlineData("area queue size below the ring size", "InflightAreaTooSmall")]
    [InlineData("flag on a head beyond the ring", "InflightAreaCorrupt")]
    [InlineData("last batch head out of range", "InflightAreaCorrupt")]
    [InlineData("unknown version", "InflightAreaCorrupt")]
    public void A_queue_whose_area_is_unusable_does_not_start(string hostile, string error)
    {
        using var h = new BackendHarness();
        h.Negotiate(inflight: true);
        Assert.Equal(0UL, h.SendMemTable());
        ushort areaQueueSize = hostile.StartsWith("area", StringComparison.Ordinal) ? (ushort)32 : (ushort)128;
        using var area = new TestInflightArea(Queues, areaQueueSize);
        Span<byte> q = area.Queue(0);
        BitConverter.TryWriteBytes(q[8..], (ushort)1); // an initialised region
        switch (hostile)
        {
            case "flag on a head beyond the ring":
                q[16 + (16 * 100)] = 1; // inside the area (128 entries), beyond the 64-entry ring
                break;
            case "last batch head out of range":
                BitConverter.TryWriteBytes(q[12..], (ushort)127);
                BitConverter.TryWriteBytes(q[14..], (ushort)65535); // used_idx one behind the ring's 0
                break;
            case "unknown version":
                BitConverter.TryWriteBytes(q[8..], (ushort)0xbeef);
                break;
        }

        Assert.Equal(0UL, SetInflight(h, area.Fd, new VhostUserInflight(InflightArea.AreaSize(Queues, areaQueueSize), 0, Queues, areaQueueSize)));
        var driver = new FakeDriver(h.Memory, BackendHarness.QueueSize, 0, 0x1000, 0x2000);
        Assert.Equal(0UL, h.Request(FrontendRequest.SetVringNum, new VhostUserVringState(0, BackendHarness.QueueSize)));
        Assert.Equal(0UL, h.Request(FrontendRequest.SetVringAddr, BackendHarness.Address(0, 0)));
        Assert.Equal(0UL, h.Request(FrontendRequest.SetVringKick, new VhostUserU64(0), [h.EventFd()]));
        Assert.NotEqual(0UL, h.Request(FrontendRequest.SetVringEnable, new VhostUserVringState(0, 1)));
        Assert.Contains(error, h.LogText, StringComparison.Ordinal);
        Assert.False(h.Backend.Dispatcher.Vring(0).IsStarted);
        Assert.Equal(0, driver.UsedIdx);
        AssertStillServing(h);
    }
}
