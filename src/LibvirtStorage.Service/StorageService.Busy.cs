using LibvirtStorage.Service.State;

namespace LibvirtStorage.Service;

public sealed partial class StorageService
{
    /// <summary>
    /// Marks volumes busy, and volume names reserved, for one operation; disposing releases them. Taking the
    /// marks never waits: a volume already busy fails the call with Busy.
    /// </summary>
    private sealed class OperationScope(StorageService owner, string operation) : IDisposable
    {
        private readonly List<Guid> _volumes = [];
        private readonly List<(string Pool, string Volume)> _names = [];
        private string? _pool;

        public string Operation => operation;

        /// <summary>Marks the volume busy; called under the service lock.</summary>
        public void AddVolume(PoolState pool, VolumeState volume)
        {
            if (owner._busyVolumes.TryGetValue(volume.Key, out string? running))
            {
                ThrowHelper.Busy($"volume '{volume.Name}' in pool '{pool.Name}' is busy with {running}; wait for it to finish and try again");
            }

            owner._busyVolumes.Add(volume.Key, operation);
            _volumes.Add(volume.Key);
        }

        /// <summary>Reserves a new volume name so concurrent creates and refreshes cannot take it; called under the lock.</summary>
        public void ReserveName(PoolState pool, string name)
        {
            if (pool.FindVolume(name) is not null || owner._reservedNames.Contains((pool.Name, name)))
            {
                ThrowHelper.Exists($"pool '{pool.Name}' already has a volume named '{name}'; choose another name or delete that volume");
            }

            if (File.Exists(pool.FullPath(name)) || Directory.Exists(pool.FullPath(name)))
            {
                ThrowHelper.Exists($"a file named '{name}' already exists in {pool.Path}; refresh the pool to adopt it, or choose another name");
            }

            owner._reservedNames.Add((pool.Name, name));
            _names.Add((pool.Name, name));
        }

        /// <summary>Marks the whole pool busy (refresh); called under the lock.</summary>
        public void AddPool(PoolState pool)
        {
            if (owner._busyPools.TryGetValue(pool.Name, out string? running))
            {
                ThrowHelper.Busy($"pool '{pool.Name}' is busy with {running}; try again when it has finished");
            }

            owner._busyPools.Add(pool.Name, operation);
            _pool = pool.Name;
        }

        public void Dispose()
        {
            lock (owner._lock)
            {
                foreach (Guid key in _volumes)
                {
                    owner._busyVolumes.Remove(key);
                }

                foreach (var name in _names)
                {
                    owner._reservedNames.Remove(name);
                }

                if (_pool is not null)
                {
                    owner._busyPools.Remove(_pool);
                }
            }
        }
    }

    /// <summary>Starts an operation under the lock; <paramref name="claim"/> checks state and takes marks, and on failure everything is released.</summary>
    private OperationScope Begin(string operation, Action<InventoryState, OperationScope> claim)
    {
        var scope = new OperationScope(this, operation);
        try
        {
            lock (_lock)
            {
                claim(_state, scope);
            }

            return scope;
        }
        catch
        {
            scope.Dispose();
            throw;
        }
    }

    /// <summary>Throws Busy when any volume of the pool, or the pool itself, has an operation running; called under the lock.</summary>
    private void RefuseIfPoolBusy(PoolState pool, string operation)
    {
        if (_busyPools.TryGetValue(pool.Name, out string? running))
        {
            ThrowHelper.Busy($"cannot {operation} pool '{pool.Name}': it is busy with {running}; try again when it has finished");
        }

        var busy = pool.Volumes.Where(v => _busyVolumes.ContainsKey(v.Key)).Select(v => $"'{v.Name}' ({_busyVolumes[v.Key]})").ToList();
        if (busy.Count > 0 || _reservedNames.Any(n => n.Pool == pool.Name))
        {
            ThrowHelper.Busy($"cannot {operation} pool '{pool.Name}': operations are running on its volumes {string.Join(", ", busy)}; wait for them to finish");
        }
    }
}
