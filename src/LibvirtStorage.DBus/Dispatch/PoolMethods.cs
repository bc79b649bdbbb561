using LibvirtStorage.Service;
using Tmds.DBus.Protocol;

namespace LibvirtStorage.DBus;

/// <summary>org.lvstor.Storage1.Pool on /org/lvstor/Storage1/pool/&lt;label&gt;.</summary>
internal static class PoolMethods
{
    private const string I = Interfaces.Pool;

    public static readonly BusMethod[] All =
    [
        new(I, "Start", "", Admin: true, call => Change(call, (s, pool) => s.StartPool(pool))),
        new(I, "Stop", "", Admin: true, call => Change(call, (s, pool) => s.StopPool(pool))),
        new(I, "Undefine", "", Admin: true, call => Change(call, (s, pool) => s.UndefinePool(pool))),
        new(I, "SetAutostart", "b", Admin: true, SetAutostart),
        new(I, "Refresh", "", Admin: true, Refresh),
        new(I, "ListVolumes", "", Admin: false, ListVolumes),
        new(I, "GetVolume", "s", Admin: false, GetVolume),
        new(I, "CreateVolume", "sstsa{sv}", Admin: true, CreateVolume),
    ];

    private static Task Change(BusCall call, Action<StorageService, string> change)
    {
        change(call.Server.Service, call.Target.Pool);
        call.Server.Resync();
        call.ReplyEmpty();
        return Task.CompletedTask;
    }

    private static Task SetAutostart(BusCall call)
    {
        bool autostart = call.Request.GetBodyReader().ReadBool();
        return Change(call, (s, pool) => s.SetPoolAutostart(pool, autostart));
    }

    private static Task Refresh(BusCall call)
    {
        RefreshReport report = call.Server.Service.RefreshPool(call.Target.Pool);
        call.Server.Resync();
        BusValue problems = BusValue.Structs("ss", report.Problems.Select(p => new object[] { p.File ?? "", p.Message }));
        call.Reply("asa(ss)", (ref MessageWriter w) =>
        {
            w.WriteArray(report.Adopted.ToArray());
            problems.Write(ref w);
        });
        return Task.CompletedTask;
    }

    private static Task ListVolumes(BusCall call)
    {
        string pool = call.Target.Pool;
        call.ReplyObjectPaths(call.Server.Service.ListVolumes(pool).Select(v => v.Name).Order(StringComparer.Ordinal).Select(v => ObjectPaths.Volume(pool, v)));
        return Task.CompletedTask;
    }

    private static Task GetVolume(BusCall call)
    {
        string name = call.Request.GetBodyReader().ReadString();
        string pool = call.Target.Pool;

        // Listed (not GetVolume) so that a volume whose image cannot be read is still found; its Problem says why.
        if (!call.Server.Service.ListVolumes(pool).Any(v => v.Name == name))
        {
            throw new StorageServiceException(StorageErrorKind.NotFound, $"no volume named '{name}' in pool '{pool}'; refresh the pool if the file was added by hand");
        }

        call.ReplyObjectPath(ObjectPaths.Volume(pool, name));
        return Task.CompletedTask;
    }

    private static Task CreateVolume(BusCall call)
    {
        Reader reader = call.Request.GetBodyReader();
        string name = reader.ReadString();
        string format = reader.ReadString();
        ulong capacity = reader.ReadUInt64();
        string backing = reader.ReadString();
        Dictionary<string, VariantValue> options = reader.ReadDictionaryOfStringToVariantValue();
        if (options.Count > 0)
        {
            throw BusError.Invalid($"unknown CreateVolume option(s) {string.Join(", ", options.Keys.Order(StringComparer.Ordinal).Select(k => $"'{k}'"))}; no options are defined yet, pass an empty a{{sv}}");
        }

        long? size = capacity == 0 ? null : BusCall.ToSize(capacity, "capacity");
        string pool = call.Target.Pool;
        VolumeInfo volume = call.Server.Service.CreateVolume(pool, new VolumeSpec(name, format, size, backing.Length == 0 ? null : backing));
        call.Server.Resync();
        call.ReplyObjectPath(ObjectPaths.Volume(volume.Pool, volume.Name));
        return Task.CompletedTask;
    }
}
