using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace LibvirtStorage.Service.Native;

/// <summary>
/// Where a passed regular file has data and holes (lseek SEEK_DATA/SEEK_HOLE), so an upload from a sparse file
/// skips its holes instead of reading zeroes.
/// A file or filesystem that cannot tell reports everything as data, which is always correct.
/// </summary>
internal static class FileExtents
{
    private const int SeekData = 3;
    private const int SeekHole = 4;
    private const int ENxio = 6;

    /// <summary>Where the first data at or after <paramref name="offset"/> begins; null when none follows (a hole up to the end of the file, or the end itself).</summary>
    public static long? NextData(SafeFileHandle handle, long offset)
    {
        (long at, int errno) = Seek(handle, offset, SeekData);
        return at >= 0 ? at : errno == ENxio ? null : offset;
    }

    /// <summary>Where the first hole at or after <paramref name="offset"/> begins (every file ends in one, at its end).</summary>
    public static long NextHole(SafeFileHandle handle, long offset)
    {
        (long at, _) = Seek(handle, offset, SeekHole);
        return at >= 0 ? at : long.MaxValue;
    }

    // SEEK_DATA/SEEK_HOLE move the shared file position; the transfers read regular files positionally, so that is harmless.
    private static (long At, int Errno) Seek(SafeFileHandle handle, long offset, int whence)
    {
        bool added = false;
        try
        {
            handle.DangerousAddRef(ref added);
            long at = LSeek((int)handle.DangerousGetHandle(), offset, whence);
            return (at, at < 0 ? Marshal.GetLastPInvokeError() : 0);
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
