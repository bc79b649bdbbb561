namespace LibvirtStorage.Client;

/// <summary>What kind of failure a <see cref="StorageClientException"/> reports: org.lvstor.Storage1.Error.&lt;Kind&gt;, plus the client's own.</summary>
public enum StorageErrorKind
{
    /// <summary>Any other D-Bus error (for example org.freedesktop.DBus.Error.InvalidArgs).</summary>
    Other,

    /// <summary>No pool, volume, snapshot or job of that name, key or path.</summary>
    NotFound,

    /// <summary>The name is taken.</summary>
    Exists,

    /// <summary>A guest, a job or another volume uses it; the message names the users.</summary>
    InUse,

    /// <summary>A bad argument, or the object is in the wrong state.</summary>
    Invalid,

    /// <summary>An image or the state file is damaged.</summary>
    Corrupt,

    /// <summary>Another operation on the same volume or pool is running.</summary>
    Busy,

    /// <summary>The operating system reported an error.</summary>
    Io,

    /// <summary>The image uses a feature lvstord does not support.</summary>
    Unsupported,

    /// <summary>The job was cancelled.</summary>
    Cancelled,

    /// <summary>The caller may not call this method (lvstord's check or the bus policy).</summary>
    AccessDenied,

    /// <summary>lvstord is not on the bus, or the bus cannot be reached.</summary>
    ServiceUnavailable,
}
