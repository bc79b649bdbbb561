using LibvirtStorage.Images;
using LibvirtStorage.Images.Operations;
using LibvirtStorage.Service.State;

namespace LibvirtStorage.Service;

public sealed partial class StorageService
{
    /// <summary>
    /// Clones a volume in the same pool. A full clone copies the guest-visible data of the whole chain into a
    /// new, independent image (the engine's convert: zero runs are skipped, so it stays sparse). A linked
    /// clone is a qcow2 overlay over the source, which then becomes read-only.
    /// </summary>
    /// <param name="poolName">Pool of both volumes.</param>
    /// <param name="sourceName">The volume to copy.</param>
    /// <param name="targetName">The new volume.</param>
    /// <param name="format">Format of the new volume; null keeps the source's (a linked clone is always qcow2).</param>
    /// <param name="linked">Make an overlay instead of a copy.</param>
    /// <param name="progress">Receives progress from 0 to 1.</param>
    /// <param name="cancellationToken">Stops a full copy; the partial target is removed.</param>
    public async Task<VolumeInfo> CloneVolumeAsync(string poolName, string sourceName, string targetName, string? format = null,
        bool linked = false, IProgress<OperationProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        StorageNames.ValidateVolumeName(poolName, targetName, RuntimeDirectory);
        ImageFormat? targetFormat = format is null ? null : ParseFormat(format);
        if (linked && targetFormat is ImageFormat.Raw)
        {
            ThrowHelper.Invalid("a linked clone is a qcow2 overlay; use format 'qcow2' or leave the format out");
        }

        PoolState pool = null!;
        VolumeState source = null!;
        using OperationScope scope = Begin("clone", (state, s) =>
        {
            pool = RequireActivePool(state, poolName);
            source = RequireVolume(pool, sourceName);
            if (linked && Users.GetUsers(source.Key) is { Count: > 0 } users)
            {
                ThrowHelper.InUse($"cannot make a linked clone of '{sourceName}': it is in use by {string.Join(", ", users)} and would change under the clone; stop those users or make a full clone");
            }

            s.AddVolume(pool, source);
            s.ReserveName(pool, targetName);
        });

        ImageFormat newFormat = linked ? ImageFormat.Qcow2 : targetFormat ?? source.Format;
        string what = $"cannot clone volume '{sourceName}' to '{targetName}'";
        var volume = new VolumeState(Guid.NewGuid(), targetName, targetName, newFormat,
            linked ? source.File : null, linked ? source.Format : null, [], 1, DateTimeOffset.UtcNow);
        try
        {
            if (linked)
            {
                // The source's export is closed while the overlay is made, and reopened read-only (it now backs the clone).
                var options = new ImageCreateOptions { Format = ImageFormat.Qcow2, BackingFile = source.File, BackingFormat = source.Format };
                using (Exports.Quiesce(source.Key))
                {
                    CreateFileAtomically(pool, targetName, what, path => ImageOpener.Create(path, options));
                    CommitNewVolume(poolName, volume);
                }
            }
            else
            {
                var report = progress is null ? null : new FractionProgress(progress, "clone", sourceName);
                await Task.Run(() =>
                {
                    using IDisposable quiesced = QuiesceForReading(pool, source);
                    CreateFileAtomically(pool, targetName, what, path =>
                    {
                        using IBlockImage input = ImageOpener.Open(pool.FullPath(source.File), new ImageOpenOptions { ReadOnly = true, Format = source.Format });
                        ImageConvert.Run(input, path, new ImageCreateOptions { Format = newFormat }, progress: report, cancellationToken: cancellationToken);
                    });
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

    /// <summary>Adapts the engine's fraction-done reports to <see cref="OperationProgress"/>.</summary>
    private sealed class FractionProgress(IProgress<OperationProgress> target, string operation, string volume) : IProgress<double>
    {
        public void Report(double value) => target.Report(new OperationProgress(operation, volume, Math.Clamp(value, 0, 1)));
    }
}
