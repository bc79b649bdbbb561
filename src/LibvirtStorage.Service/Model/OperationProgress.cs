namespace LibvirtStorage.Service;

/// <summary>Progress of a long operation, for progress bars and (later) D-Bus Job objects.</summary>
/// <param name="Operation">What runs, for example "clone", "upload".</param>
/// <param name="Volume">The volume it works on.</param>
/// <param name="Fraction">From 0 to 1.</param>
public readonly record struct OperationProgress(string Operation, string Volume, double Fraction);

/// <summary>What an upload or download moved.</summary>
/// <param name="Length">Bytes of the volume covered.</param>
/// <param name="DataBytes">Bytes actually read or written as data.</param>
/// <param name="SkippedZeroBytes">Bytes that were holes or zeroes and were skipped (or written as zero ranges).</param>
public sealed record TransferResult(long Length, long DataBytes, long SkippedZeroBytes);

/// <summary>A new volume.</summary>
/// <param name="Name">Volume name, unique in its pool.</param>
/// <param name="Format">"raw" or "qcow2".</param>
/// <param name="Capacity">Virtual size in bytes; null only with a backing volume (its size is taken). Rounded up to 512 bytes.</param>
/// <param name="BackingVolume">A volume of the same pool to use as backing (qcow2 only); it becomes read-only.</param>
public sealed record VolumeSpec(string Name, string Format, long? Capacity = null, string? BackingVolume = null);
