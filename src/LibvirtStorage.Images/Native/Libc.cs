using System.Runtime.InteropServices;

namespace LibvirtStorage.Images.Native;

/// <summary>The few Linux calls .NET does not expose: fdatasync, fallocate, lseek for holes, fcntl OFD locks, O_DIRECT open.</summary>
internal static unsafe partial class Libc
{
    public const int O_RDONLY = 0;
    public const int O_RDWR = 2;
    public const int O_CREAT = 0x40;
    public const int O_EXCL = 0x80;
    public const int O_DIRECT = 0x4000;
    public const int O_CLOEXEC = 0x80000;

    public const int FALLOC_FL_KEEP_SIZE = 0x01;
    public const int FALLOC_FL_PUNCH_HOLE = 0x02;
    public const int FALLOC_FL_ZERO_RANGE = 0x10;

    public const int SEEK_DATA = 3;
    public const int SEEK_HOLE = 4;

    public const int EINTR = 4;
    public const int EAGAIN = 11;
    public const int EACCES = 13;
    public const int EINVAL = 22;
    public const int ENXIO = 6;
    public const int EOPNOTSUPP = 95;

    /// <summary>F_OFD_GETLK: test for a conflicting open-file-description lock.</summary>
    public const int F_OFD_GETLK = 36;
    /// <summary>F_OFD_SETLK: take or release an open-file-description lock without waiting.</summary>
    public const int F_OFD_SETLK = 37;

    public const short F_RDLCK = 0;
    public const short F_WRLCK = 1;
    public const short F_UNLCK = 2;
    public const short SEEK_SET = 0;

    public const int AT_EMPTY_PATH = 0x1000;
    public const uint STATX_DIOALIGN = 0x2000;

    [LibraryImport("libc", SetLastError = true)]
    public static partial int fdatasync(int fd);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int fsync(int fd);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int fallocate(int fd, int mode, long offset, long len);

    [LibraryImport("libc", SetLastError = true)]
    public static partial long lseek(int fd, long offset, int whence);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int open(string path, int flags, int mode);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int fcntl(int fd, int cmd, void* arg);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int statx(int dirfd, string path, int flags, uint mask, StatxBuffer* buffer);

    [LibraryImport("libc")]
    private static partial IntPtr strerror(int errnum);

    public static string StrError(int errno) => Marshal.PtrToStringUTF8(strerror(errno)) ?? $"errno {errno}";
}

/// <summary>struct flock (x86_64 and aarch64 Linux layout: 32 bytes).</summary>
[StructLayout(LayoutKind.Explicit, Size = 32)]
internal struct Flock
{
    [FieldOffset(0)]
    public short Type;

    [FieldOffset(2)]
    public short Whence;

    [FieldOffset(8)]
    public long Start;

    [FieldOffset(16)]
    public long Length;

    /// <summary>Must be 0 for OFD locks; F_OFD_GETLK reports -1.</summary>
    [FieldOffset(24)]
    public int Pid;
}

/// <summary>struct statx (256 bytes); only the fields the engine reads are named.</summary>
[StructLayout(LayoutKind.Explicit, Size = 256)]
internal struct StatxBuffer
{
    /// <summary>stx_mask: which fields the kernel filled in.</summary>
    [FieldOffset(0)]
    public uint Mask;

    /// <summary>stx_dio_mem_align: required alignment of O_DIRECT user buffers, 0 when unsupported.</summary>
    [FieldOffset(0x98)]
    public uint DioMemAlign;

    /// <summary>stx_dio_offset_align: required alignment of O_DIRECT file offsets and lengths.</summary>
    [FieldOffset(0x9c)]
    public uint DioOffsetAlign;
}
