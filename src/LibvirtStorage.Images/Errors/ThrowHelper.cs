using System.Diagnostics.CodeAnalysis;

namespace LibvirtStorage.Images;

/// <summary>Throw sites kept out of hot methods so those stay small and inlinable.</summary>
internal static class ThrowHelper
{
    [DoesNotReturn]
    public static void OutOfBounds(string path, long offset, long length, long size) =>
        throw new ImageException(ErrorKind.OutOfBounds, $"request at offset {offset} length {length} is outside the image size {size}", path, offset);

    [DoesNotReturn]
    public static void ReadOnly(string path) =>
        throw new ImageException(ErrorKind.ReadOnly, "image is open read-only", path);

    [DoesNotReturn]
    public static void Corrupt(string path, long? offset, string message) =>
        throw new ImageCorruptException(path, offset, message);

    [DoesNotReturn]
    public static void Invalid(string path, string message) =>
        throw new ImageException(ErrorKind.InvalidFormat, message, path);

    [DoesNotReturn]
    public static void Unsupported(string path, string message) =>
        throw new ImageException(ErrorKind.UnsupportedFeature, message, path);

    [DoesNotReturn]
    public static void Io(string path, long offset, int errno, string what) =>
        throw new ImageException(ErrorKind.Io, $"{what} failed at offset {offset}: {Native.Libc.StrError(errno)} (errno {errno})", path, offset);

    [DoesNotReturn]
    public static void Locked(string path, string message) =>
        throw new ImageException(ErrorKind.Locked, message, path);

    [DoesNotReturn]
    public static void CorruptCompressed(string what, string message) =>
        throw new ImageException(ErrorKind.Corrupt, $"compressed cluster cannot be decompressed ({what}): {message}");
}
