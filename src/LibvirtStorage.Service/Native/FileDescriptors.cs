using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace LibvirtStorage.Service.Native;

/// <summary>Facts about a passed file descriptor that .NET does not expose.</summary>
internal static class FileDescriptors
{
    private const int SeekCur = 1;

    /// <summary>True for regular files and block devices (positional I/O, holes possible); false for pipes and sockets.</summary>
    public static bool IsSeekable(SafeFileHandle handle)
    {
        bool added = false;
        try
        {
            handle.DangerousAddRef(ref added);
            return LSeek((int)handle.DangerousGetHandle(), 0, SeekCur) >= 0;
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
}
