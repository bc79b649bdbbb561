namespace LibvirtStorage.Service;

/// <summary>
/// Why a service call failed. Each kind is one D-Bus error name, <c>org.lvstor.Storage1.Error.&lt;Kind&gt;</c>
/// (see <see cref="StorageServiceException.DBusErrorName"/>), so the adapter maps errors in one place.
/// </summary>
public enum StorageErrorKind
{
    /// <summary>No pool, volume or snapshot has that name (or key).</summary>
    NotFound,
    /// <summary>The name is taken, or a file of that name is already in the pool directory.</summary>
    Exists,
    /// <summary>Something uses the object (another volume as backing, an export, a domain); the message names the users.</summary>
    InUse,
    /// <summary>An argument is wrong (name, size, format, flag) or the object is in the wrong state for the call.</summary>
    Invalid,
    /// <summary>An image or the state file is damaged.</summary>
    Corrupt,
    /// <summary>Another operation on the same object is running, or the image is locked by another process.</summary>
    Busy,
    /// <summary>The operating system reported an error (disk full, permission denied, I/O error).</summary>
    Io,
    /// <summary>The image uses a feature this service or its engine does not support.</summary>
    Unsupported,
    /// <summary>The operation was cancelled by its caller.</summary>
    Cancelled,
}
