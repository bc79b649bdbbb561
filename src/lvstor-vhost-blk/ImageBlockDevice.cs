using LibvirtStorage.Images;
using LibvirtStorage.Vhost;

namespace LibvirtStorage.VhostBlk;

/// <summary>
/// Exports an image engine <see cref="IBlockImage"/> as the vhost-user-blk <see cref="IBlockDevice"/>: capacity is
/// the virtual size, the logical block size 512 bytes, the serial the given one or the image's file name (at most
/// 20 bytes). Engine errors propagate as exceptions, which the virtio-blk handler turns into IOERR. The image is
/// thread-safe, so every queue worker calls it directly. Lives here until the service project owns it.
/// </summary>
internal sealed class ImageBlockDevice : IBlockDevice
{
    /// <summary>Bytes of a virtio-blk serial (VIRTIO_BLK_ID_BYTES).</summary>
    public const int SerialBytes = 20;

    private readonly IBlockImage _image;

    /// <summary>Wraps <paramref name="image"/> (not owned); <paramref name="serial"/> null means the file name.</summary>
    public ImageBlockDevice(IBlockImage image, string? serial)
    {
        ArgumentNullException.ThrowIfNull(image);
        _image = image;
        string s = serial ?? System.IO.Path.GetFileName(image.Path);
        Serial = s.Length > SerialBytes ? s[..SerialBytes] : s;
    }

    /// <inheritdoc/>
    public long Capacity => _image.VirtualSize;

    /// <inheritdoc/>
    public int LogicalBlockSize => 512;

    /// <inheritdoc/>
    public bool IsReadOnly => _image.IsReadOnly;

    /// <inheritdoc/>
    public string Serial { get; }

    /// <inheritdoc/>
    public void Read(long offset, Span<byte> destination) => _image.Read(offset, destination);

    /// <inheritdoc/>
    public void Write(long offset, ReadOnlySpan<byte> source) => _image.Write(offset, source);

    /// <inheritdoc/>
    public void Flush() => _image.Flush();

    /// <inheritdoc/>
    public void Discard(long offset, long length) => _image.Discard(offset, length);

    /// <inheritdoc/>
    public void WriteZeroes(long offset, long length, bool unmap) => _image.WriteZeroes(offset, length, unmap);
}
