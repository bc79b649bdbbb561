namespace LibvirtStorage.Daemon;

/// <summary>lvstord's exit codes, from sysexits.h where one fits.</summary>
internal static class ExitCodes
{
    /// <summary>Clean exit, also after SIGTERM/SIGINT.</summary>
    public const int Success = 0;

    /// <summary>EX_USAGE: a bad command line.</summary>
    public const int Usage = 64;

    /// <summary>EX_DATAERR: the state file (inventory.json) is damaged.</summary>
    public const int DataError = 65;

    /// <summary>EX_UNAVAILABLE: the bus cannot be reached, the name is owned by someone else, or the bus went away.</summary>
    public const int Unavailable = 69;

    /// <summary>EX_SOFTWARE: an unexpected failure.</summary>
    public const int Software = 70;

    /// <summary>EX_CANTCREAT: the state or runtime directory cannot be created or written.</summary>
    public const int CannotCreate = 73;

    /// <summary>EX_CONFIG: the configuration is invalid.</summary>
    public const int Config = 78;
}
