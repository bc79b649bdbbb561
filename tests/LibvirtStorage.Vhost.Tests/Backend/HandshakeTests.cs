using System.Runtime.InteropServices;
using LibvirtStorage.Vhost.Backend;
using LibvirtStorage.Vhost.Protocol;
using LibvirtStorage.Vhost.Tests.Protocol;
using Xunit;

namespace LibvirtStorage.Vhost.Tests.Backend;

/// <summary>A QEMU-shaped front-end sets the back-end up over a socketpair; the test then plays the guest driver.</summary>
[Collection(nameof(FdCountCollection))]
public class HandshakeTests
{
    private const ulong Ring0 = 0x0;
    private const ulong Ring1 = 0x4000;
    private const ulong Data = 0x20000;

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void A_posted_buffer_is_filled_completed_and_the_guest_called(bool eventIdx)
    {
        using var h = new BackendHarness();
        QueueEnd q = h.StartServing(eventIdx);

        ushort head = q.Driver.AddChain((Data, 16, false), (Data + 0x1000, 512, true));
        Assert.True(q.KickAndWaitForCall(), $"no call from the back-end; log:\n{h.LogText}");

        Assert.True(q.Driver.TryTakeUsed(out uint id, out uint length));
        Assert.Equal(head, (ushort)id);
        Assert.Equal(512u, length);
        Assert.All(h.ReadGuest(Data + 0x1000, 512), b => Assert.Equal(0xA5, b));
        Assert.All(h.ReadGuest(Data, 16), b => Assert.Equal(0, b)); // the device-readable buffer is untouched
        Assert.Equal(PatternDevice.DeviceFeature | VhostUserRequestDispatcher.FrameworkFeatures & ~(eventIdx ? 0 : VhostUserRequestDispatcher.VirtioRingFEventIdx), h.Device.AckedFeatures);
    }

    [Fact]
    public void Both_queues_serve_many_requests_including_indirect_chains()
    {
        using var h = new BackendHarness();
        h.Negotiate(eventIdx: true);
        Assert.Equal(0UL, h.SendMemTable());
        QueueEnd q0 = h.StartQueue(0, Ring0, eventIdx: true);
        QueueEnd q1 = h.StartQueue(1, Ring1, eventIdx: true);

        for (int round = 0; round < 100; round++)
        {
            foreach (QueueEnd q in new[] { q0, q1 })
            {
                ulong buffer = Data + ((ulong)q.Index * 0x10000) + ((ulong)(round % 8) * 0x1000);
                ushort head = round % 3 == 0
                    ? q.Driver.AddIndirectChain(Data + 0x40000 + ((ulong)q.Index * 0x1000), (buffer, 16, false), (buffer + 0x100, 256, true))
                    : q.Driver.AddChain((buffer, 16, false), (buffer + 0x100, 256, true));
                Assert.True(q.KickAndWaitForCall(), $"round {round} queue {q.Index}: no call; log:\n{h.LogText}");
                Assert.True(q.Driver.TryTakeUsed(out uint id, out uint length));
                Assert.Equal((head, 256u), ((ushort)id, length));
                q.Driver.SetUsedEvent(q.Driver.LastUsedSeen); // as Linux's virtqueue_enable_cb: call me at the next one
            }
        }

        Assert.Equal(200, h.Device.Chains);
    }

    [Fact]
    public void GET_VRING_BASE_stops_the_worker_and_a_restart_continues_from_the_returned_index()
    {
        using var h = new BackendHarness();
        QueueEnd q = h.StartServing();
        for (int i = 0; i < 3; i++)
        {
            q.Driver.AddChain((Data, 64, true));
            Assert.True(q.KickAndWaitForCall());
            Assert.True(q.Driver.TryTakeUsed(out _, out _));
        }

        h.Frontend.Send(FrontendRequest.GetVringBase, new VhostUserVringState(0, 0));
        var state = MemoryMarshal.Read<VhostUserVringState>(h.Frontend.ReceiveReply(FrontendRequest.GetVringBase));
        Assert.Equal((0u, 3u), (state.Index, state.Num));
        Assert.False(h.Backend.Dispatcher.Vring(0).IsStarted);

        // Stopped: a new buffer and a kick on the old fd are not served.
        q.Driver.AddChain((Data, 64, true));
        TestNative.WriteU64(q.Kick, 1);
        Assert.False(q.WaitForCall(300));
        Assert.Equal(3, h.Device.Chains);

        // QEMU's restart: base, a new kick fd, enable. The pending buffer is served.
        Assert.Equal(0UL, h.Request(FrontendRequest.SetVringBase, new VhostUserVringState(0, state.Num)));
        var kick = h.EventFd();
        Assert.Equal(0UL, h.Request(FrontendRequest.SetVringKick, new VhostUserU64(0), [kick]));
        Assert.True(q.WaitForCall(), $"log:\n{h.LogText}");
        Assert.True(q.Driver.TryTakeUsed(out _, out uint length));
        Assert.Equal(64u, length);
        Assert.Equal(4, h.Device.Chains);
    }

    [Fact]
    public void A_second_SET_MEM_TABLE_while_running_is_swapped_in_and_the_rings_revalidated()
    {
        using var h = new BackendHarness();
        QueueEnd q = h.StartServing();
        q.Driver.AddChain((Data, 64, true));
        Assert.True(q.KickAndWaitForCall());
        Assert.True(q.Driver.TryTakeUsed(out _, out _));

        // The same memory again (QEMU re-sends the table on hotplug): the queue goes on.
        Assert.Equal(0UL, h.SendMemTable());
        q.Driver.AddChain((Data + 0x100, 64, true));
        Assert.True(q.KickAndWaitForCall(), $"log:\n{h.LogText}");
        Assert.True(q.Driver.TryTakeUsed(out _, out uint length));
        Assert.Equal(64u, length);

        // A table that no longer holds the rings: the queue is marked broken on its next batch, nothing is touched.
        Assert.Equal(0UL, h.SendMemTable(guestAddress: 0x1000_0000));
        q.Driver.AddChain((Data + 0x200, 64, true));
        TestNative.WriteU64(q.Kick, 1);
        Assert.False(q.WaitForCall(300));
        Assert.Contains("rings outside the new memory table", h.LogText, StringComparison.Ordinal);
        Assert.Equal(2, h.Device.Chains);
        Assert.Null(h.Ended);
    }

    [Fact]
    public void Memory_slots_can_be_added_and_removed()
    {
        using var h = new BackendHarness();
        h.Negotiate();
        h.Frontend.Send(FrontendRequest.GetMaxMemSlots);
        Assert.Equal(VhostUserRequestDispatcher.MaxMemSlots, h.Frontend.ReceiveU64Reply(FrontendRequest.GetMaxMemSlots));
        var low = new VhostUserSingleMemoryRegion(new VhostUserMemoryRegion(0, BackendHarness.MemorySize, BackendHarness.UserBase, 0));
        Assert.Equal(0UL, h.Request(FrontendRequest.AddMemReg, low, [h.MemFd]));
        var high = new VhostUserSingleMemoryRegion(new VhostUserMemoryRegion(0x4000_0000, 0x1000, 0x7e00_0000_0000, 0));
        Assert.Equal(0UL, h.Request(FrontendRequest.AddMemReg, high, [h.MemFd]));
        Assert.NotEqual(0UL, h.Request(FrontendRequest.AddMemReg, high, [h.MemFd])); // overlaps itself
        Assert.Equal(0UL, h.Request(FrontendRequest.RemMemReg, high));
        Assert.NotEqual(0UL, h.Request(FrontendRequest.RemMemReg, high)); // already gone

        QueueEnd q = h.StartQueue(0, Ring0);
        q.Driver.AddChain((Data, 32, true));
        Assert.True(q.KickAndWaitForCall(), $"log:\n{h.LogText}");
    }

    [Fact]
    public void Config_space_is_read_through_the_device_and_writes_it_refuses_are_nacked()
    {
        using var h = new BackendHarness();
        h.Negotiate();
        Span<byte> payload = stackalloc byte[VhostUserConfigHeader.MaxPayloadSize];
        int length = VhostUserFrontendChannel.EncodeConfig(payload, 4, 0, new byte[8]);
        h.Frontend.Send(FrontendRequest.GetConfig, payload[..length]);
        var reply = h.Frontend.ReceiveReply(FrontendRequest.GetConfig);
        Assert.Equal(new byte[] { 5, 6, 7, 8, 9, 10, 11, 12 }, reply[VhostUserConfigHeader.Size..].ToArray());

        length = VhostUserFrontendChannel.EncodeConfig(payload, 250, 0, new byte[6]);
        h.Frontend.Send(FrontendRequest.GetConfig, payload[..length]);
        Assert.Equal(0, h.Frontend.ReceiveReply(FrontendRequest.GetConfig).Length); // outside the device's 16 bytes

        length = VhostUserFrontendChannel.EncodeConfig(payload, 0, 0, new byte[4]);
        h.Frontend.Send(FrontendRequest.SetConfig, payload[..length], needReply: true);
        Assert.NotEqual(0UL, h.Frontend.ReceiveU64Reply(FrontendRequest.SetConfig));
        Assert.Null(h.Ended);
    }

    [Fact]
    public void RESET_DEVICE_stops_the_queues_and_resets_the_device()
    {
        using var h = new BackendHarness();
        QueueEnd q = h.StartServing();
        Assert.True(h.Backend.Dispatcher.Vring(0).IsStarted);
        Assert.Equal(0UL, h.Request(FrontendRequest.ResetDevice));
        Assert.False(h.Backend.Dispatcher.Vring(0).IsStarted);
        Assert.Equal(1, h.Device.Resets);
        q.Driver.AddChain((Data, 32, true));
        TestNative.WriteU64(q.Kick, 1);
        Assert.False(q.WaitForCall(200));
    }
}
