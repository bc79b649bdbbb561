using System.Runtime.InteropServices;

namespace LibvirtStorage.Service.Native;

/// <summary>
/// fsync of a directory, so a rename in it survives a crash. .NET cannot open a directory as a file
/// handle, hence the three libc calls.
/// </summary>
internal static class DirectorySync
{
    private const int ORdOnly = 0;
    private const int ODirectory = 0x10000; // O_DIRECTORY on x86_64 and aarch64 Linux
    private const int OCloExec = 0x80000;

    public static void Sync(string directory)
    {
        int fd = Open(directory, ORdOnly | ODirectory | OCloExec);
        if (fd < 0)
        {
            throw new IOException($"cannot open directory {directory} to sync it (errno {Marshal.GetLastPInvokeError()})");
        }

        try
        {
            if (FSync(fd) != 0)
            {
                throw new IOException($"fsync of directory {directory} failed (errno {Marshal.GetLastPInvokeError()})");
            }
        }
        finally
        {
            _ = Close(fd);
        }
    }

    [DllImport("libc", EntryPoint = "open", SetLastError = true)]
    private static extern int Open([MarshalAs(UnmanagedType.LPUTF8Str)] string path, int flags);

    [DllImport("libc", EntryPoint = "fsync", SetLastError = true)]
    private static extern int FSync(int fd);

    [DllImport("libc", EntryPoint = "close", SetLastError = true)]
    private static extern int Close(int fd);
}
