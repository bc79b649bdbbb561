using System.Runtime.InteropServices;

namespace LibvirtStorage.Vhost.Protocol;

/// <summary>
/// One received front-end message: the header, the payload (a view of the connection's fixed buffer, valid
/// until the next receive) and its fds. When <see cref="Refusal"/> is not <see cref="VhostUserRefusal.None"/>
/// the fds are already closed and the payload must not be interpreted.
/// </summary>
internal readonly ref struct VhostUserMessage
{
    public VhostUserMessage(VhostUserHeader header, ReadOnlySpan<byte> payload, ReceivedFds fds, VhostUserRefusal refusal)
    {
        Header = header;
        Payload = payload;
        Fds = fds;
        Refusal = refusal;
    }

    public VhostUserHeader Header { get; }

    public ReadOnlySpan<byte> Payload { get; }

    /// <summary>The fds; take the ones to keep, the rest are closed before the next receive.</summary>
    public ReceivedFds Fds { get; }

    public VhostUserRefusal Refusal { get; }

    public FrontendRequest Request => (FrontendRequest)Header.Request;

    /// <summary>The front-end set NEED_REPLY (honoured only when REPLY_ACK was negotiated; the dispatcher decides).</summary>
    public bool NeedReply => Header.NeedReply;

    /// <summary>Reads the payload as <typeparamref name="T"/>; the size was checked against the rules table.</summary>
    public T Read<T>()
        where T : unmanaged => MemoryMarshal.Read<T>(Payload);
}
