namespace LibvirtStorage.Vhost;

/// <summary>
/// A vhost-user connection cannot continue: the socket failed, the peer went away mid-message, or the peer
/// broke the framing rules of vhost-user.rst ("Message Specification"). Raised only after
/// <c>VhostUserConnection.Break</c> has marked the connection broken.
/// </summary>
/// <remarks>
/// Derives from <see cref="Exception"/> rather than <c>LibvirtStorageException</c>: that base lives in
/// LibvirtStorage.Images, and Vhost must not depend on the image engine (DESIGN.md, "Layout").
/// </remarks>
public sealed class VhostUserProtocolException : Exception
{
    /// <summary>Creates the exception.</summary>
    public VhostUserProtocolException(VhostUserProtocolError error, string message, bool shouldReconnect, Exception? inner = null)
        : base(message, inner)
    {
        Error = error;
        ShouldReconnect = shouldReconnect;
    }

    /// <summary>What went wrong, as a stable category.</summary>
    public VhostUserProtocolError Error { get; }

    /// <summary>
    /// True when the transport failed or the peer went away (a new connection may well work); false when the
    /// peer violated the protocol, so a reconnecting peer would probably do it again (rust-vmm <c>should_reconnect</c>).
    /// </summary>
    public bool ShouldReconnect { get; }
}
