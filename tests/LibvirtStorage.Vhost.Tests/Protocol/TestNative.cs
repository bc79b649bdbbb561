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

    public static SafeFileHandle MemFd(string name, long size)
    {
        int fd = memfd_create(name, 1 /* MFD_CLOEXEC */);
        Assert.True(fd >= 0, $"memfd_create failed: errno {Marshal.GetLastPInvokeError()}");
        var handle = new SafeFileHandle(fd, ownsHandle: true);
        RandomAccess.SetLength(handle, size);
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

    public static void ShutdownWrite(SafeHandle fd) => shutdown((int)fd.DangerousGetHandle(), 1 /* SHUT_WR */);

    public static int OpenFdCount() => Directory.GetFiles("/proc/self/fd").Length;

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
    private static partial int shutdown(int fd, int how);
}
