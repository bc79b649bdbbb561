namespace LibvirtStorage.DBus;

/// <summary>What kind of object a path names.</summary>
internal enum BusObjectKind
{
    Manager,
    Pool,
    Volume,
    Job,
}

/// <summary>
/// One exported object as of one resync: its path, its lvstor interface and property values, and what it
/// stands for in the service (pool and volume names, job id).
/// </summary>
internal sealed record BusObject(string Path, BusObjectKind Kind, string Interface, IReadOnlyDictionary<string, BusValue> Properties,
    string Pool = "", string Volume = "", long JobId = 0);
