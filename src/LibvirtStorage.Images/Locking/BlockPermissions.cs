namespace LibvirtStorage.Images.Locking;

/// <summary>
/// QEMU's block permissions (BLK_PERM_* in include/block/block-common.h of QEMU 7.2). The bit number
/// of each permission is also its offset from the lock-byte bases in <see cref="ImageLock"/>, so these
/// values are part of the on-disk (well, in-kernel) protocol shared with QEMU and must never change.
/// </summary>
[Flags]
internal enum BlockPermissions
{
    /// <summary>No permission.</summary>
    None = 0,

    /// <summary>BLK_PERM_CONSISTENT_READ: reads return what the image holds (no one rewrites it underneath).</summary>
    ConsistentRead = 0x01,

    /// <summary>BLK_PERM_WRITE: the contents may change.</summary>
    Write = 0x02,

    /// <summary>BLK_PERM_WRITE_UNCHANGED: writes that do not change what a reader sees (copy-on-read, streaming).</summary>
    WriteUnchanged = 0x04,

    /// <summary>BLK_PERM_RESIZE: the file may grow or shrink.</summary>
    Resize = 0x08,

    /// <summary>BLK_PERM_ALL in QEMU 7.2 (BLK_PERM_GRAPH_MOD was removed in 7.0, so 4 bits).</summary>
    All = 0x0f,
}
