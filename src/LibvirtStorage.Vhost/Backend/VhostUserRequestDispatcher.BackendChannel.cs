using LibvirtStorage.Vhost.Protocol;

namespace LibvirtStorage.Vhost.Backend;

// SET_BACKEND_REQ_FD and the config-change notification (vhost-user.rst "Back-end communication"): the channel is
// connection state like the vrings, but it is used from outside the connection thread, so it is published with
// Interlocked and every failure on it stays on it: the main connection never breaks because of it.
internal sealed partial class VhostUserRequestDispatcher
{
    /// <summary>Default bound on a back-end channel send or acknowledgement.</summary>
    public static readonly TimeSpan DefaultBackendAckTimeout = TimeSpan.FromSeconds(5);

    private VhostUserBackendChannel? _backendChannel;

    /// <summary>How long a config-change notification waits for the socket and for the front-end's ack.</summary>
    public TimeSpan BackendAckTimeout { get; set; } = DefaultBackendAckTimeout;

    /// <summary>The current back-end channel (tests).</summary>
    internal VhostUserBackendChannel? BackendChannel => Volatile.Read(ref _backendChannel);

    // SET_BACKEND_REQ_FD: takes the fd (the rules table guarantees exactly one) and replaces any previous channel.
    private string? SetBackendChannel(VhostUserMessage message)
    {
        if ((_ackedProtocolFeatures & VhostUserProtocolFeatures.BackendReq) == 0)
            return "VHOST_USER_PROTOCOL_F_BACKEND_REQ was not negotiated";
        VhostUserBackendChannel? channel = VhostUserBackendChannel.TryCreate(message.Fds.Take(0), BackendAckTimeout, out string? error);
        if (channel is null)
            return error;
        Interlocked.Exchange(ref _backendChannel, channel)?.Dispose();
        return null;
    }

    private void CloseBackendChannel() => Interlocked.Exchange(ref _backendChannel, null)?.Dispose();

    /// <summary>
    /// Sends VHOST_USER_BACKEND_CONFIG_CHANGE_MSG when CONFIG and BACKEND_REQ were negotiated and a channel was
    /// given, with NEED_REPLY when REPLY_ACK was negotiated (then waits up to <see cref="BackendAckTimeout"/>).
    /// Any thread; never throws for the front-end's behaviour: failures are logged and returned.
    /// </summary>
    public ConfigChangeNotification NotifyConfigChanged()
    {
        // A plain read: SET_PROTOCOL_FEATURES precedes SET_BACKEND_REQ_FD, whose channel we read with a barrier.
        VhostUserProtocolFeatures protocol = _ackedProtocolFeatures;
        VhostUserBackendChannel? channel = Volatile.Read(ref _backendChannel);
        if (channel is null || (protocol & VhostUserProtocolFeatures.Config) == 0)
            return ConfigChangeNotification.NoChannel;
        bool needReply = (protocol & VhostUserProtocolFeatures.ReplyAck) != 0;
        ConfigChangeNotification outcome = channel.SendConfigChange(needReply, out string? detail);
        if (detail is not null)
            VhostUserLog.BackendChannelFailed(_logger, outcome.ToString(), detail);
        return outcome;
    }
}
