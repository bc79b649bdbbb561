namespace LibvirtStorage.Client;

/// <summary>A pool as org.lvstor.Storage1.Pool describes it.</summary>
/// <param name="ObjectPath">The pool's D-Bus object path.</param>
/// <param name="Name">The pool's name.</param>
/// <param name="Uuid">The pool's UUID.</param>
/// <param name="Path">The pool's directory.</param>
/// <param name="Active">Whether the pool is started.</param>
/// <param name="Autostart">Whether lvstord starts the pool when it starts.</param>
/// <param name="Capacity">Size of the file system holding the directory (0 while stopped).</param>
/// <param name="Allocation">Bytes used on that file system (0 while stopped).</param>
/// <param name="Available">Bytes free on that file system (0 while stopped).</param>
/// <param name="VolumeCount">Number of volumes in the pool.</param>
public sealed record PoolInfo(
    string ObjectPath,
    string Name,
    string Uuid,
    string Path,
    bool Active,
    bool Autostart,
    ulong Capacity,
    ulong Allocation,
    ulong Available,
    uint VolumeCount);

/// <summary>What <c>Pool.Refresh</c> did.</summary>
/// <param name="Adopted">Names of the files adopted as new volumes.</param>
/// <param name="Problems">Files left alone, with the reason.</param>
public sealed record PoolRefreshResult(IReadOnlyList<string> Adopted, IReadOnlyList<PoolProblem> Problems);

/// <summary>A file that <c>Pool.Refresh</c> left alone.</summary>
/// <param name="File">The file.</param>
/// <param name="Message">Why it was not adopted.</param>
public sealed record PoolProblem(string File, string Message);
