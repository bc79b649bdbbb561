namespace LibvirtStorage.Service;

/// <summary>
/// The one error type the service throws on purpose. The message says what went wrong and what to do.
/// </summary>
/// <remarks>
/// It does not derive from the engine's <c>LibvirtStorageException</c>: that base carries the engine's
/// <c>ErrorKind</c>, whose values (OutOfBounds, ReadOnly, ...) are not the service's vocabulary.
/// Engine errors arrive as <see cref="Exception.InnerException"/>.
/// </remarks>
public sealed class StorageServiceException : Exception
{
    /// <summary>Creates the exception.</summary>
    public StorageServiceException(StorageErrorKind kind, string message, Exception? inner = null)
        : base(message, inner)
    {
        Kind = kind;
    }

    /// <summary>The stable category callers switch on.</summary>
    public StorageErrorKind Kind { get; }

    /// <summary>The D-Bus error name, <c>org.lvstor.Storage1.Error.&lt;Kind&gt;</c>.</summary>
    public string DBusErrorName => "org.lvstor.Storage1.Error." + Kind;
}
