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

    /// <summary>
    /// Replaces <paramref name="path"/> atomically and durably: <paramref name="write"/> fills <c>path.tmp</c>, which is
    /// fsynced, renamed over <paramref name="path"/>, and the directory fsynced. The temporary file is removed on failure.
    /// </summary>
    public static void ReplaceFile(string path, Action<Stream> write)
    {
        string directory = Path.GetDirectoryName(Path.GetFullPath(path))!;
        string temporary = path + ".tmp";
        try
        {
            Directory.CreateDirectory(directory);
            using (var stream = new FileStream(temporary, FileMode.Create, FileAccess.Write, FileShare.None))
            {
                write(stream);
                stream.Flush(flushToDisk: true);
            }

            File.Move(temporary, path, overwrite: true);
            Sync(directory);
        }
        catch
        {
            try
            {
                File.Delete(temporary);
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                // The original error matters more; a stray .tmp is overwritten next time.
            }

            throw;
        }
    }

    [DllImport("libc", EntryPoint = "open", SetLastError = true)]
    private static extern int Open([MarshalAs(UnmanagedType.LPUTF8Str)] string path, int flags);

    [DllImport("libc", EntryPoint = "fsync", SetLastError = true)]
    private static extern int FSync(int fd);

    [DllImport("libc", EntryPoint = "close", SetLastError = true)]
    private static extern int Close(int fd);
}
