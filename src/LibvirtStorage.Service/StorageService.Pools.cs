using LibvirtStorage.Service.State;

namespace LibvirtStorage.Service;

public sealed partial class StorageService
{
    /// <summary>Defines a pool over <paramref name="path"/> (an absolute directory, created when missing). The pool starts stopped.</summary>
    public PoolInfo DefinePool(string name, string path)
    {
        StorageNames.ValidatePoolName(name, RuntimeDirectory);
        if (string.IsNullOrEmpty(path) || !Path.IsPathRooted(path) || path.Contains('\0', StringComparison.Ordinal))
        {
            ThrowHelper.Invalid($"pool path '{path}' is not an absolute path; give the directory as /srv/lvstor/{name} or similar");
        }

        string directory = Path.TrimEndingDirectorySeparator(Path.GetFullPath(path));
        if (File.Exists(directory))
        {
            ThrowHelper.Invalid($"pool path {directory} is a file, not a directory; choose a directory");
        }

        lock (_lock)
        {
            if (_state.FindPool(name) is not null)
            {
                ThrowHelper.Exists($"a pool named '{name}' is already defined; undefine it first or choose another name");
            }

            if (_state.Pools.FirstOrDefault(p => Overlaps(p.Path, directory)) is { } other)
            {
                ThrowHelper.Exists($"directory {directory} overlaps pool '{other.Name}' at {other.Path}; pools need separate directories");
            }

            if (Overlaps(Path.TrimEndingDirectorySeparator(Path.GetFullPath(_store.Directory)), directory))
            {
                ThrowHelper.Invalid($"directory {directory} overlaps the state directory {_store.Directory}; choose another directory");
            }

            bool created = !Directory.Exists(directory);
            ThrowHelper.Translate($"cannot create pool directory {directory}", () => Directory.CreateDirectory(directory));
            try
            {
                var pool = new PoolState(name, Guid.NewGuid(), directory, Autostart: false, Active: false, []);
                InventoryState next = _state.WithPool(pool);
                _store.Save(next);
                _state = next;
                return ToInfo(pool);
            }
            catch when (created)
            {
                TryDeleteDirectory(directory);
                throw;
            }
        }
    }

    /// <summary>Forgets a stopped pool and its inventory; its directory and files stay on disk.</summary>
    public void UndefinePool(string name)
    {
        lock (_lock)
        {
            PoolState pool = RequirePool(_state, name);
            if (pool.Active)
            {
                ThrowHelper.Invalid($"pool '{name}' is active; stop it before undefining it");
            }

            RefuseIfPoolBusy(pool, "undefine");
            RefuseIfBaseOfOtherPools(_state, pool, "undefine");
            InventoryState next = _state.WithoutPool(name);
            _store.Save(next);
            _state = next;
        }
    }

    /// <summary>Starts a pool: its directory must exist. Call <see cref="RefreshPool"/> to adopt files added by hand.</summary>
    public PoolInfo StartPool(string name)
    {
        PoolState? started = null;
        Commit(state =>
        {
            PoolState pool = RequirePool(state, name);
            if (pool.Active)
            {
                ThrowHelper.Invalid($"pool '{name}' is already active");
            }

            if (!Directory.Exists(pool.Path))
            {
                ThrowHelper.NotFound($"directory {pool.Path} of pool '{name}' does not exist; create it, or undefine the pool");
            }

            started = pool with { Active = true };
            return state.WithPool(started);
        });
        Exports.Sync(name);
        return ToInfo(started!);
    }

    /// <summary>Stops a pool. Refused while operations run on its volumes or its volumes have users (exports).</summary>
    public PoolInfo StopPool(string name)
    {
        PoolState? stopped = null;
        Commit(state =>
        {
            PoolState pool = RequirePool(state, name);
            if (!pool.Active)
            {
                ThrowHelper.Invalid($"pool '{name}' is not active");
            }

            RefuseIfPoolBusy(pool, "stop");
            var used = pool.Volumes.SelectMany(v => Users.GetUsers(v.Key).Select(u => $"'{v.Name}' by {u}")).ToList();
            if (used.Count > 0)
            {
                ThrowHelper.InUse($"cannot stop pool '{name}': volumes are in use: {string.Join(", ", used)}; stop those users first");
            }

            RefuseIfBaseOfOtherPools(state, pool, "stop");

            stopped = pool with { Active = false };
            return state.WithPool(stopped);
        });
        Exports.Sync(name); // closes the sockets: no guest is connected (refused above)
        return ToInfo(stopped!);
    }

    /// <summary>Throws InUse when volumes of other pools use files of this pool as backing (a base moved here).</summary>
    private static void RefuseIfBaseOfOtherPools(InventoryState state, PoolState pool, string operation)
    {
        var dependents = pool.Volumes.SelectMany(v => state.DependentsOf(pool.Name, v.File))
            .Where(d => d.Pool.Name != pool.Name)
            .Select(d => $"'{d.Volume.Name}' of pool '{d.Pool.Name}'")
            .ToList();
        if (dependents.Count > 0)
        {
            ThrowHelper.InUse($"cannot {operation} pool '{pool.Name}': volumes {string.Join(", ", dependents)} use its volumes as backing; stream them (or move the base back) first");
        }
    }

    /// <summary>Sets whether the pool starts when the service starts.</summary>
    public PoolInfo SetPoolAutostart(string name, bool autostart)
    {
        PoolState? changed = null;
        Commit(state =>
        {
            changed = RequirePool(state, name) with { Autostart = autostart };
            return state.WithPool(changed);
        });
        return ToInfo(changed!);
    }

    /// <summary>The pool's definition and, while active, its file system's capacity, allocation and free space.</summary>
    public PoolInfo GetPool(string name) => ToInfo(RequirePool(Snapshot(), name));

    /// <summary>Every defined pool, by name.</summary>
    public IReadOnlyList<PoolInfo> ListPools() => Snapshot().Pools.Select(ToInfo).ToList();

    private static PoolInfo ToInfo(PoolState pool)
    {
        long capacity = 0, allocation = 0, available = 0;
        if (pool.Active)
        {
            // DriveInfo on Linux is statvfs(2) of the given path: f_blocks, f_bfree and f_bavail times f_frsize.
            try
            {
                var drive = new DriveInfo(pool.Path);
                capacity = drive.TotalSize;
                allocation = capacity - drive.TotalFreeSpace;
                available = drive.AvailableFreeSpace;
            }
            catch (IOException)
            {
                // The directory vanished under an active pool: report zeroes, as libvirt does for an unreadable pool.
            }
        }

        return new PoolInfo(pool.Name, pool.Uuid, pool.Path, pool.Active, pool.Autostart, capacity, allocation, available, pool.Volumes.Count);
    }

    private static bool Overlaps(string a, string b) =>
        a == b || a.StartsWith(b + "/", StringComparison.Ordinal) || b.StartsWith(a + "/", StringComparison.Ordinal) || a == "/" || b == "/";

    private static void TryDeleteDirectory(string directory)
    {
        try
        {
            Directory.Delete(directory);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }
}
