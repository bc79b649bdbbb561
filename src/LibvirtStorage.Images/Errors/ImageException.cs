namespace LibvirtStorage.Images;

/// <summary>An image could not be opened, read, written or changed.</summary>
public class ImageException : LibvirtStorageException
{
    /// <summary>Creates the exception.</summary>
    public ImageException(ErrorKind kind, string message, string? path = null, long? offset = null, Exception? inner = null)
        : base(kind, path is null ? message : $"{path}: {message}", path, offset, inner)
    {
    }
}
