using LibvirtStorage.Images;

namespace LibvirtStorage.Service;

/// <summary>A volume as callers see it.</summary>
/// <param name="Pool">The pool it belongs to.</param>
/// <param name="Name">Unique in its pool; unchanged by snapshots and reverts.</param>
/// <param name="Key">Stable identity (a UUID), unchanged by snapshots and reverts.</param>
/// <param name="Format">Format of the current (top) image file.</param>
/// <param name="Capacity">Virtual size in bytes.</param>
/// <param name="Allocation">Bytes the top image file occupies on disk.</param>
/// <param name="ReadOnly">True while other volumes use this one as their backing.</param>
/// <param name="File">The top image file (only lvstord opens it; clients use <paramref name="SocketPath"/>).</param>
/// <param name="SocketPath">Where the volume's vhost-user-blk export will listen.</param>
/// <param name="Chain">Backing layers below the top, nearest first.</param>
/// <param name="Snapshots">Snapshot records, oldest first.</param>
/// <param name="Problem">In listings only: why the top image could not be read (capacity and allocation are then 0); null when it could.</param>
public sealed record VolumeInfo(string Pool, string Name, Guid Key, ImageFormat Format, long Capacity, long Allocation,
    bool ReadOnly, string File, string SocketPath, IReadOnlyList<ChainLayer> Chain, IReadOnlyList<SnapshotInfo> Snapshots,
    string? Problem = null);

/// <summary>One backing layer, named by the volume (and snapshot) it belongs to.</summary>
/// <param name="Volume">The volume owning the layer.</param>
/// <param name="Snapshot">The snapshot whose layer this is, or null when it is that volume's current top.</param>
/// <param name="Format">Format of the layer file.</param>
/// <param name="File">The layer file.</param>
public sealed record ChainLayer(string Volume, string? Snapshot, ImageFormat Format, string File);

/// <summary>An external snapshot: a read-only layer under the volume's current overlay.</summary>
/// <param name="Name">Unique within the volume.</param>
/// <param name="Created">When it was taken.</param>
/// <param name="Format">Format of the layer file.</param>
/// <param name="File">The layer file.</param>
public sealed record SnapshotInfo(string Name, DateTimeOffset Created, ImageFormat Format, string File);
