using Tmds.DBus;

#pragma warning disable CA1051 // Tmds.DBus fills [Dictionary] classes through their public fields.

namespace LibvirtStorage.Client.Bus;

[Dictionary]
internal sealed class ManagerProperties
{
    public string Version = string.Empty;
    public string StateDirectory = string.Empty;
    public string RuntimeDirectory = string.Empty;
}

[Dictionary]
internal sealed class PoolProperties
{
    public string Name = string.Empty;
    public string Uuid = string.Empty;
    public string Path = string.Empty;
    public bool Active;
    public bool Autostart;
    public ulong Capacity;
    public ulong Allocation;
    public ulong Available;
    public uint VolumeCount;
}

[Dictionary]
internal sealed class VolumeProperties
{
    public string Name = string.Empty;
    public string Key = string.Empty;
    public ObjectPath Pool;
    public string PoolName = string.Empty;
    public string Format = string.Empty;
    public ulong Capacity;
    public ulong Allocation;
    public bool ReadOnly;
    public string Path = string.Empty;
    public string File = string.Empty;
    public (string volume, string snapshot, string format, string file)[] BackingChain = [];
    public (string name, long created, string format, string file)[] Snapshots = [];
    public (string kind, string who)[] Users = [];
    public string ExportState = string.Empty;
    public string Problem = string.Empty;
}

[Dictionary]
internal sealed class JobProperties
{
    public string Type = string.Empty;
    public string Pool = string.Empty;
    public string Volume = string.Empty;
    public string Target = string.Empty;
    public ulong BytesDone;
    public ulong BytesTotal;
    public string State = string.Empty;
    public string ErrorName = string.Empty;
    public string ErrorMessage = string.Empty;
    public ObjectPath Result;
    public long StartedAt;
    public ulong Speed;
    public bool Paused;
    public string Priority = string.Empty;
}
