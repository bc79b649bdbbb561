namespace LibvirtStorage.Client;

/// <summary>A volume as org.lvstor.Storage1.Volume describes it.</summary>
/// <param name="ObjectPath">The volume's D-Bus object path.</param>
/// <param name="Name">Name, unique in its pool.</param>
/// <param name="Key">UUID, stable for the volume's life.</param>
/// <param name="PoolObjectPath">The pool's D-Bus object path.</param>
/// <param name="PoolName">The pool's name.</param>
/// <param name="Format"><c>raw</c> or <c>qcow2</c> (the top file's).</param>
/// <param name="Capacity">Virtual size in bytes.</param>
/// <param name="Allocation">Bytes the top file occupies.</param>
/// <param name="ReadOnly">Other volumes use it as backing.</param>
/// <param name="Path">The vhost-user-blk socket: the volume's path for clients.</param>
/// <param name="File">The top image file (informational).</param>
/// <param name="BackingChain">Layers below the top, nearest first.</param>
/// <param name="Snapshots">Snapshots, oldest first.</param>
/// <param name="Users">Current users of the volume.</param>
/// <param name="ExportState"><c>stopped</c>, <c>listening</c> or <c>connected</c>.</param>
/// <param name="Problem">Empty, or why the image cannot be read.</param>
public sealed record VolumeInfo(
    string ObjectPath,
    string Name,
    string Key,
    string PoolObjectPath,
    string PoolName,
    string Format,
    ulong Capacity,
    ulong Allocation,
    bool ReadOnly,
    string Path,
    string File,
    IReadOnlyList<BackingLayer> BackingChain,
    IReadOnlyList<SnapshotInfo> Snapshots,
    IReadOnlyList<VolumeUse> Users,
    string ExportState,
    string Problem);

/// <summary>One layer of a volume's backing chain.</summary>
/// <param name="Volume">The volume owning the layer.</param>
/// <param name="Snapshot">The snapshot the layer belongs to, or empty.</param>
/// <param name="Format">The layer's format.</param>
/// <param name="File">The layer's file.</param>
public sealed record BackingLayer(string Volume, string Snapshot, string Format, string File);

/// <summary>One snapshot of a volume.</summary>
/// <param name="Name">The snapshot's name.</param>
/// <param name="CreatedAt">When it was taken.</param>
/// <param name="Format">The format of its layer.</param>
/// <param name="File">Its layer's file.</param>
public sealed record SnapshotInfo(string Name, DateTimeOffset CreatedAt, string Format, string File);

/// <summary>One user of a volume.</summary>
/// <param name="Kind"><c>guest</c>, <c>export</c>, <c>job</c> or <c>backing</c>.</param>
/// <param name="Who">Who, for example <c>pid 4242 on /run/lvstor/p/v.sock</c>.</param>
public sealed record VolumeUse(string Kind, string Who);
