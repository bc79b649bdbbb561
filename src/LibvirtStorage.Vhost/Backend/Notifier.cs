using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace LibvirtStorage.Vhost.Backend;

/// <summary>
/// eventfd plumbing for the queue workers: create, signal, drain, and wait on a kick fd and a stop fd together
/// with poll(2). No pointers: the P/Invokes take <c>ref</c> arguments, marshalled by LibraryImport.
/// </summary>
internal static partial class Notifier
{
    private const int EfdCloexec = 0x80000;
    private const short PollIn = 0x1;
    private const int Eintr = 4;

    /// <summary>What <see cref="Wait"/> saw.</summary>
    public enum WaitResult
    {
        /// <summary>The stop fd is readable (it wins over a kick).</summary>
        Stop,
        /// <summary>The kick fd is readable, or in an error/hang-up state (a read then tells).</summary>
        Kick,
    }

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

    /// <summary>Blocks until <paramref name="stop"/> or <paramref name="kick"/> (if any) is readable.</summary>
    public static WaitResult Wait(SafeHandle kick, SafeHandle stop, bool watchKick)
    {
        var fds = new PollPair
        {
            Stop = new PollFd { Fd = (int)stop.DangerousGetHandle(), Events = PollIn },
            Kick = new PollFd { Fd = watchKick ? (int)kick.DangerousGetHandle() : -1, Events = PollIn },
        };
        while (true)
        {
            int n = Poll(ref fds, 2, -1);
            if (n < 0)
            {
                int errno = Marshal.GetLastPInvokeError();
                if (errno == Eintr)
                    continue;
                throw new IOException($"poll failed: {Marshal.GetPInvokeErrorMessage(errno)}");
            }

            if (fds.Stop.Revents != 0)
                return WaitResult.Stop;
            if (fds.Kick.Revents != 0)
                return WaitResult.Kick;
        }
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct PollFd
    {
        public int Fd;
        public short Events;
        public short Revents;
    }

    // struct pollfd[2] as one blittable value, so poll can take it by ref.
    [StructLayout(LayoutKind.Sequential)]
    private struct PollPair
    {
        public PollFd Stop;
        public PollFd Kick;
    }

    [LibraryImport("libc", EntryPoint = "eventfd", SetLastError = true)]
    private static partial int EventFd(uint initval, int flags);

    [LibraryImport("libc", EntryPoint = "poll", SetLastError = true)]
    private static partial int Poll(ref PollPair fds, nuint count, int timeout);

    [LibraryImport("libc", EntryPoint = "read", SetLastError = true)]
    private static partial nint Read(int fd, ref ulong value, nuint count);

    [LibraryImport("libc", EntryPoint = "write", SetLastError = true)]
    private static partial nint Write(int fd, ref ulong value, nuint count);
}
