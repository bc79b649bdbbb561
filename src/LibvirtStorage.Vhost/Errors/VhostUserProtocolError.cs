namespace LibvirtStorage.Vhost;

/// <summary>Why a vhost-user connection was broken; callers switch on it, tests assert it.</summary>
public enum VhostUserProtocolError
{
    /// <summary>The peer closed the socket between two messages.</summary>
    PeerClosed,
    /// <summary>The peer closed the socket in the middle of a message (header or payload cut short).</summary>
    Truncated,
    /// <summary>The header's size field is above the 4096-byte payload limit; the payload was not read.</summary>
    Oversized,
    /// <summary>The header has a wrong version, reserved flag bits, or the REPLY bit on a request.</summary>
    BadHeader,
    /// <summary>recvmsg, sendmsg or shutdown failed with an errno.</summary>
    SocketError,
    /// <summary>The connection's owner broke it on purpose (a refused message, a device error, shutdown).</summary>
    Aborted,
}
