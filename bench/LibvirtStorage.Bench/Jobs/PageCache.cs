using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace LibvirtStorage.Bench.Jobs;

/// <summary>
/// Drops files from the page cache (fsync, then posix_fadvise DONTNEED) so a timed job reads its input from the
/// disk whichever way it opens it. Only the bench's own files are touched, not the whole machine's cache
/// (other work on the shared machine keeps its cache).
/// </summary>
internal static partial class PageCache
{
    private const int PosixFadvDontNeed = 4;

    public static void Evict(IEnumerable<string> paths)
    {
        foreach (string path in paths)
        {
            using SafeFileHandle handle = File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite);
            if (fsync((int)handle.DangerousGetHandle()) != 0)
            {
                throw new IOException($"fsync {path} failed: errno {Marshal.GetLastPInvokeError()}");
            }

            int error = posix_fadvise((int)handle.DangerousGetHandle(), 0, 0, PosixFadvDontNeed);
            if (error != 0)
            {
                throw new IOException($"posix_fadvise(DONTNEED) {path} failed: errno {error}");
            }
        }
    }

    [LibraryImport("libc", SetLastError = true)]
    private static partial int fsync(int fd);

    // Returns the error number instead of setting errno.
    [LibraryImport("libc")]
    private static partial int posix_fadvise(int fd, long offset, long length, int advice);
}
