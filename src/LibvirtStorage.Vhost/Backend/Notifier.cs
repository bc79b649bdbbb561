using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace LibvirtStorage.Vhost.Backend;

/// <summary>
/// eventfd plumbing for the queue threads: create, signal, drain, and wait on several fds (kicks and a control
/// fd) with poll(2). No pointers: the P/Invokes take <c>ref</c> arguments, marshalled by LibraryImport.
/// </summary>
internal static partial class Notifier
{
    private const int EfdCloexec = 0x80000;
    private const short PollIn = 0x1;
    private const int Eintr = 4;

    /// <summary>A new blocking, close-on-exec eventfd.</summary>
    public static SafeFileHandle CreateEventFd()
    {
        int fd = EventFd(0, EfdCloexec);
        if (fd < 0)
            throw new IOException($"eventfd failed: {Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())}");
        return new SafeFileHandle(fd, ownsHandle: true);
    }

    /// <summary>Adds 1 to an eventfd (a call, or a stop request). Errors are ignored: a front-end that closed its
    /// end cannot be notified anyway, and the connection's own failure path reports it.</summary>
    public static void Signal(SafeHandle fd)
    {
        bool added = false;
        try
        {
            fd.DangerousAddRef(ref added);
            ulong one = 1;
            _ = Write((int)fd.DangerousGetHandle(), ref one, 8);
        }
        catch (ObjectDisposedException)
        {
            // Closed by a concurrent reset: nothing to signal.
        }
        finally
        {
            if (added)
                fd.DangerousRelease();
        }
    }

    /// <summary>Reads (and so resets) the counter of an eventfd that poll reported readable.</summary>
    public static void Drain(SafeHandle fd)
    {
        ulong value = 0;
        _ = Read((int)fd.DangerousGetHandle(), ref value, 8);
    }

    /// <summary>
    /// Blocks in poll(2) until at least one of the first <paramref name="count"/> entries of
    /// <paramref name="fds"/> is ready (EINTR is retried) and returns how many are; each entry's
    /// <see cref="PollFd.Revents"/> says which. The caller owns and reuses the array, so a wait allocates nothing.
    /// </summary>
    public static int WaitAny(PollFd[] fds, int count)
    {
        if ((uint)count > (uint)fds.Length || count == 0)
            ThrowHelper.ArgumentOutOfRange(nameof(count), "1..fds.Length entries");
        while (true)
        {
            int n = Poll(ref fds[0], (nuint)count, -1);
            if (n >= 0)
                return n;
            int errno = Marshal.GetLastPInvokeError();
            if (errno != Eintr)
                throw new IOException($"poll failed: {Marshal.GetPInvokeErrorMessage(errno)}");
        }
    }

    /// <summary>struct pollfd; an <see cref="Fd"/> of -1 is skipped by poll(2).</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct PollFd
    {
        public int Fd;
        public short Events;
        public short Revents;

        /// <summary>Watches <paramref name="fd"/> for readability.</summary>
        public static PollFd Readable(SafeHandle fd) => new() { Fd = (int)fd.DangerousGetHandle(), Events = PollIn };

        public readonly bool IsReady => Revents != 0;
    }

    [LibraryImport("libc", EntryPoint = "eventfd", SetLastError = true)]
    private static partial int EventFd(uint initval, int flags);

    [LibraryImport("libc", EntryPoint = "poll", SetLastError = true)]
    private static partial int Poll(ref PollFd fds, nuint count, int timeout);

    [LibraryImport("libc", EntryPoint = "read", SetLastError = true)]
    private static partial nint Read(int fd, ref ulong value, nuint count);

    [LibraryImport("libc", EntryPoint = "write", SetLastError = true)]
    private static partial nint Write(int fd, ref ulong value, nuint count);
}
