namespace LibvirtStorage.Images;

/// <summary>The small, stable set of failure kinds callers switch on.</summary>
public enum ErrorKind
{
    /// <summary>The file is not an image of the expected format, or its header is malformed.</summary>
    InvalidFormat,
    /// <summary>The image uses a feature this engine does not implement (encryption, external data file, ...).</summary>
    UnsupportedFeature,
    /// <summary>The image metadata is inconsistent; the image is never written after this.</summary>
    Corrupt,
    /// <summary>A request falls outside the image.</summary>
    OutOfBounds,
    /// <summary>The operating system reported an I/O error.</summary>
    Io,
    /// <summary>The image is locked by another process (QEMU or another lvstord).</summary>
    Locked,
    /// <summary>The operation is not valid for this image or these arguments.</summary>
    InvalidArgument,
    /// <summary>The image was opened read-only.</summary>
    ReadOnly,
}
