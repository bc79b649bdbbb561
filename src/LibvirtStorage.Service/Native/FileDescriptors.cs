using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace LibvirtStorage.Service.Native;

/// <summary>
/// Sequential I/O on passed file descriptors that may be pipes or sockets, which .NET's
/// <see cref="RandomAccess"/> refuses ("does not support seeking"), and the seekability test.
/// </summary>
internal static class FileDescriptors
{
    private const int SeekCur = 1;
    private const int EIntr = 4;

    /// <summary>True for regular files and block devices (positional I/O, holes possible); false for pipes and sockets.</summary>
    public static bool IsSeekable(SafeFileHandle handle) => Use(handle, fd => LSeek(fd, 0, SeekCur) >= 0);

    /// <summary>Reads what is available (at least one byte unless at end of file); 0 at end of file.</summary>
    public static int Read(SafeFileHandle handle, Span<byte> buffer)
    {
        while (true)
        {
            long n = ReadOnce(handle, buffer);
            if (n >= 0)
            {
                return (int)n;
            }

            int errno = Marshal.GetLastPInvokeError();
            if (errno != EIntr)
            {
                throw new IOException($"read from the passed file descriptor failed (errno {errno})");
            }
        }
    }

    /// <summary>Writes all of <paramref name="data"/>, looping over short writes.</summary>
    public static void WriteAll(SafeFileHandle handle, ReadOnlySpan<byte> data)
    {
        while (!data.IsEmpty)
        {
            long n = WriteOnce(handle, data);
            if (n < 0)
            {
                int errno = Marshal.GetLastPInvokeError();
                if (errno == EIntr)
                {
                    continue;
                }

                throw new IOException($"write to the passed file descriptor failed (errno {errno}{(errno == 32 ? ", the reader went away" : string.Empty)})");
            }

            data = data[(int)n..];
        }
    }

    private static long ReadOnce(SafeFileHandle handle, Span<byte> buffer)
    {
        bool added = false;
        try
        {
            handle.DangerousAddRef(ref added);
            return (long)ReadNative((int)handle.DangerousGetHandle(), ref MemoryMarshal.GetReference(buffer), buffer.Length);
        }
        finally
        {
            if (added)
            {
                handle.DangerousRelease();
            }
        }
    }

    private static long WriteOnce(SafeFileHandle handle, ReadOnlySpan<byte> data)
    {
        bool added = false;
        try
        {
            handle.DangerousAddRef(ref added);
            return (long)WriteNative((int)handle.DangerousGetHandle(), in MemoryMarshal.GetReference(data), data.Length);
        }
        finally
        {
            if (added)
            {
                handle.DangerousRelease();
            }
        }
    }

    /// <summary>Runs <paramref name="call"/> on the descriptor while holding a reference, so it cannot be closed meanwhile.</summary>
    private static T Use<T>(SafeFileHandle handle, Func<int, T> call)
    {
        bool added = false;
        try
        {
            handle.DangerousAddRef(ref added);
            return call((int)handle.DangerousGetHandle());
        }
        finally
        {
            if (added)
            {
                handle.DangerousRelease();
            }
        }
    }

    [DllImport("libc", EntryPoint = "lseek", SetLastError = true)]
    private static extern long LSeek(int fd, long offset, int whence);

    // The buffer is passed as a reference to its first byte: the marshaller pins it, no unsafe code needed.
    [DllImport("libc", EntryPoint = "read", SetLastError = true)]
    private static extern nint ReadNative(int fd, ref byte buffer, nint count);

    [DllImport("libc", EntryPoint = "write", SetLastError = true)]
    private static extern nint WriteNative(int fd, in byte buffer, nint count);
}
