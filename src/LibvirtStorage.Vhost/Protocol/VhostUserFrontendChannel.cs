using System.Runtime.InteropServices;

namespace LibvirtStorage.Vhost.Protocol;

/// <summary>
/// The front-end side of a vhost-user socket, building messages as QEMU's hw/virtio/vhost-user.c does: version 1
/// headers, payload sizes that match the layout (SET_MEM_TABLE sends only the regions in use, GET/SET_CONFIG
/// sends the 12-byte header plus the bytes), fds in the ancillary data of the message's first byte. Used by
/// the protocol tests and by our C# front-end; <see cref="SendRaw"/> lets hostile tests send anything.
/// </summary>
internal sealed class VhostUserFrontendChannel : IDisposable
{
    private readonly SafeHandle _socket;
    private readonly byte[] _header = new byte[VhostUserHeader.Size];
    private readonly byte[] _payload = new byte[UnixSocket.MaxPayloadSize];

    /// <summary>Takes ownership of a connected, blocking AF_UNIX stream socket.</summary>
    public VhostUserFrontendChannel(SafeHandle socket)
    {
        ArgumentNullException.ThrowIfNull(socket);
        _socket = socket;
    }

    /// <summary>Fds that came with the last reply (GET_INFLIGHT_FD); closed at the next receive unless taken.</summary>
    public ReceivedFds ReplyFds { get; } = new();

    public void Send(FrontendRequest request, ReadOnlySpan<byte> payload = default, ReadOnlySpan<SafeHandle> fds = default, bool needReply = false)
    {
        var flags = VhostUserHeaderFlags.Version1 | (needReply ? VhostUserHeaderFlags.NeedReply : 0);
        SendRaw(new VhostUserHeader((uint)request, flags, (uint)payload.Length), payload, fds);
    }

    public void Send<T>(FrontendRequest request, in T payload, ReadOnlySpan<SafeHandle> fds = default, bool needReply = false)
        where T : unmanaged =>
        Send(request, MemoryMarshal.AsBytes(new ReadOnlySpan<T>(in payload)), fds, needReply);

    /// <summary>Sends exactly this header and payload (the size field is not checked against the payload).</summary>
    public void SendRaw(in VhostUserHeader header, ReadOnlySpan<byte> payload, ReadOnlySpan<SafeHandle> fds = default)
    {
        int r = UnixSocket.Send(_socket, MemoryMarshal.AsBytes(new ReadOnlySpan<VhostUserHeader>(in header)), payload, fds);
        if (r < 0)
            throw new IOException($"sendmsg failed: {Marshal.GetPInvokeErrorMessage(-r)}");
    }

    /// <summary>SET_MEM_TABLE: {nregions, padding} and the regions in use, one fd per region, in order.</summary>
    public void SetMemTable(ReadOnlySpan<VhostUserMemoryRegion> regions, ReadOnlySpan<SafeHandle> fds, bool needReply = false)
    {
        Span<byte> payload = stackalloc byte[VhostUserMemoryTableHeader.MaxPayloadSize];
        int length = EncodeMemTable(payload, regions);
        Send(FrontendRequest.SetMemTable, payload[..length], fds, needReply);
    }

    /// <summary>Writes a SET_MEM_TABLE payload; returns its length (8 + 32 × regions).</summary>
    public static int EncodeMemTable(Span<byte> destination, ReadOnlySpan<VhostUserMemoryRegion> regions)
    {
        var header = new VhostUserMemoryTableHeader { RegionCount = (uint)regions.Length };
        MemoryMarshal.Write(destination, in header);
        MemoryMarshal.AsBytes(regions).CopyTo(destination[VhostUserMemoryTableHeader.Size..]);
        return VhostUserMemoryTableHeader.PayloadSizeFor((uint)regions.Length);
    }

    /// <summary>Writes a GET/SET_CONFIG payload: {offset, size, flags} then the bytes; returns its length.</summary>
    public static int EncodeConfig(Span<byte> destination, uint offset, uint flags, ReadOnlySpan<byte> data)
    {
        var header = new VhostUserConfigHeader(offset, (uint)data.Length, flags);
        MemoryMarshal.Write(destination, in header);
        data.CopyTo(destination[VhostUserConfigHeader.Size..]);
        return VhostUserConfigHeader.Size + data.Length;
    }

    /// <summary>
    /// Reads the reply to <paramref name="request"/>: REPLY set, version 1, same request number. The payload is
    /// valid until the next receive; fds are in <see cref="ReplyFds"/>.
    /// </summary>
    public ReadOnlySpan<byte> ReceiveReply(FrontendRequest request)
    {
        ReplyFds.CloseAll();
        if (UnixSocket.ReceiveExact(_socket, _header, ReplyFds) != VhostUserHeader.Size)
            throw new IOException($"no reply to {request}: the back-end closed the connection");
        var header = MemoryMarshal.Read<VhostUserHeader>(_header);
        if (!header.IsReply || header.Version != 1 || header.Request != (uint)request || header.PayloadSize > UnixSocket.MaxPayloadSize)
            throw new IOException($"bad reply to {request}: request {header.Request}, flags 0x{(uint)header.Flags:x}, size {header.PayloadSize}");
        var payload = _payload.AsSpan(0, (int)header.PayloadSize);
        if (UnixSocket.ReceiveExact(_socket, payload, ReplyFds) != payload.Length)
            throw new IOException($"reply to {request} cut short");
        return payload;
    }

    /// <summary>Reads a u64 reply (GET_FEATURES, GET_QUEUE_NUM, a REPLY_ACK).</summary>
    public ulong ReceiveU64Reply(FrontendRequest request)
    {
        var payload = ReceiveReply(request);
        if (payload.Length != VhostUserU64.Size)
            throw new IOException($"reply to {request} has {payload.Length} bytes, expected a u64");
        return MemoryMarshal.Read<ulong>(payload);
    }

    public void Dispose()
    {
        ReplyFds.CloseAll();
        _socket.Dispose();
    }
}
