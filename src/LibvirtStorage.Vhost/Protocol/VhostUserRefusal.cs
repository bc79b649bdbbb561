namespace LibvirtStorage.Vhost.Protocol;

/// <summary>
/// Why a well-framed message cannot be used. The framing is intact (the whole payload was read and its fds
/// closed), so the connection can go on: the dispatcher replies with a failure when a reply is due, or breaks
/// the connection if it judges the peer hostile.
/// </summary>
public enum VhostUserRefusal
{
    /// <summary>The message is usable.</summary>
    None = 0,
    /// <summary>The request number is not one vhost-user.rst defines.</summary>
    UnknownRequest,
    /// <summary>The payload size is not the one the request's layout allows.</summary>
    PayloadSize,
    /// <summary>Too few or too many fds for the request, or more than 32 were sent (MSG_CTRUNC).</summary>
    FdCount,
    /// <summary>The payload has the right size but invalid contents (overflowing region, bad alignment, reserved bits).</summary>
    InvalidPayload,
}
