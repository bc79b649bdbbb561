namespace LibvirtStorage.Service;

/// <summary>A pool as callers see it (libvirt's virStoragePoolInfo plus its definition).</summary>
/// <param name="Name">Unique pool name.</param>
/// <param name="Uuid">Stable identity, kept across restarts.</param>
/// <param name="Path">The directory the pool owns.</param>
/// <param name="Active">Whether the pool is started.</param>
/// <param name="Autostart">Whether the pool starts with the service.</param>
/// <param name="Capacity">Size of the file system holding the directory (0 while stopped).</param>
/// <param name="Allocation">Bytes used on that file system (0 while stopped).</param>
/// <param name="Available">Bytes an unprivileged writer may still use there (0 while stopped).</param>
/// <param name="VolumeCount">Number of volumes in the inventory.</param>
public sealed record PoolInfo(string Name, Guid Uuid, string Path, bool Active, bool Autostart,
    long Capacity, long Allocation, long Available, int VolumeCount);
