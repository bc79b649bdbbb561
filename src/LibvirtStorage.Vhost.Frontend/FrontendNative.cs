using System.Runtime.InteropServices;
using LibvirtStorage.Vhost.Memory;
using Microsoft.Win32.SafeHandles;

namespace LibvirtStorage.Vhost.Frontend;

/// <summary>memfd_create and a one-fd poll with a timeout (P/Invokes with <c>ref</c> arguments, no pointers).</summary>
internal static partial class FrontendNative
{
    private const short PollIn = 0x1;
    private const int Eintr = 4;

    /// <summary>A close-on-exec memfd of <paramref name="size"/> bytes: the "guest RAM" QEMU would back with
    /// memory-backend-memfd,share=on, sealed as QEMU seals it by default (grow, shrink, seal), which back-ends
    /// may require (ours does: an unsealed memfd could be truncated under its mapping).</summary>
    public static SafeFileHandle MemFd(string name, long size)
    {
        int fd = LibC.MemfdCreate(name, LibC.MfdCloexec | LibC.MfdAllowSealing);
        if (fd < 0)
            throw new IOException($"memfd_create failed: {Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())}");
        var handle = new SafeFileHandle(fd, ownsHandle: true);
        RandomAccess.SetLength(handle, size);
        if (LibC.Fcntl(fd, LibC.FAddSeals, LibC.SealGrow | LibC.SealShrink | LibC.SealSeal) != 0)
            throw new IOException($"sealing the memfd failed: {Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())}");
        return handle;
    }

    /// <summary>True when <paramref name="fd"/> became readable within <paramref name="timeoutMs"/>.</summary>
    public static bool WaitReadable(SafeHandle fd, int timeoutMs)
    {
        var pfd = new PollFd { Fd = (int)fd.DangerousGetHandle(), Events = PollIn };
        while (true)
        {
            int n = Poll(ref pfd, 1, timeoutMs);
            if (n >= 0)
                return n > 0;
            int errno = Marshal.GetLastPInvokeError();
            if (errno != Eintr)
                throw new IOException($"poll failed: {Marshal.GetPInvokeErrorMessage(errno)}");
        }
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct PollFd
    {
        public int Fd;
        public short Events;
        public short Revents;
    }


    [LibraryImport("libc", EntryPoint = "poll", SetLastError = true)]
    private static partial int Poll(ref PollFd fds, nuint count, int timeout);
}
