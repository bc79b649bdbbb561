using LibvirtStorage.Service;
using Tmds.DBus.Protocol;

namespace LibvirtStorage.DBus;

/// <summary>org.lvstor.Storage1.Manager on the root object.</summary>
internal static class ManagerMethods
{
    private const string I = Interfaces.Manager;

    public static readonly BusMethod[] All =
    [
        new(I, "DefinePool", "ss", Admin: true, DefinePool),
        new(I, "ListPools", "", Admin: false, ListPools),
        new(I, "GetPool", "s", Admin: false, GetPool),
        new(I, "GetVolumeByKey", "s", Admin: false, GetVolumeByKey),
        new(I, "GetVolumeByPath", "s", Admin: false, GetVolumeByPath),
        new(I, "ListJobs", "", Admin: false, ListJobs),
        new(I, "GetStatus", "", Admin: false, GetStatus),
        new(I, "ListUsers", "", Admin: false, ListUsers),
    ];

    private static Task DefinePool(BusCall call)
    {
        Reader reader = call.Request.GetBodyReader();
        string name = reader.ReadString();
        string path = reader.ReadString();
        PoolInfo pool = call.Server.Service.DefinePool(name, path);
        call.Server.Resync();
        call.ReplyObjectPath(ObjectPaths.Pool(pool.Name));
        return Task.CompletedTask;
    }

    private static Task ListPools(BusCall call)
    {
        call.ReplyObjectPaths(call.Server.Service.ListPools().Select(p => p.Name).Order(StringComparer.Ordinal).Select(ObjectPaths.Pool));
        return Task.CompletedTask;
    }

    private static Task GetPool(BusCall call)
    {
        string name = call.Request.GetBodyReader().ReadString();
        call.ReplyObjectPath(ObjectPaths.Pool(call.Server.Service.GetPool(name).Name));
        return Task.CompletedTask;
    }

    private static Task GetVolumeByKey(BusCall call)
    {
        string key = call.Request.GetBodyReader().ReadString();
        if (!Guid.TryParse(key, out Guid guid))
        {
            throw BusError.Invalid($"'{key}' is not a volume key (a UUID such as 0b6f8c1e-...); read a volume's Key property");
        }

        VolumeInfo volume = call.Server.Service.GetVolumeByKey(guid);
        call.ReplyObjectPath(ObjectPaths.Volume(volume.Pool, volume.Name));
        return Task.CompletedTask;
    }

    private static Task GetVolumeByPath(BusCall call)
    {
        string path = call.Request.GetBodyReader().ReadString();
        BusValue wanted = BusValue.String(path);
        BusObject? volume = call.Server.FreshTree().Objects.FirstOrDefault(o => o.Kind == BusObjectKind.Volume && o.Properties["Path"].Equals(wanted));
        if (volume is null)
        {
            throw BusError.NotFound($"no volume has the path '{path}' (a volume's path is its export socket, the Path property)");
        }

        call.ReplyObjectPath(volume.Path);
        return Task.CompletedTask;
    }

    private static Task ListJobs(BusCall call)
    {
        call.ReplyObjectPaths(call.Server.Jobs.List().Select(j => ObjectPaths.Job(j.Id)));
        return Task.CompletedTask;
    }

    private static Task GetStatus(BusCall call)
    {
        StorageService service = call.Server.Service;
        IReadOnlyList<PoolInfo> pools = service.ListPools();
        uint volumes = 0, exports = 0, connected = 0;
        foreach (PoolInfo pool in pools)
        {
            foreach (VolumeInfo volume in SafeList(service, pool.Name))
            {
                volumes++;
                ExportState state = pool.Active ? service.Exports.GetState(volume.Key) : ExportState.Stopped;
                exports += state == ExportState.Stopped ? 0u : 1u;
                connected += state == ExportState.Connected ? 1u : 0u;
            }
        }

        var status = new Dictionary<string, BusValue>
        {
            ["Pools"] = BusValue.UInt32((uint)pools.Count),
            ["ActivePools"] = BusValue.UInt32((uint)pools.Count(p => p.Active)),
            ["Volumes"] = BusValue.UInt32(volumes),
            ["Exports"] = BusValue.UInt32(exports),
            ["ConnectedGuests"] = BusValue.UInt32(connected),
            ["Jobs"] = BusValue.UInt32((uint)call.Server.Jobs.List().Count(j => j.State == StorageJobState.Running)),
            ["StartedAt"] = BusValue.Int64(ObjectTree.UnixMicroseconds(call.Server.StartedAt)),
        };
        call.Reply("a{sv}", (ref MessageWriter w) => StorageBusServer.WriteProperties(ref w, status));
        return Task.CompletedTask;
    }

    private static Task ListUsers(BusCall call)
    {
        StorageService service = call.Server.Service;
        IReadOnlyList<StorageJob> jobs = call.Server.Jobs.List();
        var rows = new List<object[]>();
        foreach (PoolInfo pool in service.ListPools().OrderBy(p => p.Name, StringComparer.Ordinal))
        {
            IReadOnlyList<VolumeInfo> volumes = SafeList(service, pool.Name);
            foreach (VolumeInfo volume in volumes.OrderBy(v => v.Name, StringComparer.Ordinal))
            {
                rows.AddRange(ObjectTree.UsersOf(service, volume, volumes, jobs).Select(u => new object[] { pool.Name, volume.Name, u.Kind, u.Who }));
            }
        }

        BusValue users = BusValue.Structs("ssss", rows);
        call.Reply("a(ssss)", (ref MessageWriter w) => users.Write(ref w));
        return Task.CompletedTask;
    }

    private static IReadOnlyList<VolumeInfo> SafeList(StorageService service, string pool)
    {
        try
        {
            return service.ListVolumes(pool);
        }
        catch (StorageServiceException)
        {
            return [];
        }
    }
}
