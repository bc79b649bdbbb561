using System.Runtime.InteropServices;

namespace LibvirtStorage.Vhost.Memory;

/// <summary>The libc calls that map guest memory (Linux x86-64 and aarch64 values).</summary>
internal static partial class LibC
{
    internal const int ProtRead = 0x1;
    internal const int ProtWrite = 0x2;
    internal const int MapShared = 0x01;

    /// <summary>The value mmap returns on failure.</summary>
    internal static readonly nint MapFailed = -1;

    [LibraryImport("libc", EntryPoint = "mmap", SetLastError = true)]
    internal static partial nint Mmap(nint addr, nuint length, int prot, int flags, int fd, long offset);

    [LibraryImport("libc", EntryPoint = "munmap", SetLastError = true)]
    internal static partial int Munmap(nint addr, nuint length);

    internal const uint MfdCloexec = 0x1;
    internal const uint MfdAllowSealing = 0x2;
    internal const int FAddSeals = 1033;
    internal const int FGetSeals = 1034;
    internal const int SealSeal = 0x1;
    internal const int SealShrink = 0x2;
    internal const int SealGrow = 0x4;

    [LibraryImport("libc", EntryPoint = "memfd_create", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int MemfdCreate(string name, uint flags);

    [LibraryImport("libc", EntryPoint = "fcntl", SetLastError = true)]
    internal static partial int Fcntl(int fd, int command, int argument);
}
