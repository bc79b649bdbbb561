using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace LibvirtStorage.Vhost.Protocol;

/// <summary>
/// The back-end → front-end request channel of one connection (vhost-user.rst "Back-end communication",
/// VHOST_USER_SET_BACKEND_REQ_FD): a socket the front-end handed over, on which the back-end sends requests and the
/// front-end answers. Only VHOST_USER_BACKEND_CONFIG_CHANGE_MSG is sent today.
/// </summary>
/// <remarks>
/// <para>Every send and receive is bounded by SO_SNDTIMEO/SO_RCVTIMEO, so a front-end that never reads or never
/// acknowledges cannot block the caller beyond the timeout. After any failure (timeout, end of stream, a reply that
/// is not the ack we wait for) the channel is shut down for good: a late ack would otherwise be read as the answer
/// to the next message. The front-end can hand over a new one with another SET_BACKEND_REQ_FD.</para>
/// <para>Threading: <see cref="SendConfigChange"/> may be called from any thread (sends are serialised by a lock);
/// <see cref="Dispose"/> comes from the connection thread and never waits for that lock: it shuts the socket down,
/// which wakes a sender blocked in recvmsg, and the SafeHandle defers the close until the sender lets go.</para>
/// </remarks>
internal sealed partial class VhostUserBackendChannel : IDisposable
{
    private const int SolSocket = 1;
    private const int SoRcvTimeo = 20;
    private const int SoSndTimeo = 21;
    private const int Eagain = 11;

    private readonly SafeFileHandle _socket;
    private readonly Lock _send = new();
    private readonly byte[] _header = new byte[VhostUserHeader.Size];
    private readonly byte[] _ack = new byte[VhostUserU64.Size];
    private readonly ReceivedFds _fds = new();
    private string? _broken;

    private VhostUserBackendChannel(SafeFileHandle socket) => _socket = socket;

    /// <summary>Why the channel no longer works, or null.</summary>
    public string? BrokenReason => Volatile.Read(ref _broken);

    /// <summary>
    /// Takes over the fd of SET_BACKEND_REQ_FD (always disposed here): a blocking duplicate with send and receive
    /// timeouts of <paramref name="timeout"/>. Returns null with the reason when the fd is not a socket.
    /// </summary>
    public static VhostUserBackendChannel? TryCreate(SafeFileHandle received, TimeSpan timeout, out string? error)
    {
        ArgumentNullException.ThrowIfNull(received);
        using (received)
        {
            SafeFileHandle socket;
            try
            {
                socket = UnixSocket.DuplicateBlocking(received);
            }
            catch (IOException e)
            {
                error = e.Message;
                return null;
            }

            var limit = new TimeVal(timeout);
            if (SetSockOpt(socket, SolSocket, SoRcvTimeo, ref limit, TimeVal.Size) != 0
                || SetSockOpt(socket, SolSocket, SoSndTimeo, ref limit, TimeVal.Size) != 0)
            {
                error = $"the back-end channel fd is not a socket ({Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())})";
                socket.Dispose();
                return null;
            }

            error = null;
            return new VhostUserBackendChannel(socket);
        }
    }

    /// <summary>
    /// Sends VHOST_USER_BACKEND_CONFIG_CHANGE_MSG (no payload); with <paramref name="needReply"/> (REPLY_ACK
    /// negotiated) sets NEED_REPLY and waits for the front-end's u64 ack. Returns the outcome and, on failure, why.
    /// </summary>
    public ConfigChangeNotification SendConfigChange(bool needReply, out string? detail)
    {
        lock (_send)
        {
            if (BrokenReason is { } earlier)
            {
                detail = earlier;
                return ConfigChangeNotification.ChannelBroken;
            }

            try
            {
                return SendLocked(needReply, out detail);
            }
            catch (ObjectDisposedException)
            {
                detail = "the back-end channel was closed";
                return ConfigChangeNotification.ChannelBroken;
            }
            finally
            {
                _fds.CloseAll(); // a front-end has no business sending fds here
            }
        }
    }

    private ConfigChangeNotification SendLocked(bool needReply, out string? detail)
    {
        var flags = VhostUserHeaderFlags.Version1 | (needReply ? VhostUserHeaderFlags.NeedReply : 0);
        var header = new VhostUserHeader((uint)BackendRequest.ConfigChangeMsg, flags, 0);
        int r = UnixSocket.Send(_socket, MemoryMarshal.AsBytes(new ReadOnlySpan<VhostUserHeader>(in header)), default, default);
        if (r < 0)
            return Fail(-r == Eagain ? ConfigChangeNotification.TimedOut : ConfigChangeNotification.ChannelBroken, Errno("sending CONFIG_CHANGE_MSG", -r), out detail);
        if (!needReply)
        {
            detail = null;
            return ConfigChangeNotification.Sent;
        }

        int n = UnixSocket.ReceiveExact(_socket, _header, _fds);
        if (n < VhostUserHeader.Size)
            return ReceiveFailed(n, out detail);
        var reply = MemoryMarshal.Read<VhostUserHeader>(_header);
        if (!reply.IsReply || reply.Version != 1 || reply.Request != (uint)BackendRequest.ConfigChangeMsg || reply.PayloadSize != VhostUserU64.Size)
            return Fail(ConfigChangeNotification.ChannelBroken, $"bad reply to CONFIG_CHANGE_MSG: request {reply.Request}, flags 0x{(uint)reply.Flags:x}, size {reply.PayloadSize}", out detail);
        n = UnixSocket.ReceiveExact(_socket, _ack, _fds);
        if (n < VhostUserU64.Size)
            return ReceiveFailed(n, out detail);
        ulong ack = MemoryMarshal.Read<ulong>(_ack);
        if (ack != 0)
        {
            // The stream is still in step: the front-end answered, its handler failed.
            detail = $"the front-end answered CONFIG_CHANGE_MSG with {ack}";
            return ConfigChangeNotification.Refused;
        }

        detail = null;
        return ConfigChangeNotification.Acknowledged;
    }

    private ConfigChangeNotification ReceiveFailed(int n, out string? detail) => n switch
    {
        < 0 when -n == Eagain => Fail(ConfigChangeNotification.TimedOut, "no acknowledgement of CONFIG_CHANGE_MSG within the timeout", out detail),
        < 0 => Fail(ConfigChangeNotification.ChannelBroken, Errno("waiting for the acknowledgement", -n), out detail),
        _ => Fail(ConfigChangeNotification.ChannelBroken, "the front-end closed the back-end channel", out detail),
    };

    private ConfigChangeNotification Fail(ConfigChangeNotification outcome, string reason, out string? detail)
    {
        detail = reason;
        Break(reason);
        return outcome;
    }

    private void Break(string reason)
    {
        if (Interlocked.CompareExchange(ref _broken, reason, null) is null)
        {
            try
            {
                UnixSocket.Shutdown(_socket);
            }
            catch (ObjectDisposedException)
            {
                // Already closed: nothing to wake.
            }
        }
    }

    /// <summary>Shuts the channel down (waking a sender waiting for an ack) and closes it once no call uses it.</summary>
    public void Dispose()
    {
        Break("the back-end channel was closed");
        _socket.Dispose();
    }

    private static string Errno(string what, int errno) => $"{what}: {Marshal.GetPInvokeErrorMessage(errno)} (errno {errno})";

    private static int SetSockOpt(SafeHandle socket, int level, int name, ref TimeVal value, uint size)
    {
        bool added = false;
        try
        {
            socket.DangerousAddRef(ref added);
            return SetSockOptNative((int)socket.DangerousGetHandle(), level, name, ref value, size);
        }
        finally
        {
            if (added)
                socket.DangerousRelease();
        }
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct TimeVal
    {
        public const uint Size = 16;
        public long Seconds;
        public long Microseconds;

        public TimeVal(TimeSpan span)
        {
            long us = Math.Max(1000L, (long)span.TotalMicroseconds); // 0 would mean "wait forever"
            Seconds = us / 1_000_000;
            Microseconds = us % 1_000_000;
        }
    }

    [LibraryImport("libc", EntryPoint = "setsockopt", SetLastError = true)]
    private static partial int SetSockOptNative(int fd, int level, int name, ref TimeVal value, uint size);
}
