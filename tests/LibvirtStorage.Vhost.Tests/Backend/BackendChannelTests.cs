using System.Diagnostics;
using LibvirtStorage.Vhost.Backend;
using LibvirtStorage.Vhost.Protocol;
using LibvirtStorage.Vhost.Tests.Protocol;
using LibvirtStorage.Vhost.Tests.Server;
using Xunit;

namespace LibvirtStorage.Vhost.Tests.Backend;

/// <summary>
/// SET_BACKEND_REQ_FD and VHOST_USER_BACKEND_CONFIG_CHANGE_MSG (vhost-user.rst "Back-end communication"): the
/// negotiation, the message and its REPLY_ACK, and front-ends that misbehave on the back-end channel, which must
/// never break or block the main connection.
/// </summary>
public class BackendChannelTests
{
    private static readonly TimeSpan ShortTimeout = TimeSpan.FromMilliseconds(300);

    // QEMU's order (vhost_user_backend_init): features, protocol features, queue count, then the back-end channel.
    private static void Negotiate(BackendHarness h, bool replyAck = true, bool backendReq = true)
    {
        h.Frontend.Send(FrontendRequest.GetFeatures);
        ulong features = h.Frontend.ReceiveU64Reply(FrontendRequest.GetFeatures);
        h.Frontend.Send(FrontendRequest.GetProtocolFeatures);
        var offered = (VhostUserProtocolFeatures)h.Frontend.ReceiveU64Reply(FrontendRequest.GetProtocolFeatures);
        Assert.True(offered.HasFlag(VhostUserProtocolFeatures.BackendReq | VhostUserProtocolFeatures.Config));
        var wanted = VhostUserProtocolFeatures.Mq | VhostUserProtocolFeatures.Config
            | (replyAck ? VhostUserProtocolFeatures.ReplyAck : 0) | (backendReq ? VhostUserProtocolFeatures.BackendReq : 0);
        h.Frontend.Send(FrontendRequest.SetProtocolFeatures, new VhostUserU64((ulong)wanted));
        h.Frontend.Send(FrontendRequest.SetOwner);
        h.Frontend.Send(FrontendRequest.SetFeatures, new VhostUserU64(features & ~VhostUserRequestDispatcher.VirtioRingFEventIdx));
    }

    private static BackendChannelPeer Connect(BackendHarness h, BackendChannelBehaviour behaviour = BackendChannelBehaviour.Ack, bool replyAck = true)
    {
        var peer = new BackendChannelPeer(behaviour);
        peer.HandOver(h.Frontend, needReply: replyAck);
        if (replyAck)
        {
            Assert.Equal(0UL, h.Frontend.ReceiveU64Reply(FrontendRequest.SetBackendReqFd));
        }
        else
        {
            // Nothing answers SET_BACKEND_REQ_FD; a round trip tells us it was handled.
            h.Frontend.Send(FrontendRequest.GetQueueNum);
            h.Frontend.ReceiveU64Reply(FrontendRequest.GetQueueNum);
        }

        return peer;
    }

    private static void AssertStillServing(BackendHarness h)
    {
        h.Frontend.Send(FrontendRequest.GetQueueNum);
        Assert.Equal(2UL, h.Frontend.ReceiveU64Reply(FrontendRequest.GetQueueNum));
        Assert.Null(h.Ended);
    }

    [Fact]
    public void Backend_req_is_offered_and_a_config_change_is_sent_with_need_reply_and_acknowledged()
    {
        using var h = new BackendHarness();
        Negotiate(h);
        using BackendChannelPeer peer = Connect(h);

        Assert.Equal(ConfigChangeNotification.Acknowledged, h.Backend.NotifyConfigChanged());
        VhostUserHeader? message = peer.Next();
        Assert.NotNull(message);
        Assert.Equal((uint)BackendRequest.ConfigChangeMsg, message.Value.Request);
        Assert.Equal(VhostUserHeaderFlags.Version1 | VhostUserHeaderFlags.NeedReply, message.Value.Flags);
        Assert.Equal(0u, message.Value.PayloadSize);
        AssertStillServing(h);
    }

    [Fact]
    public void The_front_end_handler_may_use_the_main_channel_before_it_acks_as_qemu_does()
    {
        using var h = new BackendHarness();
        Negotiate(h);
        using BackendChannelPeer peer = Connect(h);
        byte[]? config = null;
        peer.OnConfigChange = () =>
        {
            // vhost_user_blk_handle_config_change: GET_CONFIG on the main channel, then the ack.
            Span<byte> payload = stackalloc byte[12 + 8];
            int n = VhostUserFrontendChannel.EncodeConfig(payload, 0, 0, new byte[8]);
            h.Frontend.Send(FrontendRequest.GetConfig, payload[..n]);
            config = h.Frontend.ReceiveReply(FrontendRequest.GetConfig)[12..].ToArray();
            return 0;
        };

        Assert.Equal(ConfigChangeNotification.Acknowledged, h.Backend.NotifyConfigChanged());
        Assert.Equal(h.Device.Config.AsSpan(0, 8).ToArray(), config);
    }

    [Fact]
    public void Without_reply_ack_the_message_has_no_need_reply_and_nothing_is_awaited()
    {
        using var h = new BackendHarness();
        Negotiate(h, replyAck: false);
        using BackendChannelPeer peer = Connect(h, replyAck: false);

        Assert.Equal(ConfigChangeNotification.Sent, h.Backend.NotifyConfigChanged());
        Assert.Equal(VhostUserHeaderFlags.Version1, peer.Next()!.Value.Flags);
        h.Frontend.Send(FrontendRequest.GetQueueNum);
        Assert.Equal(2UL, h.Frontend.ReceiveU64Reply(FrontendRequest.GetQueueNum));
    }

    [Fact]
    public void Without_a_channel_there_is_nothing_to_notify()
    {
        using var h = new BackendHarness();
        Assert.Equal(ConfigChangeNotification.NoChannel, h.Backend.NotifyConfigChanged());
        Negotiate(h);
        Assert.Equal(ConfigChangeNotification.NoChannel, h.Backend.NotifyConfigChanged());
    }

    [Fact]
    public void Set_backend_req_fd_without_an_fd_is_nacked_and_the_connection_goes_on()
    {
        using var h = new BackendHarness();
        Negotiate(h);
        h.Frontend.Send(FrontendRequest.SetBackendReqFd, needReply: true);
        Assert.NotEqual(0UL, h.Frontend.ReceiveU64Reply(FrontendRequest.SetBackendReqFd));
        Assert.Contains("SetBackendReqFd: refused (FdCount)", h.LogText, StringComparison.Ordinal);
        AssertStillServing(h);
        Assert.Equal(ConfigChangeNotification.NoChannel, h.Backend.NotifyConfigChanged());
    }

    [Fact]
    public void Set_backend_req_fd_with_an_fd_that_is_not_a_socket_is_nacked()
    {
        using var h = new BackendHarness();
        Negotiate(h);
        h.Frontend.Send(FrontendRequest.SetBackendReqFd, default, [h.EventFd()], needReply: true);
        Assert.NotEqual(0UL, h.Frontend.ReceiveU64Reply(FrontendRequest.SetBackendReqFd));
        Assert.Contains("not a socket", h.LogText, StringComparison.Ordinal);
        AssertStillServing(h);
        Assert.Equal(ConfigChangeNotification.NoChannel, h.Backend.NotifyConfigChanged());
    }

    [Fact]
    public void Set_backend_req_fd_without_backend_req_negotiated_is_nacked()
    {
        using var h = new BackendHarness();
        Negotiate(h, backendReq: false);
        using var peer = new BackendChannelPeer();
        peer.HandOver(h.Frontend, needReply: true);
        Assert.NotEqual(0UL, h.Frontend.ReceiveU64Reply(FrontendRequest.SetBackendReqFd));
        Assert.Contains("BACKEND_REQ was not negotiated", h.LogText, StringComparison.Ordinal);
        Assert.True(peer.Closed.Wait(5000), "the refused fd was not closed");
        AssertStillServing(h);
    }

    [Fact]
    public void A_front_end_that_never_acks_costs_one_timeout_which_is_logged_and_the_connection_goes_on()
    {
        using var h = new BackendHarness();
        h.Backend.Dispatcher.BackendAckTimeout = ShortTimeout;
        Negotiate(h);
        using BackendChannelPeer peer = Connect(h, BackendChannelBehaviour.NeverAck);

        var clock = Stopwatch.StartNew();
        Assert.Equal(ConfigChangeNotification.TimedOut, h.Backend.NotifyConfigChanged());
        Assert.InRange(clock.Elapsed, ShortTimeout * 0.9, TimeSpan.FromSeconds(5));
        Assert.NotNull(peer.Next());
        Assert.Contains("no acknowledgement of CONFIG_CHANGE_MSG", h.LogText, StringComparison.Ordinal);
        Assert.True(peer.Closed.Wait(5000), "the channel was not closed after the timeout");
        AssertStillServing(h);

        // The channel is out of step now (a late ack would answer the next message), so it stays closed.
        clock.Restart();
        Assert.Equal(ConfigChangeNotification.ChannelBroken, h.Backend.NotifyConfigChanged());
        Assert.True(clock.Elapsed < ShortTimeout, "a broken channel must fail at once");
    }

    [Fact]
    public void A_closed_back_end_channel_is_logged_and_the_connection_goes_on()
    {
        using var h = new BackendHarness();
        Negotiate(h);
        using BackendChannelPeer peer = Connect(h, BackendChannelBehaviour.CloseOnMessage);

        Assert.Equal(ConfigChangeNotification.ChannelBroken, h.Backend.NotifyConfigChanged());
        Assert.Contains("closed the back-end channel", h.LogText, StringComparison.Ordinal);
        AssertStillServing(h);
        Assert.Equal(ConfigChangeNotification.ChannelBroken, h.Backend.NotifyConfigChanged());
    }

    [Fact]
    public void A_channel_closed_before_the_message_is_logged_and_the_connection_goes_on()
    {
        using var h = new BackendHarness();
        Negotiate(h);
        BackendChannelPeer peer = Connect(h);
        peer.Dispose();

        Assert.Equal(ConfigChangeNotification.ChannelBroken, h.Backend.NotifyConfigChanged());
        Assert.Contains("vhost-user back-end channel: config change ChannelBroken", h.LogText, StringComparison.Ordinal);
        AssertStillServing(h);
    }

    [Fact]
    public void A_nack_is_reported_and_the_channel_stays_usable()
    {
        using var h = new BackendHarness();
        Negotiate(h);
        using BackendChannelPeer peer = Connect(h);
        peer.OnConfigChange = () => 1;
        Assert.Equal(ConfigChangeNotification.Refused, h.Backend.NotifyConfigChanged());
        peer.OnConfigChange = null;
        Assert.Equal(ConfigChangeNotification.Acknowledged, h.Backend.NotifyConfigChanged());
        Assert.Equal(2, peer.Received.Count);
    }

    [Fact]
    public void A_second_set_backend_req_fd_replaces_and_closes_the_first_channel()
    {
        using var h = new BackendHarness();
        Negotiate(h);
        using BackendChannelPeer first = Connect(h);
        using BackendChannelPeer second = Connect(h);

        Assert.True(first.Closed.Wait(5000), "the replaced channel was not closed");
        Assert.Equal(ConfigChangeNotification.Acknowledged, h.Backend.NotifyConfigChanged());
        Assert.NotNull(second.Next());
        Assert.Empty(first.Received);
    }

    [Fact]
    public void Reset_owner_closes_the_channel_reset_device_keeps_it()
    {
        using var h = new BackendHarness();
        Negotiate(h);
        using BackendChannelPeer peer = Connect(h);
        Assert.Equal(0UL, h.Request(FrontendRequest.ResetDevice));
        Assert.Equal(ConfigChangeNotification.Acknowledged, h.Backend.NotifyConfigChanged());
        Assert.Equal(0UL, h.Request(FrontendRequest.ResetOwner));
        Assert.True(peer.Closed.Wait(5000), "RESET_OWNER did not close the channel");
        Assert.Equal(ConfigChangeNotification.NoChannel, h.Backend.NotifyConfigChanged());
    }

    [Fact]
    public async Task Disconnect_closes_the_channel_and_wakes_a_notification_waiting_for_its_ack()
    {
        var h = new BackendHarness();
        h.Backend.Dispatcher.BackendAckTimeout = TimeSpan.FromSeconds(30);
        Negotiate(h);
        using BackendChannelPeer peer = Connect(h, BackendChannelBehaviour.NeverAck);
        var waiting = Task.Run(h.Backend.NotifyConfigChanged);
        Assert.NotNull(peer.Next());

        var clock = Stopwatch.StartNew();
        h.Dispose();
        Assert.Equal(ConfigChangeNotification.ChannelBroken, await waiting.WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(10));
        Assert.True(peer.Closed.Wait(5000), "the back-end channel outlived the connection");
        Assert.Equal(ConfigChangeNotification.NoFrontend, h.Backend.NotifyConfigChanged());
    }

    [Fact]
    public void Notifications_from_many_threads_are_serialised_and_each_is_acknowledged()
    {
        using var h = new BackendHarness();
        Negotiate(h);
        using BackendChannelPeer peer = Connect(h);
        var outcomes = new ConfigChangeNotification[16];
        Parallel.For(0, outcomes.Length, new ParallelOptions { MaxDegreeOfParallelism = 4 }, i => outcomes[i] = h.Backend.NotifyConfigChanged());

        Assert.All(outcomes, o => Assert.Equal(ConfigChangeNotification.Acknowledged, o));
        Assert.Equal(outcomes.Length, peer.Received.Count);
        AssertStillServing(h);
    }
}
