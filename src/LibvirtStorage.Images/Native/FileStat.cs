using System.Runtime.InteropServices;

namespace LibvirtStorage.Images.Native;

/// <summary>statx(2) for the one fact .NET does not expose: blocks allocated to a file.</summary>
internal static unsafe partial class FileStat
{
    private const int AtFdCwd = -100;
    private const uint StatxBlocks = 0x400;

    // struct statx has the same layout on every Linux architecture: stx_blocks is the u64 at byte 48.
    private const int StatxSize = 256;
    private const int StxBlocksOffset = 48;

    /// <summary>Bytes allocated to the file (st_blocks * 512), as <c>du</c> and qemu-img's "actual-size" count them.</summary>
    public static long AllocatedBytes(string path)
    {
        byte* buffer = stackalloc byte[StatxSize];
        if (statx(AtFdCwd, path, 0, StatxBlocks, buffer) != 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            throw new ImageException(ErrorKind.Io, $"cannot stat: {Libc.StrError(errno)}", path);
        }

        // SAFETY: buffer holds StatxSize bytes written by statx; the read is within them and 8-byte aligned.
        return (long)*(ulong*)(buffer + StxBlocksOffset) * 512;
    }

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int statx(int dirfd, string path, int flags, uint mask, byte* buffer);
}
