using LibvirtStorage.Service.State;

namespace LibvirtStorage.Service;

public sealed partial class StorageService
{
    /// <summary>
    /// Quiesces the volume's export for work no guest may see (delete, revert, upload, wipe), then checks again
    /// that no guest is connected: one may have connected since the claim. Refused with InUse naming the users.
    /// </summary>
    private IDisposable QuiesceUnused(PoolState pool, VolumeState volume, string operation)
    {
        IDisposable quiesced = Exports.Quiesce(volume.Key);
        try
        {
            RefuseIfGuest(pool, volume, operation);
            return quiesced;
        }
        catch
        {
            quiesced.Dispose();
            throw;
        }
    }

    /// <summary>Throws InUse, naming the guest, while a front-end is connected to the volume's export.</summary>
    private void RefuseIfGuest(PoolState pool, VolumeState volume, string operation)
    {
        if (Exports.GetState(volume.Key) == ExportState.Connected)
        {
            var guests = Users.GetUsers(volume.Key).Where(u => u.Kind == "guest").Select(u => u.ToString()).DefaultIfEmpty("a guest").ToList();
            ThrowHelper.InUse($"cannot {operation} volume '{volume.Name}' in pool '{pool.Name}': it is in use by {string.Join(", ", guests)}; shut the guest down (or detach the disk) first");
        }
    }

    /// <summary>
    /// Quiesces the export of a volume whose chain is read by a copy (full clone, download) when the export holds
    /// its top read-write: the engine's locks let readers share a file only with other readers. A connected guest
    /// pauses for the copy, which then sees one consistent disk.
    /// </summary>
    private IDisposable QuiesceForReading(PoolState pool, VolumeState volume) =>
        IsBackingOfOthers(pool, volume) ? NoExport.Instance : Exports.Quiesce(volume.Key);

    private sealed class NoExport : IDisposable
    {
        public static readonly NoExport Instance = new();

        public void Dispose()
        {
        }
    }

    /// <summary>The service as its exports see it.</summary>
    private sealed class ExportHost(StorageService service) : IVolumeExportHost
    {
        public IReadOnlyList<string> ActivePools => service.Snapshot().Pools.Where(p => p.Active).Select(p => p.Name).ToList();

        public IReadOnlyList<ExportTarget> GetExportTargets(string poolName)
        {
            PoolState? pool = service.Snapshot().FindPool(poolName);
            return pool is { Active: true } ? pool.Volumes.Select(v => Target(pool, v)).ToList() : [];
        }

        public ExportTarget? GetExportTarget(Guid volumeKey)
        {
            foreach (PoolState pool in service.Snapshot().Pools.Where(p => p.Active))
            {
                if (pool.Volumes.FirstOrDefault(v => v.Key == volumeKey) is { } volume)
                {
                    return Target(pool, volume);
                }
            }

            return null;
        }

        public IDisposable AttachUser(Guid volumeKey, VolumeUser user) => service._registry.Attach(volumeKey, user);

        private ExportTarget Target(PoolState pool, VolumeState volume) =>
            new(volume.Key, pool.Name, volume.Name, StorageNames.SocketPath(service.RuntimeDirectory, pool.Name, volume.Name),
                pool.FullPath(volume.File), volume.Format, service.IsBackingOfOthers(pool, volume));
    }

    /// <summary>The caller's users and the service's own registry (connected guests), as one.</summary>
    private sealed class CombinedUsers(IVolumeUsers given, VolumeUserRegistry own) : IVolumeUsers
    {
        public IReadOnlyList<VolumeUser> GetUsers(Guid volumeKey) => [.. given.GetUsers(volumeKey), .. own.GetUsers(volumeKey)];
    }
}
