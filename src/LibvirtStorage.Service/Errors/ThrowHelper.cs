using System.Diagnostics.CodeAnalysis;
using LibvirtStorage.Images;

namespace LibvirtStorage.Service;

/// <summary>Throw sites of the service, and the translation of engine and OS errors into service errors.</summary>
internal static class ThrowHelper
{
    [DoesNotReturn]
    public static void Invalid(string message) => throw new StorageServiceException(StorageErrorKind.Invalid, message);

    [DoesNotReturn]
    public static void NotFound(string message) => throw new StorageServiceException(StorageErrorKind.NotFound, message);

    [DoesNotReturn]
    public static void Exists(string message) => throw new StorageServiceException(StorageErrorKind.Exists, message);

    [DoesNotReturn]
    public static void InUse(string message) => throw new StorageServiceException(StorageErrorKind.InUse, message);

    [DoesNotReturn]
    public static void Busy(string message) => throw new StorageServiceException(StorageErrorKind.Busy, message);

    /// <summary>
    /// Runs engine or file-system work and turns what it throws into a <see cref="StorageServiceException"/>
    /// whose message starts with <paramref name="what"/> (for example "cannot create volume 'a'").
    /// </summary>
    public static T Translate<T>(string what, Func<T> work)
    {
        try
        {
            return work();
        }
        catch (Exception ex) when (ToServiceError(what, ex) is { } error)
        {
            throw error;
        }
    }

    /// <inheritdoc cref="Translate{T}(string, Func{T})"/>
    public static void Translate(string what, Action work)
    {
        try
        {
            work();
        }
        catch (Exception ex) when (ToServiceError(what, ex) is { } error)
        {
            throw error;
        }
    }

    /// <summary>The service error for an engine or OS exception, or null for programmer errors (left to propagate).</summary>
    public static StorageServiceException? ToServiceError(string what, Exception ex) => ex switch
    {
        StorageServiceException => null,
        ImageException image => new StorageServiceException(KindOf(image.Kind), $"{what}: {image.Message}{AdviceFor(image.Kind)}", image),
        OperationCanceledException => new StorageServiceException(StorageErrorKind.Cancelled, $"{what}: cancelled", ex),
        UnauthorizedAccessException => new StorageServiceException(StorageErrorKind.Io, $"{what}: permission denied ({ex.Message}); check the owner and mode of the pool directory", ex),
        IOException => new StorageServiceException(StorageErrorKind.Io, $"{what}: {ex.Message}", ex),

        // .NET reports EFBIG from ftruncate (FileStream.SetLength, used by the engine for raw files) this way.
        ArgumentOutOfRangeException { ParamName: "value" } when ex.Message.Contains("file system", StringComparison.Ordinal) =>
            new StorageServiceException(StorageErrorKind.Io, $"{what}: the file system cannot hold a file that large (EFBIG); choose a smaller capacity or another file system", ex),
        _ => null,
    };

    private static StorageErrorKind KindOf(ErrorKind kind) => kind switch
    {
        ErrorKind.InvalidFormat or ErrorKind.Corrupt => StorageErrorKind.Corrupt,
        ErrorKind.UnsupportedFeature => StorageErrorKind.Unsupported,
        ErrorKind.Io => StorageErrorKind.Io,
        ErrorKind.Locked => StorageErrorKind.Busy,
        _ => StorageErrorKind.Invalid,
    };

    private static string AdviceFor(ErrorKind kind) => kind switch
    {
        ErrorKind.Corrupt or ErrorKind.InvalidFormat => " (inspect it with 'qemu-img check'; repair with 'qemu-img check -r all' while nothing uses it)",
        ErrorKind.Locked => " (another process has the image open; stop it or wait)",
        _ => string.Empty,
    };
}
