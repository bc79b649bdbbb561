namespace LibvirtStorage.Images;

/// <summary>Base of every error LibvirtStorage reports on purpose.</summary>
public abstract class LibvirtStorageException : Exception
{
    /// <summary>Creates the exception.</summary>
    protected LibvirtStorageException(ErrorKind kind, string message, string? path = null, long? offset = null, Exception? inner = null)
        : base(message, inner)
    {
        Kind = kind;
        Path = path;
        Offset = offset;
    }

    /// <summary>What went wrong, as a stable category.</summary>
    public ErrorKind Kind { get; }

    /// <summary>The file concerned, when there is one.</summary>
    public string? Path { get; }

    /// <summary>The byte offset in the file concerned, when there is one.</summary>
    public long? Offset { get; }
}
