using LibvirtStorage.Images;
using LibvirtStorage.Service;

namespace LibvirtStorage.DBus;

/// <summary>
/// An immutable snapshot of every object the server exports, built from the service and the job manager.
/// The server keeps the latest one, diffs it against the next, and signals the difference.
/// </summary>
internal sealed class ObjectTree
{
    private readonly SortedDictionary<string, BusObject> _objects;

    private ObjectTree(SortedDictionary<string, BusObject> objects) => _objects = objects;

    public static ObjectTree Empty { get; } = new(new SortedDictionary<string, BusObject>(StringComparer.Ordinal));

    public IEnumerable<BusObject> Objects => _objects.Values;

    public BusObject? Find(string path) => _objects.GetValueOrDefault(path);

    /// <summary>A copy with <paramref name="replacement"/> in place of the object at its path.</summary>
    public ObjectTree With(BusObject replacement) =>
        new(new SortedDictionary<string, BusObject>(_objects, StringComparer.Ordinal) { [replacement.Path] = replacement });

    /// <summary>The direct children of <paramref name="path"/> that exist in the tree or lead to objects in it.</summary>
    public IEnumerable<string> ChildNames(string path)
    {
        string prefix = path == "/" ? "/" : path + "/";
        return _objects.Keys
            .Where(p => p.StartsWith(prefix, StringComparison.Ordinal) && p.Length > prefix.Length)
            .Select(p => p[prefix.Length..].Split('/')[0])
            .Distinct(StringComparer.Ordinal);
    }

    /// <summary>Reads the whole state. Runs service calls that open image headers, so call it off the bus loop.</summary>
    public static ObjectTree Build(StorageService service, JobManager jobs, StorageBusOptions options)
    {
        var objects = new SortedDictionary<string, BusObject>(StringComparer.Ordinal);
        var manager = new BusObject(ObjectPaths.Root, BusObjectKind.Manager, Interfaces.Manager, new Dictionary<string, BusValue>
        {
            ["Version"] = BusValue.String(options.Version),
            ["StateDirectory"] = BusValue.String(options.StateDirectory ?? Path.GetDirectoryName(service.StateFile) ?? ""),
            ["RuntimeDirectory"] = BusValue.String(service.RuntimeDirectory),
        });
        objects.Add(manager.Path, manager);

        IReadOnlyList<StorageJob> jobList = jobs.List();
        foreach (PoolInfo pool in service.ListPools())
        {
            string poolPath = ObjectPaths.Pool(pool.Name);
            objects[poolPath] = new BusObject(poolPath, BusObjectKind.Pool, Interfaces.Pool, PoolProperties(pool), pool.Name);
            IReadOnlyList<VolumeInfo> volumes;
            try
            {
                volumes = service.ListVolumes(pool.Name);
            }
            catch (StorageServiceException)
            {
                continue; // Undefined between the two calls; the next resync drops it.
            }

            foreach (VolumeInfo volume in volumes)
            {
                string path = ObjectPaths.Volume(pool.Name, volume.Name);
                objects[path] = new BusObject(path, BusObjectKind.Volume, Interfaces.Volume,
                    VolumeProperties(service, pool, volume, volumes, jobList), pool.Name, volume.Name);
            }
        }

        foreach (StorageJob job in jobList)
        {
            string path = ObjectPaths.Job(job.Id);
            objects[path] = new BusObject(path, BusObjectKind.Job, Interfaces.Job, JobProperties(job), job.Pool, job.Volume, job.Id);
        }

        return new ObjectTree(objects);
    }

    /// <summary>Every user of a volume as (kind, who): other volumes backing onto it, registered users, running jobs.</summary>
    internal static IEnumerable<(string Kind, string Who)> UsersOf(StorageService service, VolumeInfo volume, IReadOnlyList<VolumeInfo> poolVolumes, IReadOnlyList<StorageJob> jobs)
    {
        foreach (VolumeInfo other in poolVolumes)
        {
            if (other.Key != volume.Key && other.Chain.Any(l => l.Volume == volume.Name))
            {
                yield return ("backing", $"volume '{other.Name}'");
            }
        }

        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (VolumeUser user in service.Users.GetUsers(volume.Key))
        {
            seen.Add(user.Description);
            yield return (user.Kind, user.Description);
        }

        foreach (StorageJob job in jobs)
        {
            if (job.State == StorageJobState.Running && job.Pool == volume.Pool && job.Volume == volume.Name && !seen.Contains(job.ToString()))
            {
                yield return ("job", job.ToString());
            }
        }
    }

    private static Dictionary<string, BusValue> PoolProperties(PoolInfo pool) => new()
    {
        ["Name"] = BusValue.String(pool.Name),
        ["Uuid"] = BusValue.String(pool.Uuid.ToString()),
        ["Path"] = BusValue.String(pool.Path),
        ["Active"] = BusValue.Bool(pool.Active),
        ["Autostart"] = BusValue.Bool(pool.Autostart),
        ["Capacity"] = BusValue.UInt64((ulong)Math.Max(0, pool.Capacity)),
        ["Allocation"] = BusValue.UInt64((ulong)Math.Max(0, pool.Allocation)),
        ["Available"] = BusValue.UInt64((ulong)Math.Max(0, pool.Available)),
        ["VolumeCount"] = BusValue.UInt32((uint)pool.VolumeCount),
    };

    private static Dictionary<string, BusValue> VolumeProperties(StorageService service, PoolInfo pool, VolumeInfo volume,
        IReadOnlyList<VolumeInfo> poolVolumes, IReadOnlyList<StorageJob> jobs) => new()
    {
        ["Name"] = BusValue.String(volume.Name),
        ["Key"] = BusValue.String(volume.Key.ToString()),
        ["Pool"] = BusValue.ObjectPath(ObjectPaths.Pool(pool.Name)),
        ["PoolName"] = BusValue.String(pool.Name),
        ["Format"] = BusValue.String(volume.Format.ToName()),
        ["Capacity"] = BusValue.UInt64((ulong)Math.Max(0, volume.Capacity)),
        ["Allocation"] = BusValue.UInt64((ulong)Math.Max(0, volume.Allocation)),
        ["ReadOnly"] = BusValue.Bool(volume.ReadOnly),
        ["Path"] = BusValue.String(volume.SocketPath),
        ["File"] = BusValue.String(volume.File),
        ["BackingChain"] = BusValue.Structs("ssss", volume.Chain.Select(l => new object[] { l.Volume, l.Snapshot ?? "", l.Format.ToName(), l.File })),
        ["Snapshots"] = BusValue.Structs("sxss", volume.Snapshots.Select(s => new object[] { s.Name, UnixMicroseconds(s.Created), s.Format.ToName(), s.File })),
        ["Users"] = BusValue.Structs("ss", UsersOf(service, volume, poolVolumes, jobs).Select(u => new object[] { u.Kind, u.Who })),
        ["ExportState"] = BusValue.String(pool.Active ? service.Exports.GetState(volume.Key).ToString().ToLowerInvariant() : "stopped"),
        ["Problem"] = BusValue.String(volume.Problem ?? ""),
    };

    private static Dictionary<string, BusValue> JobProperties(StorageJob job)
    {
        StorageJobState state = job.State;
        StorageServiceException? error = state == StorageJobState.Running ? null : job.Error;
        VolumeInfo? result = state == StorageJobState.Completed ? job.Result : null;
        return new()
        {
            ["Type"] = BusValue.String(job.Type.ToString().ToLowerInvariant()),
            ["Pool"] = BusValue.String(job.Pool),
            ["Volume"] = BusValue.String(job.Volume),
            ["Target"] = BusValue.String(job.Target),
            ["BytesDone"] = BusValue.UInt64((ulong)job.BytesDone),
            ["BytesTotal"] = BusValue.UInt64((ulong)job.BytesTotal),
            ["State"] = BusValue.String(state.ToString().ToLowerInvariant()),
            ["ErrorName"] = BusValue.String(error?.DBusErrorName ?? ""),
            ["ErrorMessage"] = BusValue.String(error?.Message ?? ""),
            ["Result"] = BusValue.ObjectPath(result is null ? "/" : ObjectPaths.Volume(result.Pool, result.Name)),
            ["StartedAt"] = BusValue.Int64(UnixMicroseconds(job.StartedAt)),
            ["Speed"] = BusValue.UInt64((ulong)job.SpeedLimit),
            ["Paused"] = BusValue.Bool(job.IsPaused),
            ["Priority"] = BusValue.String(job.Control?.IdlePriority == true ? "idle" : "normal"),
        };
    }

    internal static long UnixMicroseconds(DateTimeOffset time) => (time - DateTimeOffset.UnixEpoch).Ticks / 10;
}
