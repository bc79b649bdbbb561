using LibvirtStorage.Images;
using LibvirtStorage.Images.Operations;
using LibvirtStorage.Images.Qcow2;
using LibvirtStorage.Service.State;

namespace LibvirtStorage.Service;

public sealed partial class StorageService
{
    /// <summary>
    /// Moves a base volume to another pool while the volumes over it (linked clones, in any pool) keep running: the
    /// base is copied into <paramref name="targetPool"/> without holding any guest, then every volume over it is
    /// re-pointed to the copy at once (each of their guests waits a few milliseconds while its chain is reopened), and
    /// the old file is deleted. The base keeps its name and key. (The seed's case: a shared base moved from an NFS pool
    /// to local storage under running VMs.)
    /// </summary>
    /// <param name="poolName">The pool the base is in now.</param>
    /// <param name="volumeName">The base volume: one file, no snapshots and no backing of its own.</param>
    /// <param name="targetPool">An active pool without a volume of that name.</param>
    /// <param name="progress">Receives progress from 0 to 1.</param>
    /// <param name="cancellationToken">Stops the copy; the partial copy is removed and nothing changed.</param>
    /// <param name="control">Pause and speed limit (jobs).</param>
    public async Task<VolumeInfo> MoveBaseAsync(string poolName, string volumeName, string targetPool,
        IProgress<OperationProgress>? progress = null, CancellationToken cancellationToken = default, LiveJobControl? control = null)
    {
        PoolState pool = null!, target = null!;
        VolumeState volume = null!;
        List<(PoolState Pool, VolumeState Volume)> dependents = null!;
        using OperationScope scope = Begin("move", (state, s) =>
        {
            pool = RequireActivePool(state, poolName);
            volume = RequireVolume(pool, volumeName);
            target = RequireActivePool(state, targetPool);
            if (target.Name == pool.Name)
            {
                ThrowHelper.Invalid($"volume '{volumeName}' is already in pool '{targetPool}'");
            }

            if (volume.Snapshots.Count > 0 || volume.BackingFile is not null)
            {
                ThrowHelper.Invalid($"volume '{volumeName}' has snapshots or a backing file of its own; only a single-file base can be moved (stream or commit it first)");
            }

            RefuseIfOverlapping(pool, target);
            dependents = state.DependentsOf(pool.Name, volume.File).ToList();
            s.AddVolume(pool, volume);
            foreach ((PoolState p, VolumeState d) in dependents)
            {
                s.AddVolume(p, d);
            }

            s.ReserveName(target, volumeName);
        });

        // A guest on the base itself would need its own switch; the bases this is for are used through overlays.
        RefuseIfGuest(pool, volume, "move");
        using var ownControl = control is null ? new LiveJobControl() : null;
        LiveJobControl yield = control ?? ownControl!;
        string what = $"cannot move volume '{volumeName}' to pool '{targetPool}'";
        string source = pool.FullPath(volume.File);
        string copy = target.FullPath(volumeName);

        // 1. Copy, with every guest running: the base is read-only while volumes back onto it, and readers share it.
        await Task.Run(() => CreateFileAtomically(target, volumeName, what, path =>
        {
            using IBlockImage input = ImageOpener.Open(source, new ImageOpenOptions { ReadOnly = true, Format = volume.Format });
            long size = input.VirtualSize;
            var report = new MoveProgress(progress, yield, volumeName, size, cancellationToken);
            var create = new ImageCreateOptions { Format = volume.Format, ClusterSize = input is Qcow2Image q ? q.ClusterSize : 65536 };
            ImageConvert.Run(input, path, create, new ImageConvertOptions { Parallelism = 1 }, report, cancellationToken);
            using var written = new FileStream(path, FileMode.Open, FileAccess.Read);
            written.Flush(flushToDisk: true);
        }), CancellationToken.None).ConfigureAwait(false);

        // 2. Record the move first: from here the copy is the base. A crash before the headers below are rewritten
        // leaves them naming the old file, which still exists with the same contents; the resumed job rewrites them.
        try
        {
            Commit(state =>
            {
                InventoryState next = state.WithPool(RequireActivePool(state, pool.Name).WithoutVolume(volume.Key))
                    .WithPool(RequireActivePool(state, target.Name).WithVolume(volume with { File = volumeName }));
                foreach ((PoolState p, VolumeState d) in dependents)
                {
                    PoolState current = RequireActivePool(next, p.Name);
                    next = next.WithPool(current.WithVolume(RequireVolume(current, d.Name) with
                    {
                        BackingFile = volumeName,
                        BackingPool = p.Name == target.Name ? null : target.Name,
                    }));
                }

                return next;
            });
        }
        catch
        {
            TryDeleteFile(copy);
            throw;
        }

        // 3. Re-point every volume over the base, and release the old file.
        RepointDependents(target, volumeName, volume.Format, what);
        TryDeleteFile(source);
        Exports.Sync(pool.Name);
        Exports.Sync(target.Name);
        progress?.Report(new OperationProgress("move", volumeName, 1));
        return GetVolume(target.Name, volumeName);
    }

    /// <summary>
    /// Finishes a base move the inventory already records (after a restart): the volumes over the moved base get their
    /// backing headers rewritten to it (again, harmlessly, where that was done), and <paramref name="oldFile"/> is
    /// deleted when it still exists.
    /// </summary>
    internal void FinishMovedBase(string targetPool, string volumeName, string oldFile)
    {
        PoolState target = RequireActivePool(Snapshot(), targetPool);
        VolumeState volume = RequireVolume(target, volumeName);
        RepointDependents(target, volumeName, volume.Format, $"cannot finish moving volume '{volumeName}' to pool '{targetPool}'");
        TryDeleteFile(oldFile);
        foreach (PoolState pool in Snapshot().Pools.Where(p => p.Active))
        {
            Exports.Sync(pool.Name);
        }
    }

    /// <summary>
    /// Rewrites the backing header of the lowest own layer of every volume over the moved base to the copy, each inside
    /// a quiesce of that volume's export (its guest waits while the chain is closed, rewritten and reopened).
    /// </summary>
    private void RepointDependents(PoolState target, string volumeName, ImageFormat format, string what)
    {
        InventoryState state = Snapshot();
        string copy = target.FullPath(volumeName);
        foreach ((PoolState p, VolumeState d) in state.DependentsOf(target.Name, volumeName))
        {
            string lowest = p.FullPath(d.Snapshots.Count > 0 ? d.Snapshots[0].File : d.File);
            using (Exports.Quiesce(d.Key))
            {
                ThrowHelper.Translate(what, () =>
                {
                    // A base in the same pool is named relatively, like every file lvstord makes; across pools by full path.
                    string wanted = p.Name == target.Name ? volumeName : copy;
                    using var layer = (Qcow2Image)ImageOpener.Open(lowest, new ImageOpenOptions { Format = ImageFormat.Qcow2, OpenBacking = false });
                    if (layer.BackingFileName != wanted)
                    {
                        layer.SetBackingFile(wanted, format);
                        layer.Flush();
                    }
                });
            }
        }
    }

    /// <summary>Refuses a move between pools whose directories are the same (a rename would not copy anything).</summary>
    private static void RefuseIfOverlapping(PoolState pool, PoolState target)
    {
        if (Path.GetFullPath(pool.Path) == Path.GetFullPath(target.Path))
        {
            ThrowHelper.Invalid($"pools '{pool.Name}' and '{target.Name}' share the directory {pool.Path}");
        }
    }

    /// <summary>Turns the copy's fractions into job progress and keeps the copy to the job's speed limit and pause.</summary>
    private sealed class MoveProgress(IProgress<OperationProgress>? target, LiveJobControl control, string volume, long size, CancellationToken cancellationToken)
        : IProgress<double>
    {
        private long _done;

        public void Report(double value)
        {
            long done = (long)(Math.Clamp(value, 0, 1) * size);
            long step = done - Interlocked.Exchange(ref _done, done);
            target?.Report(new OperationProgress("move", volume, 0.95 * Math.Clamp(value, 0, 1)));
            control.Yield(Math.Max(0, step), cancellationToken);
        }
    }
}
