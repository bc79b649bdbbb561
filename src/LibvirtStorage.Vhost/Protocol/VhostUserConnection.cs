using System.Runtime.InteropServices;

namespace LibvirtStorage.Vhost.Protocol;

/// <summary>
/// The back-end side of one vhost-user connection: receives front-end requests into a fixed 4 KiB buffer,
/// checks each against <see cref="VhostUserMessageRules"/>, and sends replies.
/// </summary>
/// <remarks>
/// <para>Connection failure has one choke point, <see cref="Break(VhostUserProtocolException)"/> (STYLE.md §5.3; QEMU <c>vu_panic</c>):
/// every socket or framing error goes through it; it records the first reason and shuts the socket down (a
/// thread blocked in <see cref="Receive"/> wakes up). Fds not taken are closed on the receive thread's error
/// path, before the next receive, and on Dispose. After it, Receive and
/// Reply throw the recorded <see cref="VhostUserProtocolException"/> and nothing else is processed.</para>
/// <para>Framing errors break the connection: a bad header, a size field above 4096 (the payload is never read,
/// so no allocation follows it), a peer that closes mid-message. A well-framed message that breaks a rule
/// (unknown request, wrong size, wrong fd count, invalid contents) is only refused: Receive returns it with
/// <see cref="VhostUserMessage.Refusal"/> set and its fds closed, and the dispatcher decides.</para>
/// <para>Threading: one thread receives, replies and finally disposes; Break may be called from any thread.</para>
/// </remarks>
internal sealed class VhostUserConnection : IDisposable
{
    private readonly SafeHandle _socket;
    private readonly byte[] _payload = GC.AllocateUninitializedArray<byte>(UnixSocket.MaxPayloadSize, pinned: true);
    private readonly byte[] _header = new byte[VhostUserHeader.Size];
    private readonly ReceivedFds _fds = new();
    private VhostUserProtocolException? _broken;

    /// <summary>Takes ownership of a connected, blocking AF_UNIX stream socket.</summary>
    public VhostUserConnection(SafeHandle socket)
    {
        ArgumentNullException.ThrowIfNull(socket);
        _socket = socket;
    }

    /// <summary>Null while the connection works; the first reason it was broken afterwards.</summary>
    public VhostUserProtocolException? BreakReason => Volatile.Read(ref _broken);

    public bool IsBroken => BreakReason is not null;

    /// <summary>
    /// Receives the next request. Returns it (possibly refused; see <see cref="VhostUserMessage.Refusal"/>),
    /// or throws <see cref="VhostUserProtocolException"/> after breaking the connection; a peer that closes
    /// between messages gives <see cref="VhostUserProtocolError.PeerClosed"/> with ShouldReconnect set.
    /// </summary>
    public VhostUserMessage Receive()
    {
        ThrowIfBroken();
        _fds.CloseAll();

        int n = UnixSocket.ReceiveExact(_socket, _header, _fds);
        if (n < 0)
            throw Fail(SocketError("recvmsg", -n));
        if (n == 0)
            throw Fail(new VhostUserProtocolException(VhostUserProtocolError.PeerClosed, "vhost-user front-end closed the connection", shouldReconnect: true));
        if (n < VhostUserHeader.Size)
            throw Fail(Truncated($"header cut short after {n} of {VhostUserHeader.Size} bytes"));

        var header = MemoryMarshal.Read<VhostUserHeader>(_header);
        if (header.Version != 1 || (header.Flags & (VhostUserHeaderFlags.ReservedMask | VhostUserHeaderFlags.Reply)) != 0)
            throw Fail(new VhostUserProtocolException(VhostUserProtocolError.BadHeader, $"bad vhost-user header for request {header.Request}: flags 0x{(uint)header.Flags:x} (version 1, no REPLY, no reserved bits expected)", shouldReconnect: false));
        if (header.PayloadSize > UnixSocket.MaxPayloadSize)
            throw Fail(new VhostUserProtocolException(VhostUserProtocolError.Oversized, $"vhost-user request {header.Request} has a {header.PayloadSize}-byte payload; at most {UnixSocket.MaxPayloadSize} is accepted", shouldReconnect: false));

        var payload = _payload.AsSpan(0, (int)header.PayloadSize);
        n = UnixSocket.ReceiveExact(_socket, payload, _fds);
        if (n < 0)
            throw Fail(SocketError("recvmsg", -n));
        if (n < payload.Length)
            throw Fail(Truncated($"payload of request {header.Request} cut short after {n} of {payload.Length} bytes"));

        var refusal = _fds.Truncated
            ? VhostUserRefusal.FdCount
            : VhostUserMessageRules.Check(header.Request, payload, _fds.Count);
        if (refusal != VhostUserRefusal.None)
            _fds.CloseAll();
        return new VhostUserMessage(header, payload, _fds, refusal);
    }

    /// <summary>Sends a reply to <paramref name="request"/>: same request number, version 1, REPLY set.</summary>
    public void Reply(in VhostUserHeader request, ReadOnlySpan<byte> payload, ReadOnlySpan<SafeHandle> fds = default)
    {
        if (payload.Length > UnixSocket.MaxPayloadSize)
            ThrowHelper.ArgumentOutOfRange(nameof(payload), $"a reply payload is at most {UnixSocket.MaxPayloadSize} bytes");
        ThrowIfBroken();
        var header = new VhostUserHeader(request.Request, VhostUserHeaderFlags.Version1 | VhostUserHeaderFlags.Reply, (uint)payload.Length);
        int r = UnixSocket.Send(_socket, MemoryMarshal.AsBytes(new ReadOnlySpan<VhostUserHeader>(in header)), payload, fds);
        if (r < 0)
            throw Fail(SocketError("sendmsg", -r));
    }

    /// <summary>Replies with a u64: GET_FEATURES-style answers, and REPLY_ACK (0 success, non-zero failure).</summary>
    public void ReplyU64(in VhostUserHeader request, ulong value)
    {
        var body = new VhostUserU64(value);
        Reply(request, MemoryMarshal.AsBytes(new ReadOnlySpan<VhostUserU64>(in body)));
    }

    private VhostUserProtocolException Fail(VhostUserProtocolException reason)
    {
        _fds.CloseAll();
        return Break(reason);
    }

    /// <summary>
    /// The one choke point for connection failure. Records the first reason and shuts the socket down;
    /// idempotent and thread-safe. Returns the recorded reason so callers can <c>throw Break(...)</c>.
    /// </summary>
    public VhostUserProtocolException Break(VhostUserProtocolException reason)
    {
        ArgumentNullException.ThrowIfNull(reason);
        var first = Interlocked.CompareExchange(ref _broken, reason, null);
        if (first is not null)
            return first;
        try
        {
            UnixSocket.Shutdown(_socket); // a receive blocked in recvmsg now reads end of stream
        }
        catch (ObjectDisposedException)
        {
            // Already disposed: nothing left to wake.
        }
        return reason;
    }

    /// <summary>Breaks the connection on purpose (a refused message, device error, shutdown).</summary>
    public VhostUserProtocolException Break(string reason) =>
        Break(new VhostUserProtocolException(VhostUserProtocolError.Aborted, reason, shouldReconnect: true));

    public void Dispose()
    {
        Break("connection disposed");
        _fds.CloseAll();
        _socket.Dispose();
    }

    private void ThrowIfBroken()
    {
        var broken = BreakReason;
        if (broken is not null)
            ThrowHelper.Protocol(broken);
    }

    private static VhostUserProtocolException SocketError(string call, int errno) =>
        new(VhostUserProtocolError.SocketError, $"vhost-user {call} failed: {Marshal.GetPInvokeErrorMessage(errno)} (errno {errno})", shouldReconnect: true);

    private static VhostUserProtocolException Truncated(string what) =>
        new(VhostUserProtocolError.Truncated, $"vhost-user front-end closed the connection mid-message: {what}", shouldReconnect: true);
}
