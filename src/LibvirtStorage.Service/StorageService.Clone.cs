using System.Runtime.ExceptionServices;
using LibvirtStorage.Images;
using LibvirtStorage.Images.Operations;
using LibvirtStorage.Service.State;

namespace LibvirtStorage.Service;

public sealed partial class StorageService
{
    /// <summary>Share of a live clone's progress taken by the copy; merging the temporary snapshot back takes the rest.</summary>
    private const double LiveCopyShare = 0.9;

    /// <summary>
    /// Clones a volume in the same pool. A full clone copies the guest-visible data of the whole chain into a
    /// new, independent image (the engine's convert: zero runs are skipped, so it stays sparse). A linked
    /// clone is a qcow2 overlay over the source, which then becomes read-only (or over a snapshot's layer).
    /// </summary>
    /// <remarks>
    /// <para>With <paramref name="fromSnapshot"/> the clone holds what the volume read when that snapshot was taken: the
    /// snapshot's layer and everything below it, which no one writes any more. The source's guest keeps running (the
    /// layer is read-only in every chain), and a linked clone backs onto that layer: the source stays writable, but
    /// commit, stream, revert and delete that would remove or change the layer are refused while the clone uses it.</para>
    /// <para>A full clone of a volume whose guest is connected takes a temporary snapshot <c>clone-&lt;target&gt;</c> (the
    /// guest switches to a new overlay between two requests), copies that frozen layer while the guest runs on, and
    /// merges the overlay back with a live commit, so the volume's top file is the one it had before. The clone is the
    /// disk as it was at that snapshot. Should the merge fail, the error names the temporary snapshot left (commit it).
    /// Otherwise (no guest connected) the copy runs with the export quiesced, as for a download.</para>
    /// </remarks>
    /// <param name="poolName">Pool of both volumes.</param>
    /// <param name="sourceName">The volume to copy.</param>
    /// <param name="targetName">The new volume.</param>
    /// <param name="format">
    /// Format of the new volume; null keeps the source's (with <paramref name="fromSnapshot"/>: the snapshot layer's). A
    /// linked clone is always qcow2.
    /// </param>
    /// <param name="linked">Make an overlay instead of a copy.</param>
    /// <param name="progress">Receives progress from 0 to 1.</param>
    /// <param name="cancellationToken">Stops a full copy; the partial target is removed.</param>
    /// <param name="fromSnapshot">Clone the volume as it was at this snapshot (NotFound when it has none of that name); null: as it is now.</param>
    public async Task<VolumeInfo> CloneVolumeAsync(string poolName, string sourceName, string targetName, string? format = null,
        bool linked = false, IProgress<OperationProgress>? progress = null, CancellationToken cancellationToken = default, string? fromSnapshot = null)
    {
        StorageNames.ValidateVolumeName(poolName, targetName, RuntimeDirectory);
        ImageFormat? targetFormat = format is null ? null : ParseFormat(format);
        if (linked && targetFormat is ImageFormat.Raw)
        {
            ThrowHelper.Invalid("a linked clone is a qcow2 overlay; use format 'qcow2' or leave the format out");
        }

        PoolState pool = null!;
        VolumeState source = null!;
        SnapshotState? snapshot = null;
        using OperationScope scope = Begin("clone", (state, s) =>
        {
            pool = RequireActivePool(state, poolName);
            source = RequireVolume(pool, sourceName);
            snapshot = fromSnapshot is null ? null : source.Snapshots[RequireSnapshotIndex(source, fromSnapshot)];
            if (linked && snapshot is null && Users.GetUsers(source.Key) is { Count: > 0 } users)
            {
                ThrowHelper.InUse($"cannot make a linked clone of '{sourceName}': it is in use by {string.Join(", ", users)} and would change under the clone; stop those users, make a full clone, or clone from a snapshot");
            }

            s.AddVolume(pool, source);
            s.ReserveName(pool, targetName);
        });

        // What the clone reads: the snapshot's frozen layer, or the source's top (with everything below either).
        (string layer, ImageFormat layerFormat) = snapshot is null ? (source.File, source.Format) : (snapshot.File, snapshot.Format);
        ImageFormat newFormat = linked ? ImageFormat.Qcow2 : targetFormat ?? layerFormat;
        string what = snapshot is null
            ? $"cannot clone volume '{sourceName}' to '{targetName}'"
            : $"cannot clone volume '{sourceName}' at snapshot '{snapshot.Name}' to '{targetName}'";
        var volume = new VolumeState(Guid.NewGuid(), targetName, targetName, newFormat,
            linked ? layer : null, linked ? layerFormat : null, [], 1, DateTimeOffset.UtcNow);
        try
        {
            if (linked)
            {
                // A snapshot's layer is read-only in every chain already. The source's top is not: its export is closed while
                // the overlay is made, and reopened read-only (it now backs the clone).
                var options = new ImageCreateOptions { Format = ImageFormat.Qcow2, BackingFile = layer, BackingFormat = layerFormat };
                using (snapshot is null ? Exports.Quiesce(source.Key) : NoExport.Instance)
                {
                    CreateFileAtomically(pool, targetName, what, path => ImageOpener.Create(path, options));
                    CommitNewVolume(poolName, volume);
                }
            }
            else if (snapshot is null && Exports.GetState(source.Key) == ExportState.Connected && !IsBackingOfOthers(pool, source))
            {
                await CloneLiveAsync(pool, source, volume, what, progress, cancellationToken).ConfigureAwait(false);
            }
            else
            {
                var report = progress is null ? null : new FractionProgress(progress, "clone", sourceName);
                await Task.Run(() =>
                {
                    // A copy of the top needs the export to let go of it (readers share only with readers); a snapshot's layer is read-only anyway.
                    using IDisposable quiesced = snapshot is null ? QuiesceForReading(pool, source) : NoExport.Instance;
                    CreateFileAtomically(pool, targetName, what, path => CopyChain(pool.FullPath(layer), layerFormat, path, newFormat, report, cancellationToken));
                }, CancellationToken.None).ConfigureAwait(false);
                CommitNewVolume(poolName, volume);
            }
        }
        finally
        {
            Exports.Sync(poolName);
        }

        return GetVolume(poolName, targetName);
    }

    /// <summary>
    /// A full clone of a volume whose guest runs: temporary snapshot, copy of its frozen layer into a hidden file, live
    /// commit of the temporary overlay back into that layer, then the copy is renamed into place and recorded. Whatever
    /// fails, the hidden copy is removed; the temporary snapshot is left only when merging it back failed, and the error
    /// says so.
    /// </summary>
    private async Task CloneLiveAsync(PoolState pool, VolumeState source, VolumeState clone, string what,
        IProgress<OperationProgress>? progress, CancellationToken cancellationToken)
    {
        string temporary = FreeSnapshotName(source, $"clone-{clone.Name}");
        VolumeState snapshotted = TakeSnapshot(pool, source, temporary, cloneTarget: clone.Name);
        SnapshotState frozen = snapshotted.Snapshots[^1];
        string partial = pool.FullPath($".{clone.Name}.creating-{Guid.NewGuid():N}");
        ExceptionDispatchInfo? copyFailed = null;
        try
        {
            var report = progress is null ? null : new FractionProgress(progress, "clone", source.Name, 0, LiveCopyShare);
            await Task.Run(() => ThrowHelper.Translate(what, () =>
                CopyChain(pool.FullPath(frozen.File), frozen.Format, partial, clone.Format, report, cancellationToken)), CancellationToken.None).ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            // Whatever stopped the copy, the temporary snapshot is merged back before the error is passed on.
            TryDeleteFile(partial);
            copyFailed = ExceptionDispatchInfo.Capture(ex);
        }

        // Merge what the guest wrote meanwhile back into the frozen layer, which becomes the top again. Not cancelled with
        // the copy: stopping halfway would leave the temporary snapshot behind.
        try
        {
            var merge = progress is null ? null : new ScaledProgress(progress, "clone", source.Name, LiveCopyShare, 1);
            await CommitClaimedAsync(pool, snapshotted, snapshotted.Snapshots.Count - 1, new CommitOptions(), merge, CancellationToken.None, null).ConfigureAwait(false);
        }
        catch (StorageServiceException ex)
        {
            TryDeleteFile(partial);
            Exception? first = copyFailed?.SourceException;
            string left = $"the temporary snapshot '{temporary}' is left on volume '{source.Name}' (merging it back failed: {ex.Message}); "
                + $"merge it with 'lvstor commit {source.Name} --pool {pool.Name} --base {temporary}'";
            throw new StorageServiceException((first as StorageServiceException)?.Kind ?? ex.Kind,
                first is null ? $"{what}: {left}" : $"{first.Message}; {left}", first ?? ex);
        }

        copyFailed?.Throw();
        try
        {
            ThrowHelper.Translate(what, () => File.Move(partial, pool.FullPath(clone.File), overwrite: false));
        }
        catch
        {
            TryDeleteFile(partial);
            throw;
        }

        CommitNewVolume(pool.Name, clone);
    }

    /// <summary>
    /// The temporary snapshots of live clones that lvstord did not finish (it died during the copy or the merge), as
    /// (pool, volume, snapshot); each hidden partial copy of such a clone is deleted here. The caller merges each snapshot
    /// back with a commit, which rolls the clone back: the volume reads and is laid out as before, the clone never appears.
    /// </summary>
    internal IReadOnlyList<(string Pool, string Volume, string Snapshot)> TakeInterruptedClones()
    {
        var found = new List<(string, string, string)>();
        foreach (PoolState pool in Snapshot().Pools.Where(p => p.Active))
        {
            foreach (VolumeState volume in pool.Volumes)
            {
                foreach (SnapshotState snapshot in volume.Snapshots.Where(s => s.CloneTarget is not null))
                {
                    foreach (string partial in Directory.EnumerateFiles(pool.Path, $".{snapshot.CloneTarget}.creating-*"))
                    {
                        TryDeleteFile(partial);
                    }

                    found.Add((pool.Name, volume.Name, snapshot.Name));
                }
            }
        }

        return found;
    }

    /// <summary>Copies what the chain topped by <paramref name="sourcePath"/> reads into a new image at <paramref name="path"/>.</summary>
    private static void CopyChain(string sourcePath, ImageFormat sourceFormat, string path, ImageFormat format, IProgress<double>? report,
        CancellationToken cancellationToken)
    {
        using IBlockImage input = ImageOpener.Open(sourcePath, new ImageOpenOptions { ReadOnly = true, Format = sourceFormat });
        ImageConvert.Run(input, path, new ImageCreateOptions { Format = format }, progress: report, cancellationToken: cancellationToken);
    }

    /// <summary><paramref name="wanted"/>, or with a number appended when the volume already has a snapshot of that name.</summary>
    private static string FreeSnapshotName(VolumeState volume, string wanted)
    {
        string name = wanted;
        for (int n = 2; volume.Snapshots.Any(s => s.Name == name); n++)
        {
            name = $"{wanted}-{n}";
        }

        return name;
    }

    /// <summary>Adapts the engine's fraction-done reports to <see cref="OperationProgress"/>, mapped onto [from, to].</summary>
    private sealed class FractionProgress(IProgress<OperationProgress> target, string operation, string volume, double from = 0, double to = 1) : IProgress<double>
    {
        public void Report(double value) => target.Report(new OperationProgress(operation, volume, from + ((to - from) * Math.Clamp(value, 0, 1))));
    }

    /// <summary>Reports another operation's progress (a live clone's merge) as part of this one's, mapped onto [from, to].</summary>
    private sealed class ScaledProgress(IProgress<OperationProgress> target, string operation, string volume, double from, double to) : IProgress<OperationProgress>
    {
        public void Report(OperationProgress value) =>
            target.Report(new OperationProgress(operation, volume, from + ((to - from) * Math.Clamp(value.Fraction, 0, 1))));
    }
}
