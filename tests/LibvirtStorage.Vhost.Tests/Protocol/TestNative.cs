using System.Runtime.InteropServices;
using LibvirtStorage.Vhost.Protocol;
using Microsoft.Win32.SafeHandles;
using Xunit;

namespace LibvirtStorage.Vhost.Tests.Protocol;

/// <summary>eventfd, memfd and raw fd I/O for the protocol tests.</summary>
internal static unsafe partial class TestNative
{
    public static SafeFileHandle EventFd()
    {
        int fd = eventfd(0, 0x80000 /* EFD_CLOEXEC */);
        Assert.True(fd >= 0, $"eventfd failed: errno {Marshal.GetLastPInvokeError()}");
        return new SafeFileHandle(fd, ownsHandle: true);
    }

    /// <summary>A memfd of <paramref name="size"/> bytes, sealed against shrinking and growing as QEMU's
    /// memory-backend-memfd seals guest memory (seal=on, the default), unless <paramref name="sealed"/> is false.</summary>
    public static SafeFileHandle MemFd(string name, long size, bool @sealed = true)
    {
        int fd = memfd_create(name, 1 /* MFD_CLOEXEC */ | 2 /* MFD_ALLOW_SEALING */);
        Assert.True(fd >= 0, $"memfd_create failed: errno {Marshal.GetLastPInvokeError()}");
        var handle = new SafeFileHandle(fd, ownsHandle: true);
        RandomAccess.SetLength(handle, size);
        if (@sealed)
        {
            const int FAddSeals = 1033, SealSeal = 0x1, SealShrink = 0x2, SealGrow = 0x4;
            Assert.True(fcntl(fd, FAddSeals, SealSeal | SealShrink | SealGrow) == 0, $"F_ADD_SEALS failed: errno {Marshal.GetLastPInvokeError()}");
        }

        return handle;
    }

    public static void WriteU64(SafeHandle fd, ulong value)
    {
        Assert.Equal(8, (int)write((int)fd.DangerousGetHandle(), &value, 8));
    }

    public static ulong ReadU64(SafeHandle fd)
    {
        ulong value;
        Assert.Equal(8, (int)read((int)fd.DangerousGetHandle(), &value, 8));
        return value;
    }

    /// <summary>Writes raw bytes to a socket (a hostile peer's stream); returns false if the peer is gone.</summary>
    public static bool WriteAll(SafeHandle fd, ReadOnlySpan<byte> bytes)
    {
        fixed (byte* p = bytes)
        {
            int done = 0;
            while (done < bytes.Length)
            {
                nint n = send((int)fd.DangerousGetHandle(), p + done, (nuint)(bytes.Length - done), 0x4000 /* MSG_NOSIGNAL */);
                if (n <= 0)
                    return false;
                done += (int)n;
            }
        }
        return true;
    }

    /// <summary>sendmsg with any number of fds (the library caps at 32; a hostile peer does not).</summary>
    public static void SendWithFds(SafeHandle socket, ReadOnlySpan<byte> bytes, ReadOnlySpan<int> fds)
    {
        int controlLength = 16 + ((fds.Length * 4 + 7) & ~7);
        byte* control = stackalloc byte[controlLength];
        new Span<byte>(control, controlLength).Clear();
        *(nuint*)control = (nuint)(16 + fds.Length * 4);
        ((int*)control)[2] = 1; // SOL_SOCKET
        ((int*)control)[3] = 1; // SCM_RIGHTS
        fds.CopyTo(new Span<int>(control + 16, fds.Length));
        fixed (byte* p = bytes)
        {
            var iov = stackalloc nuint[2];
            iov[0] = (nuint)p;
            iov[1] = (nuint)bytes.Length;
            var msg = stackalloc nuint[7];
            new Span<nuint>(msg, 7).Clear();
            msg[2] = (nuint)iov;
            msg[3] = 1;
            msg[4] = (nuint)control;
            msg[5] = (nuint)controlLength;
            nint n = sendmsg((int)socket.DangerousGetHandle(), msg, 0x4000);
            Assert.True(n == bytes.Length, $"sendmsg: {n}, errno {Marshal.GetLastPInvokeError()}");
        }
    }

    /// <summary>Binds an AF_UNIX socket at <paramref name="path"/> and closes it without unlinking: a crashed back-end's leftover.</summary>
    public static void BindAndAbandon(string path)
    {
        int fd = socket(1 /* AF_UNIX */, 1 /* SOCK_STREAM */, 0);
        Assert.True(fd >= 0);
        byte* address = stackalloc byte[110]; // struct sockaddr_un: sa_family_t then 108 path bytes
        new Span<byte>(address, 110).Clear();
        *(ushort*)address = 1;
        System.Text.Encoding.UTF8.GetBytes(path, new Span<byte>(address + 2, 107));
        int r = bind(fd, address, 110);
        close(fd);
        Assert.True(r == 0, $"bind failed: errno {Marshal.GetLastPInvokeError()}");
    }

    public static void ShutdownWrite(SafeHandle fd) => shutdown((int)fd.DangerousGetHandle(), 1 /* SHUT_WR */);

    /// <summary>Open fds of this process, after letting finalizers of earlier tests' handles run (so they cannot close one mid-test).</summary>
    public static int OpenFdCount()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        return Directory.GetFiles("/proc/self/fd").Length;
    }

    /// <summary>
    /// Open fds of this process that refer to <paramref name="path"/>. Unlike <see cref="OpenFdCount"/> it cannot
    /// see fds the test host or another test opens or closes meanwhile.
    /// </summary>
    public static int OpenFdsOn(string path)
    {
        int count = 0;
        foreach (string fd in Directory.GetFiles("/proc/self/fd"))
        {
            try
            {
                if (new FileInfo(fd).LinkTarget == path)
                    count++;
            }
            catch (IOException)
            {
                // closed while we looked: not ours
            }
        }

        return count;
    }

    /// <summary>Lets a child process inherit <paramref name="fd"/> (clears FD_CLOEXEC), for <c>--fd</c>.</summary>
    public static void Inherit(SafeHandle fd)
    {
        if (fcntl((int)fd.DangerousGetHandle(), 2 /* F_SETFD */, 0) != 0)
            throw new IOException($"fcntl(F_SETFD) failed: errno {Marshal.GetLastPInvokeError()}");
    }

    /// <summary>Whether <paramref name="fd"/> becomes readable within <paramref name="milliseconds"/> (poll(2)).</summary>
    public static bool WaitReadable(SafeHandle fd, int milliseconds)
    {
        var request = new PollFd { Fd = (int)fd.DangerousGetHandle(), Events = 1 /* POLLIN */ };
        return poll(&request, 1, milliseconds) == 1;
    }

    public static (VhostUserFrontendChannel Frontend, VhostUserConnection Backend) Pair()
    {
        var (a, b) = UnixSocket.CreatePair();
        return (new VhostUserFrontendChannel(a), new VhostUserConnection(b));
    }

    [LibraryImport("libc", SetLastError = true)]
    private static partial int eventfd(uint initval, int flags);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int memfd_create(string name, uint flags);

    [LibraryImport("libc", SetLastError = true)]
    private static partial nint write(int fd, void* buf, nuint count);

    [LibraryImport("libc", SetLastError = true)]
    private static partial nint read(int fd, void* buf, nuint count);

    [LibraryImport("libc", SetLastError = true)]
    private static partial nint send(int fd, void* buf, nuint count, int flags);

    [LibraryImport("libc", SetLastError = true)]
    private static partial nint sendmsg(int fd, nuint* msg, int flags);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int socket(int domain, int type, int protocol);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int bind(int fd, byte* address, int length);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int close(int fd);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int shutdown(int fd, int how);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int fcntl(int fd, int cmd, int arg);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int poll(PollFd* fds, nuint count, int timeout);

    [StructLayout(LayoutKind.Sequential)]
    private struct PollFd
    {
        public int Fd;
        public short Events;
        public short Revents;
    }
}
