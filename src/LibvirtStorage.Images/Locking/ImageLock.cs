using System.Runtime.InteropServices;
using LibvirtStorage.Images.Native;

namespace LibvirtStorage.Images.Locking;

/// <summary>
/// QEMU-compatible open-file-description locks on an image file, so QEMU and lvstord refuse each
/// other's conflicting opens exactly as two QEMU processes do.
/// </summary>
/// <remarks>
/// <para>The scheme is QEMU's (block/file-posix.c, raw_apply_lock_bytes and raw_check_lock_bytes). For
/// each permission bit <c>i</c> of <see cref="BlockPermissions"/> there are two lock bytes: byte
/// <c>100 + i</c> is read-locked (F_OFD_SETLK, F_RDLCK) by every user that <em>holds</em> the permission,
/// and byte <c>200 + i</c> by every user that does <em>not share</em> it. Read locks never conflict with
/// each other; conflicts are found by testing (F_OFD_GETLK with F_WRLCK, which ignores the caller's own
/// open file description): a user that wants permission <c>i</c> fails when byte <c>200 + i</c> is
/// locked by someone else, and a user that refuses to share <c>i</c> fails when byte <c>100 + i</c> is.
/// Like QEMU we first take our bytes and then test, so two racing openers cannot both miss each other.
/// Byte 0 belongs to libvirt's virtlockd and is never touched.</para>
/// <para>What the engine holds mirrors a QEMU guest device on a qcow2 node (measured with
/// <c>/proc/locks</c> against qemu-io 7.2): a writer holds consistent-read, write and resize (bytes
/// 100, 101, 103); every open, reader or writer, refuses to share write and resize (bytes 201, 203)
/// because qcow2 metadata cannot change underneath an open image, and QEMU does the same for qcow2 at
/// every level of a chain. Consistent-read and write-unchanged are always shared, so a QEMU overlay (or
/// another lvstord chain) may use an image we hold read-only as its backing file. For raw files QEMU's
/// tools share everything and only a guest device refuses write; lvstord serves guests, so it applies
/// the device's rule to raw images too.</para>
/// </remarks>
internal sealed class ImageLock : IDisposable
{
    /// <summary>RAW_LOCK_PERM_BASE: first byte of the "permission held" bytes.</summary>
    internal const int PermissionBase = 100;

    /// <summary>RAW_LOCK_SHARED_BASE: first byte of the "permission not shared" bytes.</summary>
    internal const int SharedBase = 200;

    /// <summary>Permissions every open leaves to others: reading and unchanged writes.</summary>
    internal const BlockPermissions EngineShared = BlockPermissions.ConsistentRead | BlockPermissions.WriteUnchanged;

    private const int PermissionCount = 4;

    private readonly ImageFile _file;
    private BlockPermissions _lockedHeld;
    private BlockPermissions _lockedUnshared;
    private int _disposed;

    private ImageLock(ImageFile file)
    {
        _file = file;
        Shared = BlockPermissions.All;
    }

    /// <summary>Permissions this lock holds.</summary>
    public BlockPermissions Held { get; private set; }

    /// <summary>Permissions this lock leaves to other users.</summary>
    public BlockPermissions Shared { get; private set; }

    /// <summary>Takes the locks for a reader or a writer; throws <see cref="ImageException"/> (Locked) on conflict.</summary>
    public static ImageLock Acquire(ImageFile file, bool writable) =>
        Acquire(file, PermissionsFor(writable), EngineShared);

    /// <summary>The permissions the engine holds for an open image.</summary>
    public static BlockPermissions PermissionsFor(bool writable) =>
        writable
            ? BlockPermissions.ConsistentRead | BlockPermissions.Write | BlockPermissions.Resize
            : BlockPermissions.ConsistentRead;

    /// <summary>
    /// Takes the lock bytes for <paramref name="held"/> and for every permission outside
    /// <paramref name="shared"/>, then checks that no other user conflicts.
    /// </summary>
    /// <exception cref="ImageException">Locked when another process conflicts; Io when the file system refuses locks.</exception>
    public static ImageLock Acquire(ImageFile file, BlockPermissions held, BlockPermissions shared)
    {
        ArgumentNullException.ThrowIfNull(file);
        var imageLock = new ImageLock(file);
        try
        {
            imageLock.Change(held, shared);
        }
        catch
        {
            imageLock.Dispose();
            throw;
        }

        return imageLock;
    }

    /// <summary>
    /// Changes what this lock holds and shares (for example a backing file that a commit job is about
    /// to write), in QEMU's two phases: first the union of old and new bytes is locked and the new
    /// permissions are checked; then the bytes only the old permissions needed are released. On a
    /// conflict nothing changes and <see cref="ImageException"/> (Locked) is thrown. Not thread-safe:
    /// the owner of the image serialises changes.
    /// </summary>
    public void Change(BlockPermissions held, BlockPermissions shared)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        held &= BlockPermissions.All;
        shared &= BlockPermissions.All;
        try
        {
            Apply(Held | held, ~Shared | ~shared, unlock: false);
            Check(held, shared);
        }
        catch
        {
            Apply(Held, ~Shared, unlock: true);
            throw;
        }

        Apply(held, ~shared, unlock: true);
        Held = held;
        Shared = shared;
    }

    /// <summary>QEMU's name of one permission (bdrv_perm_names), used in error messages.</summary>
    public static string PermissionName(BlockPermissions permission) => permission switch
    {
        BlockPermissions.ConsistentRead => "consistent read",
        BlockPermissions.Write => "write",
        BlockPermissions.WriteUnchanged => "write unchanged",
        BlockPermissions.Resize => "resize",
        _ => permission.ToString(),
    };

    /// <summary>Releases every lock byte (closing the file would release them too).</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        bool added = false;
        try
        {
            _file.Handle.DangerousAddRef(ref added);
            // Failures are ignored: unlocking cannot conflict, and the locks die with the descriptor.
            _ = SetLock(_file.Fd, PermissionBase, PermissionCount, Libc.F_UNLCK);
            _ = SetLock(_file.Fd, SharedBase, PermissionCount, Libc.F_UNLCK);
        }
        catch (ObjectDisposedException)
        {
            // The file is already closed, and with it every lock of its open file description.
        }
        finally
        {
            if (added)
            {
                _file.Handle.DangerousRelease();
            }
        }
    }

    /// <summary>Locks the bytes for <paramref name="held"/> and <paramref name="unshared"/>; with <paramref name="unlock"/> also releases the others (raw_apply_lock_bytes).</summary>
    private void Apply(BlockPermissions held, BlockPermissions unshared, bool unlock)
    {
        held &= BlockPermissions.All;
        unshared &= BlockPermissions.All;
        ApplyBytes(PermissionBase, held, ref _lockedHeld, unlock);
        ApplyBytes(SharedBase, unshared, ref _lockedUnshared, unlock);
    }

    private void ApplyBytes(int baseOffset, BlockPermissions wanted, ref BlockPermissions locked, bool unlock)
    {
        for (int i = 0; i < PermissionCount; i++)
        {
            var bit = (BlockPermissions)(1 << i);
            if ((wanted & bit) != 0 && (locked & bit) == 0)
            {
                LockByte(baseOffset + i);
                locked |= bit;
            }
            else if (unlock && (wanted & bit) == 0 && (locked & bit) != 0)
            {
                // Releasing cannot conflict; a failure would only leave a byte locked until close.
                _ = SetLock(_file.Fd, baseOffset + i, 1, Libc.F_UNLCK);
                locked &= ~bit;
            }
        }
    }

    /// <summary>Fails when another user does not share a permission in <paramref name="held"/>, or holds one outside <paramref name="shared"/> (raw_check_lock_bytes).</summary>
    private void Check(BlockPermissions held, BlockPermissions shared)
    {
        for (int i = 0; i < PermissionCount; i++)
        {
            var bit = (BlockPermissions)(1 << i);
            if ((held & bit) != 0 && IsLockedByOthers(SharedBase + i))
            {
                ThrowHelper.Locked(
                    _file.Path,
                    $"Failed to get \"{PermissionName(bit)}\" lock: another process (QEMU or lvstord) has the image open and does not share the \"{PermissionName(bit)}\" permission");
            }
        }

        for (int i = 0; i < PermissionCount; i++)
        {
            var bit = (BlockPermissions)(1 << i);
            if ((shared & bit) == 0 && IsLockedByOthers(PermissionBase + i))
            {
                ThrowHelper.Locked(
                    _file.Path,
                    $"Failed to get shared \"{PermissionName(bit)}\" lock: another process (QEMU or lvstord) has the image open with the \"{PermissionName(bit)}\" permission");
            }
        }
    }

    private void LockByte(int offset)
    {
        int errno = SetLock(_file.Fd, offset, 1, Libc.F_RDLCK);
        if (errno == 0)
        {
            return;
        }

        if (errno is Libc.EAGAIN or Libc.EACCES)
        {
            ThrowHelper.Locked(_file.Path, $"Failed to lock byte {offset}: another process holds an exclusive lock on it");
        }

        ThrowHelper.Io(_file.Path, offset, errno, "OFD lock (fcntl F_OFD_SETLK)");
    }

    private bool IsLockedByOthers(int offset)
    {
        var flock = new Flock { Type = Libc.F_WRLCK, Whence = Libc.SEEK_SET, Start = offset, Length = 1 };
        int result;
        unsafe
        {
            // SAFETY: flock is a local of the exact struct flock layout; fcntl only writes within it.
            result = Libc.fcntl(_file.Fd, Libc.F_OFD_GETLK, &flock);
        }

        if (result != 0)
        {
            ThrowHelper.Io(_file.Path, offset, Marshal.GetLastPInvokeError(), "OFD lock test (fcntl F_OFD_GETLK)");
        }

        return flock.Type != Libc.F_UNLCK;
    }

    private static int SetLock(int fd, int offset, int length, short type)
    {
        var flock = new Flock { Type = type, Whence = Libc.SEEK_SET, Start = offset, Length = length };
        unsafe
        {
            // SAFETY: flock is a local of the exact struct flock layout; F_OFD_SETLK only reads it.
            return Libc.fcntl(fd, Libc.F_OFD_SETLK, &flock) == 0 ? 0 : Marshal.GetLastPInvokeError();
        }
    }
}
