using LibvirtStorage.Images;

namespace LibvirtStorage.Service.State;

/// <summary>
/// Everything the service persists, as immutable records: a change builds a new state, writes it, and
/// only then replaces the old one in memory, so a failed write changes nothing.
/// </summary>
internal sealed record InventoryState(int Version, IReadOnlyList<PoolState> Pools)
{
    public const int CurrentVersion = 1;

    public static InventoryState Empty { get; } = new(CurrentVersion, []);

    public PoolState? FindPool(string name) => Pools.FirstOrDefault(p => p.Name == name);

    public InventoryState WithPool(PoolState pool)
    {
        var pools = Pools.Where(p => p.Name != pool.Name).Append(pool).OrderBy(p => p.Name, StringComparer.Ordinal).ToList();
        return this with { Pools = pools };
    }

    public InventoryState WithoutPool(string name) => this with { Pools = Pools.Where(p => p.Name != name).ToList() };

    /// <summary>The pool holding <paramref name="volume"/>'s backing file (its own pool unless the base was moved), or null.</summary>
    public PoolState? BackingPoolOf(PoolState pool, VolumeState volume) =>
        volume.BackingFile is null ? null : volume.BackingPool is null ? pool : FindPool(volume.BackingPool);

    /// <summary>Every volume, in any pool, whose backing file is <paramref name="file"/> of pool <paramref name="poolName"/>.</summary>
    public IEnumerable<(PoolState Pool, VolumeState Volume)> DependentsOf(string poolName, string file) =>
        Pools.SelectMany(p => p.Volumes
            .Where(v => v.BackingFile == file && (v.BackingPool ?? p.Name) == poolName)
            .Select(v => (p, v)));
}

/// <summary>A defined pool and its volumes. File names in volumes are relative to <see cref="Path"/>.</summary>
internal sealed record PoolState(string Name, Guid Uuid, string Path, bool Autostart, bool Active, IReadOnlyList<VolumeState> Volumes)
{
    public VolumeState? FindVolume(string name) => Volumes.FirstOrDefault(v => v.Name == name);

    public PoolState WithVolume(VolumeState volume)
    {
        var volumes = Volumes.Where(v => v.Key != volume.Key).Append(volume).OrderBy(v => v.Name, StringComparer.Ordinal).ToList();
        return this with { Volumes = volumes };
    }

    public PoolState WithoutVolume(Guid key) => this with { Volumes = Volumes.Where(v => v.Key != key).ToList() };

    public string FullPath(string file) => System.IO.Path.Combine(Path, file);

    /// <summary>The volume owning <paramref name="file"/> (as top or snapshot layer), or null.</summary>
    public VolumeState? OwnerOf(string file) =>
        Volumes.FirstOrDefault(v => v.File == file || v.Snapshots.Any(s => s.File == file));

    /// <summary>Every file name the inventory knows in this pool.</summary>
    public IEnumerable<string> KnownFiles() => Volumes.SelectMany(v => v.Files());
}

/// <summary>
/// A volume: its current top file, its snapshot layers (oldest first, each the backing of the next, the
/// newest the backing of the top) and, under the oldest layer, optionally <see cref="BackingFile"/>: a file
/// of another volume, in the same pool unless <see cref="BackingPool"/> names another (a base moved there).
/// </summary>
internal sealed record VolumeState(Guid Key, string Name, string File, ImageFormat Format, string? BackingFile,
    ImageFormat? BackingFormat, IReadOnlyList<SnapshotState> Snapshots, int NextLayer, DateTimeOffset Created,
    string? BackingPool = null)
{
    /// <summary>The volume's own files: the top, then the snapshot layers oldest first.</summary>
    public IEnumerable<string> Files() => Snapshots.Select(s => s.File).Prepend(File);

    /// <summary>Own layers, top first: (file, format, snapshot name or null for the top).</summary>
    public IEnumerable<(string File, ImageFormat Format, string? Snapshot)> OwnLayers()
    {
        yield return (File, Format, null);
        for (int i = Snapshots.Count - 1; i >= 0; i--)
        {
            yield return (Snapshots[i].File, Snapshots[i].Format, Snapshots[i].Name);
        }
    }
}

/// <summary>
/// A snapshot record: the layer that was the top when the snapshot was taken. <paramref name="CloneTarget"/> marks the
/// temporary snapshot of a live full clone to that volume name: one found after a restart belongs to a clone that was
/// interrupted, and is merged back (see <see cref="JobManager.ResumeRecorded"/>).
/// </summary>
internal sealed record SnapshotState(string Name, string File, ImageFormat Format, DateTimeOffset Created, string? CloneTarget = null);
