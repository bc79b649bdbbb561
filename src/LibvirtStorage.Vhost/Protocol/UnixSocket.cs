using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace LibvirtStorage.Vhost.Protocol;

/// <summary>
/// recvmsg/sendmsg with SCM_RIGHTS over a connected AF_UNIX stream socket, and the few socket calls .NET does
/// not expose (socketpair, fd duplication). The only unsafe file in Protocol/. Calls return a byte count or
/// -errno and never throw: the connection turns failures into one <c>Break</c>.
/// </summary>
internal static unsafe partial class UnixSocket
{
    /// <summary>Largest payload accepted (rust-vmm MAX_MSG_SIZE); a bigger size field breaks the connection.</summary>
    public const int MaxPayloadSize = 4096;
    /// <summary>Most fds received with one message; the kernel closes any beyond and sets MSG_CTRUNC.</summary>
    public const int MaxFds = 32;

    private const int SOL_SOCKET = 1;
    private const int SCM_RIGHTS = 1;
    private const int MSG_CTRUNC = 0x8;
    private const int MSG_NOSIGNAL = 0x4000;
    private const int MSG_CMSG_CLOEXEC = 0x40000000;
    private const int AF_UNIX = 1;
    private const int SOCK_STREAM = 1;
    private const int SOCK_CLOEXEC = 0x80000;
    private const int F_GETFL = 3;
    private const int F_SETFL = 4;
    private const int F_DUPFD_CLOEXEC = 1030;
    private const int O_NONBLOCK = 0x800;
    private const int SHUT_RDWR = 2;
    public const int EINTR = 4;

    // struct cmsghdr is {size_t len; int level; int type;} followed by data aligned to sizeof(size_t).
    private const int CmsgHeaderSize = 16;
    private const int FdControlSpace = CmsgHeaderSize + MaxFds * sizeof(int); // CMSG_SPACE(32 * 4): already 8-aligned

    [StructLayout(LayoutKind.Sequential)]
    private struct IoVec
    {
        public void* Base;
        public nuint Length;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct MsgHdr
    {
        public void* Name;
        public uint NameLength;
        public IoVec* Iov;
        public nuint IovLength;
        public void* Control;
        public nuint ControlLength;
        public int Flags;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct CmsgHdr
    {
        public nuint Length;
        public int Level;
        public int Type;
    }

    /// <summary>
    /// Reads until <paramref name="buffer"/> is full or the peer closes, retrying EINTR and short reads.
    /// Fds that arrive with any of the bytes go to <paramref name="fds"/> (which closes any beyond 32).
    /// Returns the bytes read (less than the buffer only at end of stream) or -errno.
    /// </summary>
    public static int ReceiveExact(SafeHandle socket, Span<byte> buffer, ReceivedFds fds)
    {
        bool added = false;
        try
        {
            socket.DangerousAddRef(ref added);
            int fd = (int)socket.DangerousGetHandle();
            int total = 0;
            byte* control = stackalloc byte[FdControlSpace];
            while (total < buffer.Length)
            {
                // SAFETY: the span is pinned by fixed for the call and the iovec covers only its unfilled tail;
                // control is a stack buffer of FdControlSpace bytes and msg_controllen says exactly that.
                fixed (byte* p = buffer)
                {
                    var iov = new IoVec { Base = p + total, Length = (nuint)(buffer.Length - total) };
                    var msg = new MsgHdr { Iov = &iov, IovLength = 1, Control = control, ControlLength = FdControlSpace };
                    nint n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
                    if (n < 0)
                    {
                        int errno = Marshal.GetLastPInvokeError();
                        if (errno == EINTR)
                            continue;
                        return -errno;
                    }
                    CollectFds(&msg, fds);
                    if (n == 0)
                        return total;
                    total += (int)n;
                }
            }
            return total;
        }
        finally
        {
            if (added)
                socket.DangerousRelease();
        }
    }

    private static void CollectFds(MsgHdr* msg, ReceivedFds fds)
    {
        if ((msg->Flags & MSG_CTRUNC) != 0)
            fds.MarkTruncated();
        // SAFETY: the kernel wrote msg->ControlLength (at most FdControlSpace) bytes of cmsgs into msg->Control;
        // each header and its data are bounds-checked against that length before being read.
        byte* start = (byte*)msg->Control;
        nuint length = msg->ControlLength;
        nuint offset = 0;
        while (offset + CmsgHeaderSize <= length)
        {
            var cmsg = (CmsgHdr*)(start + offset);
            if (cmsg->Length < CmsgHeaderSize || cmsg->Length > length - offset)
                break;
            if (cmsg->Level == SOL_SOCKET && cmsg->Type == SCM_RIGHTS)
            {
                int count = (int)((cmsg->Length - CmsgHeaderSize) / sizeof(int));
                int* data = (int*)((byte*)cmsg + CmsgHeaderSize);
                for (int i = 0; i < count; i++)
                    fds.Add(data[i]);
            }
            offset += (cmsg->Length + 7) & ~(nuint)7;
        }
    }

    /// <summary>
    /// Sends header and payload as one message, the fds attached to its first byte; loops over short writes
    /// (later chunks carry no fds) and EINTR. MSG_NOSIGNAL: a closed peer is EPIPE, never SIGPIPE.
    /// Returns 0 or -errno.
    /// </summary>
    public static int Send(SafeHandle socket, ReadOnlySpan<byte> header, ReadOnlySpan<byte> payload, ReadOnlySpan<SafeHandle> fds)
    {
        if (fds.Length > MaxFds)
            ThrowHelper.ArgumentOutOfRange(nameof(fds), $"at most {MaxFds} fds per message");
        Span<bool> refs = stackalloc bool[fds.Length];
        bool added = false;
        try
        {
            socket.DangerousAddRef(ref added);
            byte* control = stackalloc byte[FdControlSpace];
            for (int i = 0; i < fds.Length; i++)
            {
                fds[i].DangerousAddRef(ref refs[i]);
                ((int*)(control + CmsgHeaderSize))[i] = (int)fds[i].DangerousGetHandle();
            }
            var cmsg = (CmsgHdr*)control;
            cmsg->Length = (nuint)(CmsgHeaderSize + fds.Length * sizeof(int));
            cmsg->Level = SOL_SOCKET;
            cmsg->Type = SCM_RIGHTS;
            nuint controlLength = (cmsg->Length + 7) & ~(nuint)7;
            return SendLoop((int)socket.DangerousGetHandle(), header, payload, fds.Length == 0 ? null : control, controlLength);
        }
        finally
        {
            for (int i = 0; i < fds.Length; i++)
            {
                if (refs[i])
                    fds[i].DangerousRelease();
            }
            if (added)
                socket.DangerousRelease();
        }
    }

    private static int SendLoop(int fd, ReadOnlySpan<byte> header, ReadOnlySpan<byte> payload, byte* control, nuint controlLength)
    {
        int sent = 0, total = header.Length + payload.Length;
        // SAFETY: both spans are pinned for the whole loop; each iovec starts inside its span and ends at its end.
        fixed (byte* h = header)
        fixed (byte* p = payload)
        {
            IoVec* iov = stackalloc IoVec[2];
            while (sent < total)
            {
                int n = 0;
                if (sent < header.Length)
                    iov[n++] = new IoVec { Base = h + sent, Length = (nuint)(header.Length - sent) };
                int payloadSent = Math.Max(0, sent - header.Length);
                if (payload.Length > payloadSent)
                    iov[n++] = new IoVec { Base = p + payloadSent, Length = (nuint)(payload.Length - payloadSent) };
                var msg = new MsgHdr { Iov = iov, IovLength = (nuint)n };
                if (sent == 0 && control != null)
                {
                    msg.Control = control;
                    msg.ControlLength = controlLength;
                }
                nint r = sendmsg(fd, &msg, MSG_NOSIGNAL);
                if (r < 0)
                {
                    int errno = Marshal.GetLastPInvokeError();
                    if (errno == EINTR)
                        continue;
                    return -errno;
                }
                sent += (int)r;
            }
        }
        return 0;
    }

    /// <summary>Wakes any thread blocked in recvmsg on this socket (it reads end of stream). Returns 0 or -errno.</summary>
    public static int Shutdown(SafeHandle socket)
    {
        bool added = false;
        try
        {
            socket.DangerousAddRef(ref added);
            return shutdown((int)socket.DangerousGetHandle(), SHUT_RDWR) == 0 ? 0 : -Marshal.GetLastPInvokeError();
        }
        finally
        {
            if (added)
                socket.DangerousRelease();
        }
    }

    /// <summary>A connected AF_UNIX stream pair (tests, and an in-process front-end).</summary>
    public static (SafeFileHandle First, SafeFileHandle Second) CreatePair()
    {
        int* sv = stackalloc int[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
            throw new IOException($"socketpair failed: errno {Marshal.GetLastPInvokeError()}");
        return (new SafeFileHandle(sv[0], ownsHandle: true), new SafeFileHandle(sv[1], ownsHandle: true));
    }

    /// <summary>
    /// Duplicates a socket fd (close-on-exec) and makes the duplicate blocking, so a <see cref="System.Net.Sockets.Socket"/>
    /// from accept can be disposed while the connection keeps its own fd for recvmsg.
    /// </summary>
    public static SafeFileHandle DuplicateBlocking(SafeHandle socket)
    {
        bool added = false;
        try
        {
            socket.DangerousAddRef(ref added);
            int fd = fcntl((int)socket.DangerousGetHandle(), F_DUPFD_CLOEXEC, 3);
            if (fd < 0)
                throw new IOException($"fcntl(F_DUPFD_CLOEXEC) failed: errno {Marshal.GetLastPInvokeError()}");
            var handle = new SafeFileHandle(fd, ownsHandle: true);
            int flags = fcntl(fd, F_GETFL, 0);
            if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0)
            {
                int errno = Marshal.GetLastPInvokeError();
                handle.Dispose();
                throw new IOException($"fcntl(F_SETFL) failed: errno {errno}");
            }
            return handle;
        }
        finally
        {
            if (added)
                socket.DangerousRelease();
        }
    }

    private const int SO_PEERCRED = 17;

    /// <summary>
    /// The process id, user id and group id of the peer of a connected AF_UNIX socket (SO_PEERCRED: as of the
    /// peer's connect), or null when the kernel does not say.
    /// </summary>
    public static (int Pid, int Uid, int Gid)? PeerCredentials(SafeHandle socket)
    {
        bool added = false;
        try
        {
            socket.DangerousAddRef(ref added);
            int* cred = stackalloc int[3]; // struct ucred { pid_t pid; uid_t uid; gid_t gid; }
            uint length = 3 * sizeof(int);
            if (getsockopt((int)socket.DangerousGetHandle(), SOL_SOCKET, SO_PEERCRED, cred, &length) != 0 || length < 3 * sizeof(int))
                return null;
            return (cred[0], cred[1], cred[2]);
        }
        finally
        {
            if (added)
                socket.DangerousRelease();
        }
    }

    /// <summary>chown(2) of a path (-1 keeps that id); failures throw <see cref="IOException"/> naming the path and errno.</summary>
    public static void ChangeOwner(string path, int userId, int groupId)
    {
        if (chown(path, userId, groupId) != 0)
            throw new IOException($"cannot change the owner of {path} to {userId}:{groupId}: errno {Marshal.GetLastPInvokeError()}");
    }

    /// <summary>Closes a raw fd that no SafeHandle owns (extra received fds).</summary>
    public static void Close(int fd) => close(fd);

    [LibraryImport("libc", SetLastError = true)]
    private static partial nint recvmsg(int fd, MsgHdr* msg, int flags);

    [LibraryImport("libc", SetLastError = true)]
    private static partial nint sendmsg(int fd, MsgHdr* msg, int flags);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int shutdown(int fd, int how);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int socketpair(int domain, int type, int protocol, int* sv);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int fcntl(int fd, int cmd, int arg);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int close(int fd);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int chown(string path, int owner, int group);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int getsockopt(int fd, int level, int name, void* value, uint* length);
}
