namespace LibvirtStorage.Images;

/// <summary>
/// The image metadata is inconsistent (qcow2.txt invariants violated). An image that raised this is
/// never written again by this process; <c>lvstor image check -r</c> or <c>qemu-img check -r all</c> may repair it.
/// </summary>
public sealed class ImageCorruptException : ImageException
{
    /// <summary>Creates the exception.</summary>
    public ImageCorruptException(string path, long? offset, string message)
        : base(ErrorKind.Corrupt, offset is null ? $"image is corrupt: {message}" : $"image is corrupt at offset 0x{offset:x}: {message}", path, offset)
    {
    }
}
