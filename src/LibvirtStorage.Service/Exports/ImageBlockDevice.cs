using LibvirtStorage.Images;
using LibvirtStorage.Vhost;

namespace LibvirtStorage.Service;

/// <summary>
/// Exports an image engine <see cref="IBlockImage"/> as the vhost-user-blk <see cref="IBlockDevice"/>: capacity is
/// the virtual size, the logical block size 512 bytes, the serial the given one or the image's file name (at most
/// 20 bytes). Engine errors propagate as exceptions, which the virtio-blk handler turns into IOERR. The image is
/// thread-safe, so every queue worker calls it directly. The service's exports wrap it in a
/// <see cref="SwitchableBlockDevice"/>; lvstor-vhost-blk serves it directly.
/// </summary>
/// <remarks>
/// Live resize (<see cref="Grow"/>): the engine's <c>Resize</c> takes the image's metadata monitor like any
/// allocating write, so it is safe while queue workers have I/O in flight (Images README, "Concurrency"). The
/// capacity the handler checks requests against is this adapter's own copy, published only after the engine has
/// finished (a qcow2 overlay first zeroes the part a longer backing file would show), so no request reaches the
/// new range before it is ready. Shrinking is refused: the guest would still address the cut-off tail.
/// </remarks>
public sealed class ImageBlockDevice : IBlockDevice
{
    /// <summary>Bytes of a virtio-blk serial (VIRTIO_BLK_ID_BYTES).</summary>
    public const int SerialBytes = 20;

    private readonly IBlockImage _image;
    private readonly Lock _resizeGate = new();
    private long _capacity;

    /// <summary>Wraps <paramref name="image"/> (not owned); <paramref name="serial"/> null means the file name.</summary>
    public ImageBlockDevice(IBlockImage image, string? serial)
    {
        ArgumentNullException.ThrowIfNull(image);
        _image = image;
        string s = serial ?? System.IO.Path.GetFileName(image.Path);
        Serial = s.Length > SerialBytes ? s[..SerialBytes] : s;
        _capacity = image.VirtualSize;
    }

    /// <inheritdoc/>
    public long Capacity => Volatile.Read(ref _capacity);

    /// <summary>
    /// Grows the image to <paramref name="newSize"/> bytes while the export runs; the same size is a no-op.
    /// Then tell the front-end (<c>VhostUserBlkServer.NotifyCapacityChanged</c>).
    /// </summary>
    /// <exception cref="ImageException">Not a positive multiple of 512 bytes, smaller than the capacity
    /// (<see cref="ErrorKind.InvalidArgument"/>), a read-only export (<see cref="ErrorKind.ReadOnly"/>), or the
    /// engine's own refusal.</exception>
    public void Grow(long newSize)
    {
        if (newSize <= 0 || newSize % LogicalBlockSize != 0)
            throw new ImageException(ErrorKind.InvalidArgument, $"the new size {newSize} is not a positive multiple of {LogicalBlockSize} bytes");
        if (IsReadOnly)
            throw new ImageException(ErrorKind.ReadOnly, "a read-only export cannot be resized");
        lock (_resizeGate)
        {
            long current = Capacity;
            if (newSize < current)
                throw new ImageException(ErrorKind.InvalidArgument, $"shrinking a live export is not supported (capacity {current} bytes, asked {newSize})");
            if (newSize == current)
                return;
            _image.Resize(newSize);
            Volatile.Write(ref _capacity, newSize);
        }
    }

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
