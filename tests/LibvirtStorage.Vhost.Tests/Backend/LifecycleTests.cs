using System.Runtime.InteropServices;
using LibvirtStorage.Vhost.Backend;
using LibvirtStorage.Vhost.Protocol;
using LibvirtStorage.Vhost.Tests.Protocol;
using Microsoft.Extensions.Logging.Abstractions;
using Xunit;

namespace LibvirtStorage.Vhost.Tests.Backend;

/// <summary>Stopping: disconnects, cancellation and disposal wake and join the workers, unmap memory and close every fd.</summary>
[Collection(nameof(FdCountCollection))]
public class LifecycleTests
{
    private const ulong Data = 0x20000;

    private static QueueEnd Running(BackendHarness h)
    {
        QueueEnd q = h.StartServing(eventIdx: true);
        h.StartQueue(1, 0x4000, eventIdx: true);
        return q;
    }

    [Fact]
    public void A_disconnect_with_a_request_in_flight_ends_cleanly()
    {
        var gate = new ManualResetEventSlim();
        var device = new PatternDevice { Gate = gate };
        var h = new BackendHarness(device);
        try
        {
            QueueEnd q = Running(h);
            q.Driver.AddChain((Data, 64, true));
            TestNative.WriteU64(q.Kick, 1);
            Assert.True(device.Entered.Wait(5000));

            h.Frontend.Dispose(); // the front-end goes away while the device holds the request
            Thread.Sleep(50);
            gate.Set();
            Assert.True(h.WaitEnded(), "Run did not return after the disconnect");
            Assert.Equal(VhostUserProtocolError.PeerClosed, h.Ended!.Error);
            Assert.False(h.Backend.Dispatcher.Vring(0).IsStarted);
            Assert.Equal(1, device.Chains);
        }
        finally
        {
            gate.Set();
            h.Dispose();
        }
    }

    [Fact]
    public void GET_VRING_BASE_waits_for_the_request_in_flight()
    {
        var gate = new ManualResetEventSlim();
        var device = new PatternDevice { Gate = gate };
        using var h = new BackendHarness(device);
        QueueEnd q = Running(h);
        q.Driver.AddChain((Data, 64, true));
        TestNative.WriteU64(q.Kick, 1);
        Assert.True(device.Entered.Wait(5000));

        h.Frontend.Send(FrontendRequest.GetVringBase, new VhostUserVringState(0, 0));
        var release = new Thread(() =>
        {
            Thread.Sleep(100);
            gate.Set();
        });
        release.Start();
        var state = MemoryMarshal.Read<VhostUserVringState>(h.Frontend.ReceiveReply(FrontendRequest.GetVringBase));
        Assert.True(gate.IsSet, "GET_VRING_BASE replied before the worker finished its batch");
        Assert.Equal(1u, state.Num);
        Assert.True(q.Driver.TryTakeUsed(out _, out uint length));
        Assert.Equal(64u, length);
        release.Join();
    }

    [Fact]
    public void Cancellation_breaks_the_connection_and_stops_the_workers()
    {
        using var cts = new CancellationTokenSource();
        var (frontendSocket, backendSocket) = UnixSocket.CreatePair();
        using var frontend = new VhostUserFrontendChannel(frontendSocket);
        using var backend = new VhostUserBackend(backendSocket, new PatternDevice(), NullLogger.Instance);
        VhostUserProtocolException? ended = null;
        var run = new Thread(() => ended = backend.Run(cts.Token));
        run.Start();
        frontend.Send(FrontendRequest.GetQueueNum);
        Assert.Equal(2UL, frontend.ReceiveU64Reply(FrontendRequest.GetQueueNum));
        cts.Cancel();
        Assert.True(run.Join(5000));
        Assert.Contains("shutting down", ended!.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Dispose_while_running_joins_the_workers()
    {
        var h = new BackendHarness();
        QueueEnd q = Running(h);
        q.Driver.AddChain((Data, 64, true));
        Assert.True(q.KickAndWaitForCall());
        h.Dispose();
        Assert.NotNull(h.Ended);
        Assert.False(h.Backend.Dispatcher.Vring(0).IsStarted);
        Assert.False(h.Backend.Dispatcher.Vring(1).IsStarted);
    }

    [Fact]
    public void No_fd_or_thread_is_left_behind()
    {
        Run(); // warm up: first-use fds of the runtime (libc handles, thread pool) are not ours
        int before = TestNative.OpenFdCount();
        for (int i = 0; i < 5; i++)
            Run();
        // Counted before any collection, so a handle dropped without Dispose (closed only by its finalizer) shows.
        Assert.True(Directory.GetFiles("/proc/self/fd").Length <= before, "fds were left for the finalizer to close");
        Assert.Equal(before, TestNative.OpenFdCount());

        static void Run()
        {
            using var h = new BackendHarness();
            QueueEnd q = Running(h);
            q.Driver.AddChain((Data, 64, true));
            Assert.True(q.KickAndWaitForCall());
            Assert.Equal(0UL, h.SendMemTable()); // a second mapping; the first is unmapped
            h.Frontend.Send(FrontendRequest.GetVringBase, new VhostUserVringState(1, 0));
            h.Frontend.ReceiveReply(FrontendRequest.GetVringBase);
            h.Frontend.Send(FrontendRequest.SetVringKick, new VhostUserU64(0x100)); // polling, without NEED_REPLY: breaks
            Assert.True(h.WaitEnded());
        }
    }

    [Fact]
    public void Memory_tables_swapped_while_the_guest_submits_never_lose_a_request()
    {
        using var h = new BackendHarness();
        QueueEnd q = h.StartServing(eventIdx: true);
        const int Requests = 400;
        string? failure = null;
        var guest = new Thread(() =>
        {
            for (int i = 0; i < Requests && failure is null; i++)
            {
                ushort head = q.Driver.AddChain((Data + ((ulong)(i % 16) * 0x100), 64, true));
                if (!q.KickAndWaitForCall() || !q.Driver.TryTakeUsed(out uint id, out uint length) || id != head || length != 64)
                    failure = $"request {i} was not completed";
                q.Driver.SetUsedEvent(q.Driver.LastUsedSeen);
            }
        });
        guest.Start();
        int swaps = 0;
        while (guest.IsAlive)
        {
            Assert.Equal(0UL, h.SendMemTable()); // a fresh mapping each time; the old one goes after the last lease
            swaps++;
        }

        guest.Join();
        Assert.True(failure is null, $"{failure} (after {swaps} swaps); log:\n{h.LogText}");
        Assert.Equal(Requests, h.Device.Chains);
    }
}
