using System.ComponentModel;
using System.Runtime.InteropServices;

namespace LibvirtStorage.Vhost.Memory;

/// <summary>
/// A <c>MAP_SHARED</c>, <c>PROT_READ|PROT_WRITE</c> mapping of <see cref="Size"/> bytes of a file descriptor (a
/// front-end's memfd) starting at an arbitrary offset. The handle is the page-aligned base that mmap returned;
/// <see cref="Pointer"/> is that base plus the offset's distance from its page boundary. Releasing the handle
/// munmaps the whole mapping, so the SafeHandle reference count is what keeps the pointer valid.
/// </summary>
internal sealed class MmapRegion : SafeHandle
{
    private nuint _mappedLength;
    private nuint _delta;

    private MmapRegion()
        : base(LibC.MapFailed, ownsHandle: true)
    {
    }

    /// <summary>Length of the usable range in bytes.</summary>
    public ulong Size { get; private set; }

    /// <summary>Host address of the first usable byte (offset <c>mmapOffset</c> of the file).</summary>
    public nint Pointer => handle + (nint)_delta;

    /// <inheritdoc/>
    public override bool IsInvalid => handle == LibC.MapFailed || handle == 0;

    /// <summary>
    /// Maps <paramref name="size"/> bytes of <paramref name="fd"/> from <paramref name="offset"/>. The descriptor may be
    /// closed afterwards: the mapping keeps the file alive. Throws on failure (control plane only).
    /// </summary>
    public static MmapRegion Map(SafeHandle fd, ulong offset, ulong size)
    {
        ArgumentNullException.ThrowIfNull(fd);
        ArgumentOutOfRangeException.ThrowIfZero(size);
        ulong page = (ulong)Environment.SystemPageSize;
        ulong delta = offset % page;
        ulong alignedOffset = offset - delta;
        if (size > long.MaxValue - delta || alignedOffset > long.MaxValue || size + delta > (ulong)nuint.MaxValue)
        {
            throw new ArgumentOutOfRangeException(nameof(size), $"mapping of {size} bytes at offset {offset} does not fit");
        }

        var region = new MmapRegion();
        bool added = false;
        try
        {
            fd.DangerousAddRef(ref added);
            int rawFd = (int)fd.DangerousGetHandle();
            nuint length = (nuint)(size + delta);
            nint address = LibC.Mmap(0, length, LibC.ProtRead | LibC.ProtWrite, LibC.MapShared, rawFd, (long)alignedOffset);
            if (address == LibC.MapFailed)
            {
                int errno = Marshal.GetLastPInvokeError();
                region.Dispose();
                throw new IOException($"mmap of {size} bytes at offset {offset} failed: {new Win32Exception(errno).Message}", errno);
            }

            region.SetHandle(address);
            region._mappedLength = length;
            region._delta = (nuint)delta;
            region.Size = size;
            return region;
        }
        finally
        {
            if (added)
            {
                fd.DangerousRelease();
            }
        }
    }

    /// <inheritdoc/>
    protected override bool ReleaseHandle() => LibC.Munmap(handle, _mappedLength) == 0;
}
