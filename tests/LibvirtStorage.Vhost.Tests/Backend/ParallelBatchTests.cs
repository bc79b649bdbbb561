using System.Runtime.InteropServices;
using LibvirtStorage.Vhost.Protocol;
using LibvirtStorage.Vhost.Tests.Protocol;
using LibvirtStorage.Vhost.Tests.Virtqueue;
using Xunit;

namespace LibvirtStorage.Vhost.Tests.Backend;

/// <summary>
/// A queue whose device asks for several requests at once (<see cref="IVhostUserDevice.ParallelRequestsPerQueue"/>):
/// the chains of one batch run on the queue's I/O threads at the same time, and the ring sees exactly what it saw
/// when they ran one by one: every head used once with its own length, stops that wait, breaks that stay clean.
/// </summary>
public sealed class ParallelBatchTests
{
    private const ulong Data = 0x20000;

    private static (BackendHarness H, QueueEnd Q) Serve(PatternDevice device, bool eventIdx = true)
    {
        var h = new BackendHarness(device);
        return (h, h.StartServing(eventIdx));
    }

    private static List<(uint Head, uint Length)> TakeUsed(FakeDriver driver, QueueEnd q, int expected)
    {
        var used = new List<(uint, uint)>();
        DateTime deadline = DateTime.UtcNow.AddSeconds(10);
        while (used.Count < expected && DateTime.UtcNow < deadline)
        {
            if (driver.TryTakeUsed(out uint head, out uint length))
                used.Add((head, length));
            else
                q.WaitForCall(100);
        }

        return used;
    }

    [Fact]
    public void Requests_of_one_queue_are_inside_the_device_at_the_same_time()
    {
        var device = new PatternDevice { ParallelRequestsPerQueue = 4, Rendezvous = 4 };
        var (h, q) = Serve(device);
        using (h)
        {
            for (int i = 0; i < 4; i++)
                q.Driver.AddChain((Data + (0x100ul * (uint)i), 64, true));
            Assert.True(q.KickAndWaitForCall(15000), h.LogText);
            Assert.False(device.RendezvousMissed, "the four requests never were in the device together");
            Assert.Equal(4, device.MaxInside);
            Assert.Equal(0, device.SlotOverlaps);
            Assert.Equal(4, TakeUsed(q.Driver, q, 4).Count);
        }
    }

    [Fact]
    public void A_serial_queue_never_has_two_requests_in_the_device()
    {
        var device = new PatternDevice { ParallelRequestsPerQueue = 1 };
        var (h, q) = Serve(device);
        using (h)
        {
            for (int i = 0; i < 8; i++)
                q.Driver.AddChain((Data + (0x100ul * (uint)i), 64, true));
            Assert.True(q.KickAndWaitForCall(), h.LogText);
            Assert.Equal(8, TakeUsed(q.Driver, q, 8).Count);
            Assert.Equal(1, device.MaxInside);
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Many_requests_each_get_one_used_entry_with_their_own_length(bool eventIdx)
    {
        var device = new PatternDevice { ParallelRequestsPerQueue = 4 };
        var (h, q) = Serve(device, eventIdx);
        using (h)
        {
            var expected = new Dictionary<uint, uint>();
            var seen = new List<(uint Head, uint Length)>();
            // 20 batches of up to 48 chains on a 64-entry ring; lengths differ per chain, so a head published with
            // another chain's result shows.
            for (int batch = 0; batch < 20; batch++)
            {
                int count = 1 + ((batch * 7) % 48);
                expected.Clear();
                for (int i = 0; i < count; i++)
                {
                    uint length = 8 + (uint)((i * 13) % 200);
                    ushort head = q.Driver.AddChain((Data + (0x100ul * (uint)i), length, true));
                    expected[head] = length;
                }

                TestNative.WriteU64(q.Kick, 1);
                List<(uint Head, uint Length)> used = TakeUsed(q.Driver, q, count);
                Assert.Equal(count, used.Count);
                foreach ((uint head, uint length) in used)
                {
                    Assert.True(expected.Remove(head, out uint want), $"head {head} used twice or never made available");
                    Assert.Equal(want, length);
                }

                seen.AddRange(used);
            }

            Assert.Equal(0, device.SlotOverlaps);
            Assert.False(q.Driver.TryTakeUsed(out _, out _));
            Assert.Null(h.Backend.Dispatcher.Vring(0).Worker!.BrokenReason);
        }
    }

    [Fact]
    public void GET_VRING_BASE_waits_for_every_request_of_the_batch()
    {
        var gate = new ManualResetEventSlim();
        var device = new PatternDevice { ParallelRequestsPerQueue = 4, Gate = gate };
        var (h, q) = Serve(device);
        using (h)
        {
            for (int i = 0; i < 6; i++)
                q.Driver.AddChain((Data + (0x100ul * (uint)i), 64, true));
            TestNative.WriteU64(q.Kick, 1);
            Assert.True(SpinWait.SpinUntil(() => device.Inside == 4, 5000), "four requests never were in flight");

            h.Frontend.Send(FrontendRequest.GetVringBase, new VhostUserVringState(0, 0));
            var release = new Thread(() =>
            {
                Thread.Sleep(100);
                gate.Set();
            });
            release.Start();
            var state = MemoryMarshal.Read<VhostUserVringState>(h.Frontend.ReceiveReply(FrontendRequest.GetVringBase));
            Assert.True(gate.IsSet, "GET_VRING_BASE replied before the batch finished");
            Assert.Equal(6u, state.Num);
            Assert.Equal(6, device.Chains);
            Assert.Equal(6, TakeUsed(q.Driver, q, 6).Count);
            release.Join();
        }
    }

    [Fact]
    public void A_device_exception_in_one_of_several_parallel_requests_breaks_the_queue_cleanly()
    {
        var device = new PatternDevice { ParallelRequestsPerQueue = 4, Rendezvous = 4 };
        var (h, q) = Serve(device);
        using (h)
        {
            var err = h.EventFd();
            Assert.Equal(0UL, h.Request(FrontendRequest.SetVringErr, new VhostUserU64(0), [err]));
            var heads = new List<ushort>();
            for (int i = 0; i < 4; i++)
                heads.Add(q.Driver.AddChain((Data + (0x100ul * (uint)i), 64, true)));
            device.FailHead = heads[2];
            TestNative.WriteU64(q.Kick, 1);

            Assert.True(BackendHarness.WaitReadable(err, 15000), h.LogText);
            Assert.Contains($"queue 0 broken: device failed: InvalidOperationException: device bug on head {heads[2]}", h.LogText, StringComparison.Ordinal);
            // The three that completed alongside it are published (their I/O is done); the failed one is not.
            List<(uint Head, uint Length)> used = TakeUsed(q.Driver, q, 3);
            Assert.Equal([heads[0], heads[1], heads[3]], used.Select(u => (ushort)u.Head).Order().ToList());
            Assert.All(used, u => Assert.Equal(64u, u.Length));

            // Nothing more is served on the broken queue; the connection goes on.
            q.Driver.AddChain((Data, 64, true));
            TestNative.WriteU64(q.Kick, 1);
            Thread.Sleep(200);
            Assert.Equal(3, device.Chains);
            Assert.False(q.Driver.TryTakeUsed(out _, out _));
            h.Frontend.Send(FrontendRequest.GetQueueNum);
            Assert.Equal(2UL, h.Frontend.ReceiveU64Reply(FrontendRequest.GetQueueNum));
        }
    }

    [Fact]
    public void Two_queues_each_run_their_requests_in_parallel()
    {
        var device = new PatternDevice { ParallelRequestsPerQueue = 3, Rendezvous = 6 };
        var (h, q0) = Serve(device);
        using (h)
        {
            QueueEnd q1 = h.StartQueue(1, 0x4000, eventIdx: true);
            for (int i = 0; i < 3; i++)
            {
                q0.Driver.AddChain((Data + (0x100ul * (uint)i), 64, true));
                q1.Driver.AddChain((Data + 0x1000 + (0x100ul * (uint)i), 64, true));
            }

            TestNative.WriteU64(q0.Kick, 1);
            TestNative.WriteU64(q1.Kick, 1);
            Assert.Equal(3, TakeUsed(q0.Driver, q0, 3).Count);
            Assert.Equal(3, TakeUsed(q1.Driver, q1, 3).Count);
            Assert.False(device.RendezvousMissed, "six requests (3 per queue) never were in the device together");
            Assert.Equal(0, device.SlotOverlaps);
        }
    }
}
