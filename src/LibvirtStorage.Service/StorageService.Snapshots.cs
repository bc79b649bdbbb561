using LibvirtStorage.Images;
using LibvirtStorage.Service.State;

namespace LibvirtStorage.Service;

public sealed partial class StorageService
{
    /// <summary>
    /// Takes an external snapshot: the current top image becomes the read-only layer of snapshot
    /// <paramref name="snapshotName"/>, and a new qcow2 overlay over it becomes the volume's top. The volume
    /// keeps its name and key. On failure the overlay is removed and the volume is exactly as before.
    /// </summary>
    public SnapshotInfo CreateSnapshot(string poolName, string volumeName, string snapshotName)
    {
        StorageNames.ValidateSnapshotName(snapshotName);
        PoolState pool = null!;
        VolumeState volume = null!;
        using OperationScope scope = Begin("snapshot", (state, s) =>
        {
            pool = RequireActivePool(state, poolName);
            volume = RequireVolume(pool, volumeName);
            if (volume.Snapshots.Any(x => x.Name == snapshotName))
            {
                ThrowHelper.Exists($"volume '{volumeName}' already has a snapshot named '{snapshotName}'; choose another name");
            }

            // A connected guest is fine: its export is switched to the new overlay between two requests. Other
            // volumes backing onto the top, and users other than guests (jobs), are not.
            RefuseIfUsed(pool, volume, "snapshot", [volume.File], except: "guest");
            s.AddVolume(pool, volume);
        });

        SnapshotState snapshot = TakeSnapshot(pool, volume, snapshotName).Snapshots[^1];
        return new SnapshotInfo(snapshot.Name, snapshot.Created, snapshot.Format, pool.FullPath(snapshot.File));
    }

    /// <summary>
    /// The work of <see cref="CreateSnapshot"/> on a volume the caller has claimed and checked (also a live clone's
    /// temporary snapshot); returns the volume as recorded now.
    /// </summary>
    private VolumeState TakeSnapshot(PoolState pool, VolumeState volume, string snapshotName, string? cloneTarget = null)
    {
        (string overlay, int next) = NewLayerName(pool, volume);
        var options = new ImageCreateOptions { Format = ImageFormat.Qcow2, BackingFile = volume.File, BackingFormat = volume.Format };
        var snapshot = new SnapshotState(snapshotName, volume.File, volume.Format, DateTimeOffset.UtcNow, cloneTarget);
        VolumeState changed = volume with
        {
            File = overlay,
            Format = ImageFormat.Qcow2,
            Snapshots = [.. volume.Snapshots, snapshot],
            NextLayer = next + 1,
        };
        using (Exports.Quiesce(volume.Key))
        {
            // Requests in flight have finished and the top is flushed and closed; new ones wait for the overlay.
            CreateLayer(pool, overlay, $"cannot snapshot volume '{volume.Name}'", options);
            CommitLayerChange(pool, overlay, changed);
        }

        return changed;
    }

    /// <summary>The snapshots of a volume, oldest first.</summary>
    public IReadOnlyList<SnapshotInfo> ListSnapshots(string poolName, string volumeName)
    {
        PoolState pool = RequirePool(Snapshot(), poolName);
        return RequireVolume(pool, volumeName).Snapshots
            .Select(s => new SnapshotInfo(s.Name, s.Created, s.Format, pool.FullPath(s.File))).ToList();
    }

    /// <summary>
    /// Reverts a volume to a snapshot: the current overlay is discarded and a fresh, empty overlay over the
    /// snapshot's layer takes its place. Snapshots taken after it would be lost, so reverting past them needs
    /// <paramref name="discardNewer"/>. Refused while the volume has users.
    /// </summary>
    public VolumeInfo RevertToSnapshot(string poolName, string volumeName, string snapshotName, bool discardNewer = false)
    {
        PoolState pool = null!;
        VolumeState volume = null!;
        int index = -1;
        using OperationScope scope = Begin("revert", (state, s) =>
        {
            pool = RequireActivePool(state, poolName);
            volume = RequireVolume(pool, volumeName);
            index = volume.Snapshots.ToList().FindIndex(x => x.Name == snapshotName);
            if (index < 0)
            {
                ThrowHelper.NotFound($"volume '{volumeName}' has no snapshot named '{snapshotName}'; list its snapshots to see their names");
            }

            var newer = volume.Snapshots.Skip(index + 1).ToList();
            if (newer.Count > 0 && !discardNewer)
            {
                ThrowHelper.Invalid($"snapshots {string.Join(", ", newer.Select(x => $"'{x.Name}'"))} were taken after '{snapshotName}' and would be deleted; ask to discard newer snapshots to go ahead");
            }

            RefuseIfUsed(pool, volume, "revert", newer.Select(x => x.File).Prepend(volume.File));
            s.AddVolume(pool, volume);
        });

        SnapshotState target = volume.Snapshots[index];
        (string overlay, int next) = NewLayerName(pool, volume);
        var options = new ImageCreateOptions { Format = ImageFormat.Qcow2, BackingFile = target.File, BackingFormat = target.Format };
        using (QuiesceUnused(pool, volume, "revert"))
        {
            CreateLayer(pool, overlay, $"cannot revert volume '{volumeName}' to '{snapshotName}'", options);
            CommitLayerChange(pool, overlay, volume with
            {
                File = overlay,
                Format = ImageFormat.Qcow2,
                Snapshots = volume.Snapshots.Take(index + 1).ToList(),
                NextLayer = next + 1,
            });
        }

        // Committed: the old top and the discarded layers belong to nothing now. They are hidden files, so one
        // that cannot be removed stays out of the way (refresh skips hidden files).
        foreach (string file in volume.Snapshots.Skip(index + 1).Select(x => x.File).Prepend(volume.File))
        {
            TryDeleteFile(pool.FullPath(file));
        }

        return GetVolume(poolName, volumeName);
    }

    /// <summary>A fresh hidden layer name, <c>.&lt;volume&gt;.&lt;n&gt;</c>, not yet on disk.</summary>
    private static (string Name, int Number) NewLayerName(PoolState pool, VolumeState volume)
    {
        for (int n = volume.NextLayer; ; n++)
        {
            string name = $".{volume.Name}.{n}";
            if (!File.Exists(pool.FullPath(name)) && pool.OwnerOf(name) is null)
            {
                return (name, n);
            }
        }
    }

    /// <summary>Creates a new overlay file; the size comes from its backing layer.</summary>
    private static void CreateLayer(PoolState pool, string overlay, string what, ImageCreateOptions options)
    {
        string path = pool.FullPath(overlay);
        try
        {
            ThrowHelper.Translate(what, () => ImageOpener.Create(path, options));
        }
        catch
        {
            TryDeleteFile(path);
            throw;
        }
    }

    /// <summary>Records a volume's new layers; when the state cannot be written the new overlay is removed.</summary>
    private void CommitLayerChange(PoolState pool, string overlay, VolumeState changed)
    {
        try
        {
            Commit(state => state.WithPool(RequireActivePool(state, pool.Name).WithVolume(changed)));
        }
        catch
        {
            TryDeleteFile(pool.FullPath(overlay));
            throw;
        }
    }
}
