using LibvirtStorage.Images;
using LibvirtStorage.Images.Qcow2;
using LibvirtStorage.Service.State;

namespace LibvirtStorage.Service;

/// <summary>Options of <see cref="StorageService.StreamAsync"/>.</summary>
public sealed record StreamOptions
{
    /// <summary>
    /// Stream down to this snapshot's layer, which stays the top's backing; null streams everything, a linked clone's
    /// backing volume included, and leaves the volume without a backing file.
    /// </summary>
    public string? BaseSnapshot { get; init; }

    /// <summary>Bytes per second at most; 0 is unlimited.</summary>
    public long SpeedLimit { get; init; }

    /// <summary>Wait for gaps in the guest's requests before each chunk (<see cref="LiveJobControl.IdlePriority"/>).</summary>
    public bool IdlePriority { get; init; }
}

/// <summary>Options of <see cref="StorageService.CommitAsync"/>.</summary>
public sealed record CommitOptions
{
    /// <summary>The snapshot whose layer receives the data; null: the newest snapshot (the top's backing layer).</summary>
    public string? BaseSnapshot { get; init; }

    /// <summary>Bytes per second at most; 0 is unlimited.</summary>
    public long SpeedLimit { get; init; }

    /// <summary>Wait for gaps in the guest's requests before each chunk (<see cref="LiveJobControl.IdlePriority"/>).</summary>
    public bool IdlePriority { get; init; }
}

public sealed partial class StorageService
{
    /// <summary>Passes over chunks the guest rewrote during a commit before the final, paused pass.</summary>
    private const int MaxCommitPasses = 8;

    /// <summary>Rewritten chunks left that the final pass copies with the guest paused.</summary>
    private const long FinalPassChunks = 16;

    /// <summary>
    /// Streams a volume: copies what it reads from the layers below its top (down to the base snapshot's layer, or all
    /// of them) into the top while a guest may use the volume, then makes the base layer (or nothing) the top's backing.
    /// The guest sees no difference. Snapshots whose layers leave the chain are deleted: their layers are merged into
    /// the top. Refused while another volume uses the volume as backing.
    /// </summary>
    /// <param name="poolName">The pool.</param>
    /// <param name="volumeName">The volume.</param>
    /// <param name="options">Base and speed limit.</param>
    /// <param name="progress">Receives progress from 0 to 1.</param>
    /// <param name="cancellationToken">Stops the copy at the next chunk; the volume keeps its chain (the copied data is harmless).</param>
    /// <param name="control">Pause and a changing speed limit (jobs); null uses <see cref="StreamOptions.SpeedLimit"/>.</param>
    public async Task StreamAsync(string poolName, string volumeName, StreamOptions options, IProgress<OperationProgress>? progress = null,
        CancellationToken cancellationToken = default, LiveJobControl? control = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        PoolState pool = null!;
        VolumeState volume = null!;
        int baseIndex = -1;
        using OperationScope scope = Begin("stream", (state, s) =>
        {
            pool = RequireActivePool(state, poolName);
            volume = RequireVolume(pool, volumeName);
            baseIndex = options.BaseSnapshot is null ? -1 : RequireSnapshotIndex(volume, options.BaseSnapshot);
            if (volume.Format != ImageFormat.Qcow2 && (volume.Snapshots.Count > 0 || volume.BackingFile is not null))
            {
                ThrowHelper.Invalid($"volume '{volumeName}' has a raw top image, which cannot have a backing chain");
            }

            RefuseIfUsed(pool, volume, "stream", volume.Snapshots.Skip(baseIndex + 1).Select(x => x.File).Prepend(volume.File), except: "guest");
            s.AddVolume(pool, volume);
        });

        bool nothingBelow = baseIndex == volume.Snapshots.Count - 1 && (baseIndex >= 0 || volume.BackingFile is null);
        if (volume.Format != ImageFormat.Qcow2 || nothingBelow)
        {
            progress?.Report(new OperationProgress("stream", volumeName, 1));
            return;
        }

        SnapshotState? baseSnapshot = baseIndex >= 0 ? volume.Snapshots[baseIndex] : null;
        using var ownControl = control is null ? new LiveJobControl(options.SpeedLimit) { IdlePriority = options.IdlePriority } : null;
        LiveJobControl yield = control ?? ownControl!;
        string what = $"cannot stream volume '{volumeName}'";
        await Task.Run(() =>
        {
            using ILiveImage live = LendOrOpen(pool, volume, what);
            IBlockImage top = live.Image;

            // A stream stopped (lvstord killed) after switching the top's backing file but before recording the new chain
            // finds the switch done: nothing is left to copy, only the record to write.
            if (baseSnapshot is null ? top.Backing is null
                : top.Backing is { } below && Path.GetFullPath(below.Path) == Path.GetFullPath(pool.FullPath(baseSnapshot.File)))
            {
                return;
            }

            IBlockImage? baseLayer = baseSnapshot is null ? null : LayerAt(top, volume.Snapshots.Count - baseIndex, pool.FullPath(baseSnapshot.File), what);
            long size = top.VirtualSize;
            long done = 0;
            Func<bool> guestBusy = () => live.GuestBusy;
            ChainCopy.ForEachChunk(size, (copy, offset) =>
            {
                yield.WaitForGuest(guestBusy, cancellationToken);
                long length = Math.Min(ChainCopy.ChunkSize, size - offset);
                long written = ThrowHelper.Translate(what, () => copy.StreamRange(top, baseLayer, offset, length, live.Pause));
                progress?.Report(new OperationProgress("stream", volumeName, 0.99 * Interlocked.Add(ref done, length) / size));
                yield.Yield(written, cancellationToken);
            }, cancellationToken);

            ThrowHelper.Translate(what, top.Flush);
        }, CancellationToken.None).ConfigureAwait(false);

        // Every byte the guest reads now lives in the top (or in the base): point the top at the base, between two requests.
        var kept = volume.Snapshots.Take(baseIndex + 1).ToList();
        using (Exports.Quiesce(volume.Key))
        {
            ThrowHelper.Translate(what, () =>
            {
                using var top = (Qcow2Image)ImageOpener.Open(pool.FullPath(volume.File), new ImageOpenOptions { Format = ImageFormat.Qcow2, OpenBacking = false });
                top.SetBackingFile(baseSnapshot?.File, baseSnapshot?.Format);
                top.Flush();
            });
            Commit(state => state.WithPool(RequireActivePool(state, pool.Name).WithVolume(volume with
            {
                Snapshots = kept,
                BackingFile = baseSnapshot is null ? null : volume.BackingFile,
                BackingFormat = baseSnapshot is null ? null : volume.BackingFormat,
                BackingPool = baseSnapshot is null ? null : volume.BackingPool,
            })));
        }

        foreach (SnapshotState gone in volume.Snapshots.Skip(baseIndex + 1))
        {
            TryDeleteFile(pool.FullPath(gone.File));
        }

        // A backing volume this one no longer uses may become writable again.
        Exports.Sync(poolName);
        if (volume.BackingPool is { } backingPool && baseSnapshot is null)
        {
            Exports.Sync(backingPool);
        }

        progress?.Report(new OperationProgress("stream", volumeName, 1));
    }

    /// <summary>
    /// Commits a volume: copies everything its top and the layers above the base snapshot's layer hold into that layer
    /// while a guest may use the volume (what the guest writes meanwhile is tracked and copied again), then, with the
    /// guest held for the last few chunks, the base layer becomes the volume's top. The base snapshot and the newer ones
    /// are merged into the volume's current state, so they are deleted, with their layers and the old top.
    /// </summary>
    /// <param name="poolName">The pool.</param>
    /// <param name="volumeName">The volume.</param>
    /// <param name="options">Base and speed limit.</param>
    /// <param name="progress">Receives progress from 0 to 1.</param>
    /// <param name="cancellationToken">
    /// Stops the copy at the next chunk. The volume keeps its chain and reads as before, but the base snapshot's layer
    /// already holds part of the newer data: run the commit again to finish it.
    /// </param>
    /// <param name="control">Pause and a changing speed limit (jobs); null uses <see cref="CommitOptions.SpeedLimit"/>.</param>
    public async Task CommitAsync(string poolName, string volumeName, CommitOptions options, IProgress<OperationProgress>? progress = null,
        CancellationToken cancellationToken = default, LiveJobControl? control = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        PoolState pool = null!;
        VolumeState volume = null!;
        int baseIndex = -1;
        using OperationScope scope = Begin("commit", (state, s) =>
        {
            pool = RequireActivePool(state, poolName);
            volume = RequireVolume(pool, volumeName);
            if (volume.Snapshots.Count == 0)
            {
                ThrowHelper.Invalid(volume.BackingFile is null
                    ? $"volume '{volumeName}' has no snapshot: there is no layer to commit into"
                    : $"volume '{volumeName}' has no snapshot of its own; committing into its backing volume would change every volume that shares it (see docs/live-jobs.md)");
            }

            baseIndex = options.BaseSnapshot is null ? volume.Snapshots.Count - 1 : RequireSnapshotIndex(volume, options.BaseSnapshot);
            RefuseIfUsed(pool, volume, "commit", volume.Snapshots.Skip(baseIndex).Select(x => x.File).Prepend(volume.File), except: "guest");
            s.AddVolume(pool, volume);
        });

        await CommitClaimedAsync(pool, volume, baseIndex, options, progress, cancellationToken, control).ConfigureAwait(false);
    }

    /// <summary>The work of <see cref="CommitAsync"/> on a volume the caller has claimed and checked (also a live clone's merge).</summary>
    private async Task CommitClaimedAsync(PoolState pool, VolumeState volume, int baseIndex, CommitOptions options,
        IProgress<OperationProgress>? progress, CancellationToken cancellationToken, LiveJobControl? control)
    {
        string volumeName = volume.Name;
        SnapshotState baseSnapshot = volume.Snapshots[baseIndex];
        string basePath = pool.FullPath(baseSnapshot.File);
        using var ownControl = control is null ? new LiveJobControl(options.SpeedLimit) { IdlePriority = options.IdlePriority } : null;
        LiveJobControl yield = control ?? ownControl!;
        string what = $"cannot commit volume '{volumeName}' into snapshot '{baseSnapshot.Name}'";
        int depth = volume.Snapshots.Count - baseIndex;

        // The base is opened a second time, for writing and without lock bytes: the chain lvstord already holds open keeps
        // it locked against other processes. Reads through that chain never reach the runs written here (layers above the
        // base decide them), so its cached view of the base stays right.
        using IBlockImage target = ThrowHelper.Translate(what, () =>
            ImageOpener.Open(basePath, Exports.ImageOptions with { Format = baseSnapshot.Format, Lock = false, ReadOnly = false, OpenBacking = true }));
        WriteTracker? tracker = null;
        ILiveImage? live = null;
        try
        {
            await CopyLiveAsync().ConfigureAwait(false);
            cancellationToken.ThrowIfCancellationRequested();
            Pivot();
        }
        finally
        {
            // Given back only now: the export kept marking the guest's writes until the pivot held it.
            live?.Dispose();
        }

        foreach (string gone in volume.Snapshots.Skip(baseIndex + 1).Select(x => x.File).Prepend(volume.File))
        {
            TryDeleteFile(pool.FullPath(gone));
        }

        progress?.Report(new OperationProgress("commit", volumeName, 1));

        Task CopyLiveAsync() => Task.Run(() =>
        {
            live = LendOrOpen(pool, volume, what);
            IBlockImage top = live.Image;
            IBlockImage liveBase = LayerAt(top, depth, basePath, what);
            long size = top.VirtualSize;
            if (target.VirtualSize < size)
            {
                ThrowHelper.Translate(what, () => target.Resize(size));
            }

            tracker = new WriteTracker(size, ChainCopy.ChunkSize);
            live.Track(tracker);
            long done = 0;
            ILiveImage lent = live;
            Func<bool> guestBusy = () => lent.GuestBusy;
            ChainCopy.ForEachChunk(size, (copy, offset) =>
            {
                yield.WaitForGuest(guestBusy, cancellationToken);
                long written = ThrowHelper.Translate(what, () => copy.CommitRange(top, liveBase, target, offset, ChainCopy.ChunkSize));
                long length = Math.Min(ChainCopy.ChunkSize, size - offset);
                progress?.Report(new OperationProgress("commit", volumeName, 0.95 * Interlocked.Add(ref done, length) / size));
                yield.Yield(written, cancellationToken);
            }, cancellationToken);

            using var copy = new ChainCopy();

            // What the guest rewrote meanwhile, until little enough is left to copy with the guest held.
            for (int pass = 0; pass < MaxCommitPasses && tracker.Count() > FinalPassChunks; pass++)
            {
                for (long chunk = tracker.TakeNext(0); chunk >= 0; chunk = tracker.TakeNext(chunk + 1))
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    long offset = chunk * ChainCopy.ChunkSize;
                    long written = ThrowHelper.Translate(what, () => copy.CommitRange(top, liveBase, target, offset, ChainCopy.ChunkSize));
                    yield.Yield(written, cancellationToken);
                }
            }
        }, CancellationToken.None);

        void Pivot()
        {
            using IDisposable quiesced = Exports.Quiesce(volume.Key);
            // The guest is held and the chain closed: copy the last rewritten chunks from a fresh read-only view, make the
            // base durable, and only then make it the volume's top.
            ThrowHelper.Translate(what, () =>
            {
                using IBlockImage top = ImageOpener.Open(pool.FullPath(volume.File), new ImageOpenOptions { Format = volume.Format, ReadOnly = true, Lock = false });
                IBlockImage liveBase = LayerAt(top, depth, basePath, what);
                using var copy = new ChainCopy();
                for (long chunk = tracker!.TakeNext(0); chunk >= 0; chunk = tracker.TakeNext(chunk + 1))
                {
                    copy.CommitRange(top, liveBase, target, chunk * ChainCopy.ChunkSize, ChainCopy.ChunkSize);
                }

                target.Flush();
            });
            target.Dispose();
            Commit(state => state.WithPool(RequireActivePool(state, pool.Name).WithVolume(volume with
            {
                File = baseSnapshot.File,
                Format = baseSnapshot.Format,
                Snapshots = volume.Snapshots.Take(baseIndex).ToList(),
            })));
        }
    }

    private static int RequireSnapshotIndex(VolumeState volume, string snapshotName)
    {
        int index = volume.Snapshots.ToList().FindIndex(x => x.Name == snapshotName);
        if (index < 0)
        {
            ThrowHelper.NotFound($"volume '{volume.Name}' has no snapshot named '{snapshotName}'; list its snapshots to see their names");
        }

        return index;
    }

    /// <summary>The volume's chain as its export holds it, or opened here when no export holds the top read-write.</summary>
    private ILiveImage LendOrOpen(PoolState pool, VolumeState volume, string what) =>
        Exports.Lend(volume.Key) ?? new OwnedLiveImage(ThrowHelper.Translate(what, () =>
            ImageOpener.Open(pool.FullPath(volume.File), Exports.ImageOptions with { Format = volume.Format, ReadOnly = false, OpenBacking = true })));

    /// <summary>The layer <paramref name="depth"/> levels below <paramref name="top"/>, checked against the file the inventory names.</summary>
    private static IBlockImage LayerAt(IBlockImage top, int depth, string expectedPath, string what)
    {
        IBlockImage? layer = top;
        for (int i = 0; i < depth && layer is not null; i++)
        {
            layer = layer.Backing;
        }

        if (layer is null || Path.GetFullPath(layer.Path) != Path.GetFullPath(expectedPath))
        {
            throw new StorageServiceException(StorageErrorKind.Corrupt,
                $"{what}: the image chain on disk does not match the service's records (expected {expectedPath} {depth} levels below the top, found {layer?.Path ?? "nothing"}); refresh the pool");
        }

        return layer;
    }
}
