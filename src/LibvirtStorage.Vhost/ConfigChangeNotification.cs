namespace LibvirtStorage.Vhost;

/// <summary>
/// What became of a config-change notification (VHOST_USER_BACKEND_CONFIG_CHANGE_MSG, vhost-user.rst "Back-end
/// message types"). A failed notification never affects the connection itself: the front-end still reads the
/// current config with GET_CONFIG whenever it asks.
/// </summary>
public enum ConfigChangeNotification
{
    /// <summary>No front-end is connected; the next one reads the new config when it connects.</summary>
    NoFrontend,
    /// <summary>The front-end did not negotiate BACKEND_REQ and CONFIG, or sent no SET_BACKEND_REQ_FD: nothing to send on.</summary>
    NoChannel,
    /// <summary>Sent with NEED_REPLY and acknowledged with 0 (QEMU re-read the config before acking).</summary>
    Acknowledged,
    /// <summary>Sent without NEED_REPLY (REPLY_ACK not negotiated): delivered to the socket, nothing more is known.</summary>
    Sent,
    /// <summary>The front-end acknowledged with a non-zero value (its handler failed).</summary>
    Refused,
    /// <summary>No acknowledgement (or the front-end did not read) within the timeout; the back-end channel was closed.</summary>
    TimedOut,
    /// <summary>The back-end channel failed (closed by the front-end, a bad reply); it was closed.</summary>
    ChannelBroken,
}
