namespace LibvirtStorage.Images;

/// <summary>On-disk image formats the engine reads and writes.</summary>
public enum ImageFormat
{
    /// <summary>A plain file holding the disk byte for byte.</summary>
    Raw,
    /// <summary>QEMU copy-on-write v2 (compat 0.10) or v3 (compat 1.1).</summary>
    Qcow2,
}

/// <summary>Names of formats as QEMU spells them.</summary>
public static class ImageFormatNames
{
    /// <summary>"raw" or "qcow2".</summary>
    public static string ToName(this ImageFormat format) => format == ImageFormat.Raw ? "raw" : "qcow2";

    /// <summary>Parses "raw" or "qcow2" (case-insensitive); null for anything else.</summary>
    public static ImageFormat? Parse(string? name) => name?.ToLowerInvariant() switch
    {
        "raw" => ImageFormat.Raw,
        "qcow2" => ImageFormat.Qcow2,
        _ => null,
    };
}
