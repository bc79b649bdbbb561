using LibvirtStorage.Images;
using LibvirtStorage.Service.State;

namespace LibvirtStorage.Service;

/// <summary>
/// The storage domain: pools (directories lvstord owns), volumes (image chains in them), snapshots,
/// transfers, and the persistent inventory. Every public method is thread-safe.
/// </summary>
/// <remarks>
/// <para>One short lock guards the in-memory inventory, the busy marks and the state-file write. Long work
/// (copies, transfers, wipes, image creation) runs outside it; only the volumes involved are marked busy,
/// so unrelated pools and volumes are never blocked. A second call on a busy volume fails at once with
/// <see cref="StorageErrorKind.Busy"/> instead of queueing behind a copy of unknown length.</para>
/// <para>A change builds a new immutable <see cref="InventoryState"/>, writes it, then swaps it in, so a failed
/// call leaves memory, the state file and the pool directory as they were.</para>
/// </remarks>
public sealed partial class StorageService
{
    /// <summary>
    /// The largest capacity accepted: what qcow2 holds with 64 KiB clusters and the largest L1 table QEMU
    /// accepts (32 MiB of L1 entries, each mapping 512 MiB), i.e. 2 PiB. Raw volumes get the same cap.
    /// </summary>
    public const long MaxCapacity = (32L << 20) / 8 * (512L << 20);

    private readonly Lock _lock = new();
    private readonly StateStore _store;
    private readonly Dictionary<Guid, string> _busyVolumes = [];
    private readonly Dictionary<string, string> _busyPools = new(StringComparer.Ordinal);
    private readonly HashSet<(string Pool, string Volume)> _reservedNames = [];
    private readonly VolumeUserRegistry _registry;
    private InventoryState _state;

    private StorageService(StorageServiceOptions options, StateStore store, InventoryState state)
    {
        _store = store;
        _state = state;
        RuntimeDirectory = options.RuntimeDirectory;
        _registry = options.Users as VolumeUserRegistry ?? new VolumeUserRegistry();
        Users = options.Users is null or VolumeUserRegistry ? _registry : new CombinedUsers(options.Users, _registry);
        Exports = options.Exports ?? NoVolumeExports.Instance;
    }

    /// <summary>Directory of the export sockets.</summary>
    public string RuntimeDirectory { get; }

    /// <summary>
    /// The registry consulted before delete, revert, stop and undefine; connected guests of the exports are in it
    /// (as <c>guest pid N (comm) on &lt;socket&gt;</c>).
    /// </summary>
    public IVolumeUsers Users { get; }

    /// <summary>The volumes' exports (sockets and connected guests).</summary>
    public IVolumeExports Exports { get; }

    /// <summary>What loading found wrong on disk: missing pool directories, missing or changed image files.</summary>
    public IReadOnlyList<StorageProblem> LoadProblems { get; private set; } = [];

    /// <summary>The state file.</summary>
    public string StateFile => _store.FilePath;

    /// <summary>
    /// Loads the inventory from <see cref="StorageServiceOptions.StateDirectory"/> (an absent file is an empty
    /// inventory), starts active and autostart pools whose directory exists, re-probes their image chains, and
    /// attaches <see cref="StorageServiceOptions.Exports"/>, which opens the exports of the active pools.
    /// </summary>
    /// <exception cref="StorageServiceException">Corrupt: the state file is damaged (the message names it).</exception>
    public static StorageService Open(StorageServiceOptions? options = null)
    {
        options ??= new StorageServiceOptions();
        var store = new StateStore(options.StateDirectory);
        InventoryState state = store.Load();
        var problems = new List<StorageProblem>();
        var pools = new List<PoolState>();
        foreach (PoolState pool in state.Pools)
        {
            bool wanted = pool.Active || pool.Autostart;
            bool present = Directory.Exists(pool.Path);
            if (wanted && !present)
            {
                problems.Add(new StorageProblem(pool.Name, pool.Path, $"pool directory {pool.Path} is missing; the pool stays stopped until it exists again"));
            }

            PoolState loaded = pool with { Active = wanted && present };
            if (loaded.Active)
            {
                problems.AddRange(VerifyChains(state, loaded));
            }

            pools.Add(loaded);
        }

        var service = new StorageService(options, store, state with { Pools = pools });
        service.LoadProblems = problems;
        service.Exports.Attach(new ExportHost(service));
        return service;
    }

    /// <summary>Re-probes every volume of <paramref name="pool"/>: the files must exist and form exactly the recorded chain.</summary>
    private static List<StorageProblem> VerifyChains(InventoryState state, PoolState pool)
    {
        var problems = new List<StorageProblem>();
        foreach (VolumeState volume in pool.Volumes)
        {
            List<(string File, ImageFormat Format)> expected = ExpectedChain(state, pool, volume).Select(l => (l.File, l.Format)).ToList();
            try
            {
                using IBlockImage top = ImageOpener.Open(pool.FullPath(volume.File), new ImageOpenOptions { ReadOnly = true, Lock = false });
                var actual = new List<(string File, ImageFormat Format)>();
                for (IBlockImage? image = top; image is not null; image = image.Backing)
                {
                    actual.Add((Path.GetFullPath(image.Path), image.Format));
                }

                if (!actual.SequenceEqual(expected))
                {
                    problems.Add(new StorageProblem(pool.Name, volume.File,
                        $"volume '{volume.Name}': the image chain on disk ({Describe(actual)}) differs from the inventory ({Describe(expected)}); inspect it with 'qemu-img info --backing-chain'"));
                }
            }
            catch (ImageException ex)
            {
                problems.Add(new StorageProblem(pool.Name, volume.File, $"volume '{volume.Name}' cannot be opened: {ex.Message}"));
            }
            catch (IOException ex)
            {
                problems.Add(new StorageProblem(pool.Name, volume.File, $"volume '{volume.Name}' cannot be opened: {ex.Message}"));
            }
        }

        // Hidden files are the service's own; one the inventory does not know was left by an interrupted call.
        var known = pool.KnownFiles().ToHashSet(StringComparer.Ordinal);
        try
        {
            foreach (string path in Directory.EnumerateFiles(pool.Path, ".*"))
            {
                string file = Path.GetFileName(path);
                if (!known.Contains(file) && (file.Contains(".creating-", StringComparison.Ordinal) || pool.Volumes.Any(v => file.StartsWith($".{v.Name}.", StringComparison.Ordinal))))
                {
                    problems.Add(new StorageProblem(pool.Name, file, $"{path} belongs to no volume (left by an interrupted operation); delete it"));
                }
            }
        }
        catch (IOException)
        {
            // The directory listing is advisory; a missing directory was reported already.
        }

        return problems;

        static string Describe(List<(string File, ImageFormat Format)> chain) =>
            string.Join(" <- ", chain.AsEnumerable().Reverse().Select(l => $"{Path.GetFileName(l.File)} ({l.Format.ToName()})"));
    }

    /// <summary>Every layer of a volume's chain, top first, each named by its owning volume and snapshot, with full paths.</summary>
    private static List<ChainLayer> ExpectedChain(InventoryState state, PoolState pool, VolumeState volume)
    {
        var layers = new List<ChainLayer>();
        foreach (var own in volume.OwnLayers())
        {
            layers.Add(new ChainLayer(volume.Name, own.Snapshot, own.Format, pool.FullPath(own.File)));
        }

        var seen = new HashSet<Guid> { volume.Key };
        for (VolumeState current = volume; state.BackingPoolOf(pool, current) is { } backingPool;)
        {
            string backing = current.BackingFile!;
            if (backingPool.OwnerOf(backing) is not { } owner || !seen.Add(owner.Key))
            {
                break;
            }

            bool below = false;
            foreach (var own in owner.OwnLayers())
            {
                below |= own.File == backing;
                if (below)
                {
                    layers.Add(new ChainLayer(owner.Name, own.Snapshot, own.Format, backingPool.FullPath(own.File)));
                }
            }

            (pool, current) = (backingPool, owner);
        }

        return layers;
    }

    /// <summary>Applies a change to the inventory: computes it from the current state, writes it, then swaps it in.</summary>
    private void Commit(Func<InventoryState, InventoryState> change)
    {
        lock (_lock)
        {
            InventoryState next = change(_state);
            _store.Save(next);
            _state = next;
        }
    }

    private InventoryState Snapshot()
    {
        lock (_lock)
        {
            return _state;
        }
    }

    private static PoolState RequirePool(InventoryState state, string poolName) =>
        state.FindPool(poolName) ?? throw new StorageServiceException(StorageErrorKind.NotFound,
            $"no pool named '{poolName}'; list pools to see the defined ones");

    private static PoolState RequireActivePool(InventoryState state, string poolName)
    {
        PoolState pool = RequirePool(state, poolName);
        if (!pool.Active)
        {
            ThrowHelper.Invalid($"pool '{poolName}' is not active; start it first");
        }

        return pool;
    }

    private static VolumeState RequireVolume(PoolState pool, string volumeName) =>
        pool.FindVolume(volumeName) ?? throw new StorageServiceException(StorageErrorKind.NotFound,
            $"no volume named '{volumeName}' in pool '{pool.Name}'; refresh the pool if the file was added by hand");

    /// <summary>Who uses any of <paramref name="files"/> of <paramref name="volume"/>: other volumes (as backing, in any pool) and registered users.</summary>
    private List<string> UsersOf(PoolState pool, VolumeState volume, IEnumerable<string>? files = null, string? except = null)
    {
        InventoryState state = Snapshot();
        var users = (files ?? volume.Files())
            .SelectMany(file => state.DependentsOf(pool.Name, file))
            .Where(d => d.Volume.Key != volume.Key)
            .Select(d => d.Pool.Name == pool.Name ? $"volume '{d.Volume.Name}' (uses it as backing)" : $"volume '{d.Volume.Name}' of pool '{d.Pool.Name}' (uses it as backing)")
            .Distinct()
            .ToList();
        users.AddRange(Users.GetUsers(volume.Key).Where(u => u.Kind != except).Select(u => u.ToString()));
        return users;
    }

    /// <summary>Whether a volume (in any pool) uses this volume's top as its backing file.</summary>
    private bool IsBackingOfOthers(PoolState pool, VolumeState volume) =>
        Snapshot().DependentsOf(pool.Name, volume.File).Any(d => d.Volume.Key != volume.Key);

    /// <summary>
    /// Throws InUse naming the users of <paramref name="volume"/>'s files, when there are any; registered users of
    /// kind <paramref name="except"/> are allowed.
    /// </summary>
    private void RefuseIfUsed(PoolState pool, VolumeState volume, string operation, IEnumerable<string>? files = null, string? except = null)
    {
        List<string> users = UsersOf(pool, volume, files, except);
        if (users.Count > 0)
        {
            ThrowHelper.InUse($"cannot {operation} volume '{volume.Name}' in pool '{pool.Name}': it is in use by {string.Join(", ", users)}; remove or stop those users first");
        }
    }

    /// <summary>Refuses writes to a volume that other volumes use as backing (their data would change under them).</summary>
    private void RefuseIfReadOnly(PoolState pool, VolumeState volume, string operation)
    {
        var dependents = Snapshot().DependentsOf(pool.Name, volume.File).Where(d => d.Volume.Key != volume.Key).Select(d => $"'{d.Volume.Name}'").ToList();
        if (dependents.Count > 0)
        {
            ThrowHelper.InUse($"cannot {operation} volume '{volume.Name}': it is read-only because volume {string.Join(", ", dependents)} uses it as backing; delete those (or clone them in full) first");
        }
    }

    /// <summary>Rounds a capacity up to whole 512-byte sectors (as qemu-img create does) after checking its range.</summary>
    private static long CheckCapacity(long capacity)
    {
        if (capacity <= 0)
        {
            ThrowHelper.Invalid($"capacity {capacity} is not positive; give the size in bytes, for example 1073741824 for 1 GiB");
        }

        if (capacity > MaxCapacity)
        {
            ThrowHelper.Invalid($"capacity {capacity} is larger than the largest volume supported ({MaxCapacity} bytes, 2 PiB)");
        }

        return (capacity + 511) & ~511L;
    }

    private static ImageFormat ParseFormat(string? format) =>
        ImageFormatNames.Parse(format) ?? throw new StorageServiceException(StorageErrorKind.Invalid,
            $"unknown volume format '{format}'; use 'raw' or 'qcow2'");

    private static void TryDeleteFile(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }
}
