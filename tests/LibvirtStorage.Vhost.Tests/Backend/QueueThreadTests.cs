using System.Runtime.InteropServices;
using LibvirtStorage.Vhost.Backend;
using LibvirtStorage.Vhost.Protocol;
using LibvirtStorage.Vhost.Tests.Protocol;
using LibvirtStorage.Vhost.Tests.Virtqueue;
using Xunit;

namespace LibvirtStorage.Vhost.Tests.Backend;

/// <summary>
/// Fewer queue threads than queues (<see cref="VhostUserRequestDispatcher.QueueThreads"/>): queue i on thread
/// i % N, starts and stops through the thread's control fd, a broken queue leaving its thread to the others.
/// </summary>
[Collection(nameof(FdCountCollection))] // opens eventfds and sockets: not while another class counts fds
public sealed class QueueThreadTests
{
    private const int Queues = 4;
    private const ulong Data = 0x40000;

    private static ulong RingBase(int queue) => (ulong)queue * 0x4000;

    private static (BackendHarness Harness, QueueEnd[] Queues) Serving(int queueThreads, PatternDevice? device = null, int queues = Queues)
    {
        var h = new BackendHarness(device ?? new PatternDevice { NumQueues = Queues }, queueThreads: queueThreads);
        h.Negotiate();
        Assert.Equal(0UL, h.SendMemTable());
        var ends = new QueueEnd[queues];
        for (int i = 0; i < queues; i++)
            ends[i] = h.StartQueue(i, RingBase(i));
        return (h, ends);
    }

    private static void RoundTrip(BackendHarness h, QueueEnd q, int round)
    {
        ulong buffer = Data + ((ulong)q.Index * 0x8000) + ((ulong)(round % 8) * 0x1000);
        ushort head = q.Driver.AddChain((buffer, 16, false), (buffer + 0x100, 256, true));
        Assert.True(q.KickAndWaitForCall(), $"round {round} queue {q.Index}: no call; log:\n{h.LogText}");
        Assert.True(q.Driver.TryTakeUsed(out uint id, out uint length));
        Assert.Equal((head, 256u), ((ushort)id, length));
    }

    [Theory]
    [InlineData(1, 1)]
    [InlineData(2, 2)]
    [InlineData(3, 3)]
    [InlineData(0, 4)]
    [InlineData(8, 4)]
    public void Four_queues_complete_their_requests_on_at_most_the_configured_threads(int queueThreads, int expectedThreads)
    {
        var (h, queues) = Serving(queueThreads);
        using (h)
        {
            for (int round = 0; round < 50; round++)
            {
                foreach (QueueEnd q in queues)
                    RoundTrip(h, q, round);
            }

            Assert.Equal(4 * 50, h.Device.Chains);
            Assert.Equal(expectedThreads, h.Backend.Dispatcher.RunningQueueThreads);
            for (int i = 0; i < Queues; i++)
                Assert.Equal(h.Backend.Dispatcher.Vring(i % expectedThreads).Worker!.Host, h.Backend.Dispatcher.Vring(i).Worker!.Host);
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public void Interleaved_kicks_on_a_shared_thread_are_all_served(int queueThreads)
    {
        var (h, queues) = Serving(queueThreads);
        using (h)
        {
            for (int round = 0; round < 30; round++)
            {
                // Every queue posts and kicks before any call is awaited: one poll round sees several kicks.
                var heads = new ushort[Queues];
                foreach (QueueEnd q in queues)
                {
                    ulong buffer = Data + ((ulong)q.Index * 0x8000);
                    heads[q.Index] = q.Driver.AddChain((buffer, 64, true));
                    TestNative.WriteU64(q.Kick, 1);
                }

                foreach (QueueEnd q in queues)
                {
                    Assert.True(q.WaitForCall(), $"round {round} queue {q.Index}: no call; log:\n{h.LogText}");
                    Assert.True(q.Driver.TryTakeUsed(out uint id, out _));
                    Assert.Equal(heads[q.Index], (ushort)id);
                }
            }

            Assert.Equal(Queues * 30, h.Device.Chains);
        }
    }

    [Fact]
    public void A_queue_under_a_continuous_stream_does_not_starve_the_others_on_its_thread()
    {
        var (h, queues) = Serving(queueThreads: 1);
        using (h)
        {
            int streamed = 0;
            using var stop = new CancellationTokenSource();
            // Queue 0's driver keeps up to 32 requests posted and kicks after each, as fast as it can.
            var streamer = new Thread(() =>
            {
                QueueEnd q = queues[0];
                int inFlight = 0;
                while (!stop.IsCancellationRequested)
                {
                    while (q.Driver.TryTakeUsed(out _, out _))
                    {
                        inFlight--;
                        Interlocked.Increment(ref streamed);
                    }

                    if (inFlight < 32)
                    {
                        q.Driver.AddChain((Data, 64, true));
                        TestNative.WriteU64(q.Kick, 1);
                        inFlight++;
                    }
                }
            }) { IsBackground = true, Name = "test streamer" };
            streamer.Start();
            try
            {
                for (int round = 0; round < 20; round++)
                {
                    for (int q = 1; q < Queues; q++)
                        RoundTrip(h, queues[q], round);
                }

                // On a loaded machine the other queues may finish before the streamer's first completion: the
                // point is that both make progress, so give the stream its chance before stopping it.
                SpinWait.SpinUntil(() => Volatile.Read(ref streamed) > 0, TimeSpan.FromSeconds(10));
            }
            finally
            {
                stop.Cancel();
                Assert.True(streamer.Join(5000));
            }

            Assert.True(streamed > 0, "the streaming queue was not served");
        }
    }

    [Fact]
    public void A_queue_with_buffers_posted_before_its_kick_fd_is_served_when_it_starts_on_a_busy_thread()
    {
        var (h, queues) = Serving(queueThreads: 1, queues: 1);
        using (h)
        {
            RoundTrip(h, queues[0], 0);
            var late = new FakeDriver(h.Memory, BackendHarness.QueueSize, RingBase(1), RingBase(1) + 0x1000, RingBase(1) + 0x2000);
            late.AddChain((Data + 0x8000, 64, true));
            QueueEnd q1 = h.StartQueue(1, RingBase(1), driver: late);
            Assert.True(q1.WaitForCall(), h.LogText); // the first batch, with no kick
            Assert.True(late.TryTakeUsed(out _, out uint length));
            Assert.Equal(64u, length);
        }
    }

    [Fact]
    public void GET_VRING_BASE_of_one_queue_leaves_the_others_on_its_thread_running()
    {
        var (h, queues) = Serving(queueThreads: 1);
        using (h)
        {
            RoundTrip(h, queues[1], 0);
            RoundTrip(h, queues[1], 1);
            h.Frontend.Send(FrontendRequest.GetVringBase, new VhostUserVringState(1, 0));
            var state = MemoryMarshal.Read<VhostUserVringState>(h.Frontend.ReceiveReply(FrontendRequest.GetVringBase));
            Assert.Equal((1u, 2u), (state.Index, state.Num));
            Assert.False(h.Backend.Dispatcher.Vring(1).IsStarted);
            Assert.Equal(1, h.Backend.Dispatcher.RunningQueueThreads);

            // The stopped queue is not served; the others on the same thread are.
            queues[1].Driver.AddChain((Data + 0x8000, 64, true));
            TestNative.WriteU64(queues[1].Kick, 1);
            for (int round = 0; round < 10; round++)
            {
                RoundTrip(h, queues[0], round);
                RoundTrip(h, queues[2], round);
                RoundTrip(h, queues[3], round);
            }

            Assert.False(queues[1].WaitForCall(100));

            // Restarted (QEMU's order: base, new kick fd): the pending buffer is served on the same thread.
            Assert.Equal(0UL, h.Request(FrontendRequest.SetVringBase, new VhostUserVringState(1, state.Num)));
            Assert.Equal(0UL, h.Request(FrontendRequest.SetVringKick, new VhostUserU64(1), [h.EventFd()]));
            Assert.True(queues[1].WaitForCall(), h.LogText);
            Assert.True(queues[1].Driver.TryTakeUsed(out _, out uint length));
            Assert.Equal(64u, length);
            Assert.Equal(1, h.Backend.Dispatcher.RunningQueueThreads);
        }
    }

    [Fact]
    public void GET_VRING_BASE_on_a_shared_thread_waits_for_the_batch_in_progress()
    {
        using var gate = new ManualResetEventSlim();
        var device = new PatternDevice { NumQueues = Queues, Gate = gate };
        var (h, queues) = Serving(queueThreads: 2, device);
        using (h)
        {
            queues[2].Driver.AddChain((Data, 64, true));
            TestNative.WriteU64(queues[2].Kick, 1);
            Assert.True(device.Entered.Wait(5000));

            // Queue 2 shares thread 0 with queue 0; stopping it must wait for its request.
            h.Frontend.Send(FrontendRequest.GetVringBase, new VhostUserVringState(2, 0));
            Thread.Sleep(200);
            Assert.True(h.Backend.Dispatcher.Vring(2).IsStarted, "GET_VRING_BASE returned while the batch ran");
            gate.Set();
            var state = MemoryMarshal.Read<VhostUserVringState>(h.Frontend.ReceiveReply(FrontendRequest.GetVringBase));
            Assert.Equal((2u, 1u), (state.Index, state.Num));
            Assert.True(queues[2].Driver.TryTakeUsed(out _, out uint length));
            Assert.Equal(64u, length);
            RoundTrip(h, queues[0], 0);
        }
    }

    [Fact]
    public void SET_VRING_CALL_on_a_shared_thread_swaps_the_fd_and_the_thread_goes_on()
    {
        var (h, queues) = Serving(queueThreads: 1);
        using (h)
        {
            RoundTrip(h, queues[0], 0);
            var newCall = h.EventFd();
            Assert.Equal(0UL, h.Request(FrontendRequest.SetVringCall, new VhostUserU64(0), [newCall]));
            Assert.True(h.Backend.Dispatcher.Vring(0).IsStarted);
            // The restarted queue calls once at start (its used ring is not empty): take that call first.
            Assert.True(BackendHarness.WaitReadable(newCall, 5000), h.LogText);
            TestNative.ReadU64(newCall);

            queues[0].Driver.AddChain((Data, 64, true));
            TestNative.WriteU64(queues[0].Kick, 1);
            Assert.True(BackendHarness.WaitReadable(newCall, 5000), h.LogText);
            Assert.False(queues[0].WaitForCall(100), "the old call fd was signalled");
            for (int q = 1; q < Queues; q++)
                RoundTrip(h, queues[q], 1);
            Assert.Equal(1, h.Backend.Dispatcher.RunningQueueThreads);
        }
    }

    [Fact]
    public void A_broken_queue_on_a_shared_thread_leaves_the_others_working()
    {
        var (h, queues) = Serving(queueThreads: 1);
        using (h)
        {
            var err = h.EventFd();
            Assert.Equal(0UL, h.Request(FrontendRequest.SetVringErr, new VhostUserU64(1), [err]));
            queues[1].Driver.SetAvailIdx(1000); // more than the queue size ahead
            TestNative.WriteU64(queues[1].Kick, 1);
            Assert.True(BackendHarness.WaitReadable(err, 5000), h.LogText);
            Assert.Contains("queue 1 broken: driver ring error: AvailIndexTooFar", h.LogText, StringComparison.Ordinal);

            // Kicks on the broken queue are no longer read; the thread serves the rest.
            TestNative.WriteU64(queues[1].Kick, 1);
            for (int round = 0; round < 10; round++)
            {
                RoundTrip(h, queues[0], round);
                RoundTrip(h, queues[2], round);
                RoundTrip(h, queues[3], round);
            }

            Assert.Equal(30, h.Device.Chains);
        }
    }

    [Fact]
    public void Disconnect_and_dispose_join_every_queue_thread()
    {
        var (h, queues) = Serving(queueThreads: 2);
        RoundTrip(h, queues[3], 0);
        Assert.Equal(2, h.Backend.Dispatcher.RunningQueueThreads);
        h.Frontend.Dispose();
        Assert.True(h.WaitEnded());
        Assert.Equal(0, h.Backend.Dispatcher.RunningQueueThreads);
        h.Dispose();
        for (int i = 0; i < Queues; i++)
            Assert.False(h.Backend.Dispatcher.Vring(i).IsStarted);
    }

    [Fact]
    public void A_negative_thread_count_is_refused()
    {
        var (frontend, backend) = UnixSocket.CreatePair();
        using (frontend)
        {
            Assert.Throws<ArgumentOutOfRangeException>(() =>
                new VhostUserBackend(backend, new PatternDevice(), Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance, queueThreads: -1));
            backend.Dispose();
        }
    }
}
