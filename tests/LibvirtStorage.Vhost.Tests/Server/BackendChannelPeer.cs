using System.Collections.Concurrent;
using System.Runtime.InteropServices;
using LibvirtStorage.Vhost.Protocol;
using Microsoft.Win32.SafeHandles;

namespace LibvirtStorage.Vhost.Tests.Server;

/// <summary>How the front-end side of the back-end channel answers CONFIG_CHANGE_MSG.</summary>
internal enum BackendChannelBehaviour
{
    /// <summary>Like QEMU: run the handler (re-read the config), then ack with its result if NEED_REPLY is set.</summary>
    Ack,
    /// <summary>Read the message and never answer (a stuck front-end).</summary>
    NeverAck,
    /// <summary>Close the channel on the first message.</summary>
    CloseOnMessage,
}

/// <summary>
/// The front-end end of a back-end channel, shaped like QEMU's <c>vhost_setup_backend_channel</c> and
/// <c>backend_read</c>: a socketpair whose other end goes to the back-end with SET_BACKEND_REQ_FD, and a thread that
/// reads back-end requests, runs <see cref="OnConfigChange"/> for CONFIG_CHANGE_MSG (QEMU re-reads the config with
/// GET_CONFIG there) and, when NEED_REPLY is set, answers with a u64: 0 for success, 1 when the handler failed.
/// </summary>
internal sealed class BackendChannelPeer : IDisposable
{
    private readonly SafeFileHandle _socket;
    private readonly Thread _reader;
    private int _disposed;

    public BackendChannelPeer(BackendChannelBehaviour behaviour = BackendChannelBehaviour.Ack)
    {
        Behaviour = behaviour;
        (_socket, BackendEnd) = UnixSocket.CreatePair();
        _reader = new Thread(ReadLoop) { IsBackground = true, Name = "test back-end channel" };
        _reader.Start();
    }

    /// <summary>The end to pass with SET_BACKEND_REQ_FD (the test disposes it after sending).</summary>
    public SafeFileHandle BackendEnd { get; }

    public BackendChannelBehaviour Behaviour { get; set; }

    /// <summary>The front-end's handler; its result is the ack value. Default: success.</summary>
    public Func<ulong>? OnConfigChange { get; set; }

    /// <summary>Headers of the back-end requests received, in order.</summary>
    public BlockingCollection<VhostUserHeader> Received { get; } = [];

    /// <summary>Set when the back-end closed its end (end of stream) or sent something unreadable.</summary>
    public ManualResetEventSlim Closed { get; } = new();

    /// <summary>
    /// Sends SET_BACKEND_REQ_FD with <see cref="BackendEnd"/> (as QEMU does, with NEED_REPLY when REPLY_ACK was
    /// negotiated), then closes our copy of that end so the back-end closing its own shows here as end of stream.
    /// </summary>
    public void HandOver(VhostUserFrontendChannel frontend, bool needReply)
    {
        frontend.Send(FrontendRequest.SetBackendReqFd, default, [BackendEnd], needReply);
        BackendEnd.Dispose();
    }

    /// <summary>Takes the next received request within <paramref name="milliseconds"/>.</summary>
    public VhostUserHeader? Next(int milliseconds = 5000) =>
        Received.TryTake(out VhostUserHeader header, milliseconds) ? header : null;

    private void ReadLoop()
    {
        var fds = new ReceivedFds();
        var header = new byte[VhostUserHeader.Size];
        var payload = new byte[UnixSocket.MaxPayloadSize];
        try
        {
            while (true)
            {
                fds.CloseAll();
                if (UnixSocket.ReceiveExact(_socket, header, fds) != header.Length)
                    return;
                var request = MemoryMarshal.Read<VhostUserHeader>(header);
                if (request.PayloadSize > payload.Length
                    || UnixSocket.ReceiveExact(_socket, payload.AsSpan(0, (int)request.PayloadSize), fds) != request.PayloadSize)
                    return;
                if (Behaviour == BackendChannelBehaviour.CloseOnMessage)
                {
                    UnixSocket.Shutdown(_socket);
                    Received.Add(request);
                    return;
                }

                ulong result = request.Request == (uint)BackendRequest.ConfigChangeMsg ? OnConfigChange?.Invoke() ?? 0 : 1;
                Received.Add(request);
                if (request.NeedReply && Behaviour == BackendChannelBehaviour.Ack)
                {
                    // QEMU's reply: NEED_REPLY cleared, REPLY set, the same request number, a u64 payload.
                    var reply = new VhostUserHeader(request.Request, VhostUserHeaderFlags.Version1 | VhostUserHeaderFlags.Reply, VhostUserU64.Size);
                    var ack = new VhostUserU64(result);
                    if (UnixSocket.Send(_socket, MemoryMarshal.AsBytes(new ReadOnlySpan<VhostUserHeader>(in reply)), MemoryMarshal.AsBytes(new ReadOnlySpan<VhostUserU64>(in ack)), default) < 0)
                        return;
                }
            }
        }
        catch (ObjectDisposedException)
        {
            // Disposed under us: done.
        }
        finally
        {
            fds.CloseAll();
            Closed.Set();
        }
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
            return;
        UnixSocket.Shutdown(_socket);
        _reader.Join(5000);
        _socket.Dispose();
        BackendEnd.Dispose();
        Received.Dispose();
        Closed.Dispose();
    }
}
