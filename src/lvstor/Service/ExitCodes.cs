using LibvirtStorage.Client;

namespace LibvirtStorage.Cli.Service;

/// <summary>lvstor's exit codes for the service commands (documented in src/lvstor/README.md).</summary>
internal static class ExitCodes
{
    public const int Ok = 0;
    public const int Error = 1;
    public const int Usage = 2;
    public const int NotFound = 3;
    public const int Exists = 4;
    public const int InUse = 5;
    public const int Invalid = 6;
    public const int Busy = 7;
    public const int Corrupt = 8;
    public const int Io = 9;
    public const int Unsupported = 10;
    public const int Cancelled = 11;
    public const int AccessDenied = 12;
    public const int ServiceUnavailable = 13;

    /// <summary>Ctrl-C: the job was cancelled on the user's request (128 + SIGINT, as shells report it).</summary>
    public const int Interrupted = 130;

    /// <summary>The exit code for a failure of kind <paramref name="kind"/>.</summary>
    public static int For(StorageErrorKind kind) => kind switch
    {
        StorageErrorKind.NotFound => NotFound,
        StorageErrorKind.Exists => Exists,
        StorageErrorKind.InUse => InUse,
        StorageErrorKind.Invalid => Invalid,
        StorageErrorKind.Busy => Busy,
        StorageErrorKind.Corrupt => Corrupt,
        StorageErrorKind.Io => Io,
        StorageErrorKind.Unsupported => Unsupported,
        StorageErrorKind.Cancelled => Cancelled,
        StorageErrorKind.AccessDenied => AccessDenied,
        StorageErrorKind.ServiceUnavailable => ServiceUnavailable,
        _ => Error,
    };
}
