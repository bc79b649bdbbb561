using System.Runtime.CompilerServices;
using Microsoft.Win32.SafeHandles;
using Tmds.DBus;

// Tmds.DBus emits the proxy classes into a dynamic assembly; it must see these internal interfaces.
[assembly: InternalsVisibleTo(Connection.DynamicAssemblyName)]

namespace LibvirtStorage.Client.Bus;

/// <summary>org.lvstor.Storage1.Manager on /org/lvstor/Storage1 (docs/dbus-api.md).</summary>
[DBusInterface("org.lvstor.Storage1.Manager")]
internal interface IManager : IDBusObject
{
    Task<ObjectPath> DefinePoolAsync(string name, string path);

    Task<ObjectPath[]> ListPoolsAsync();

    Task<ObjectPath> GetPoolAsync(string name);

    Task<ObjectPath> GetVolumeByKeyAsync(string key);

    Task<ObjectPath> GetVolumeByPathAsync(string path);

    Task<ObjectPath[]> ListJobsAsync();

    Task<IDictionary<string, object>> GetStatusAsync();

    Task<(string pool, string volume, string kind, string who)[]> ListUsersAsync();

    Task<ManagerProperties> GetAllAsync();
}

/// <summary>org.lvstor.Storage1.Pool.</summary>
[DBusInterface("org.lvstor.Storage1.Pool")]
internal interface IPool : IDBusObject
{
    Task StartAsync();

    Task StopAsync();

    Task UndefineAsync();

    Task SetAutostartAsync(bool autostart);

    Task<(string[] adopted, (string file, string message)[] problems)> RefreshAsync();

    Task<ObjectPath[]> ListVolumesAsync();

    Task<ObjectPath> GetVolumeAsync(string name);

    Task<ObjectPath> CreateVolumeAsync(string name, string format, ulong capacity, string backingVolume, IDictionary<string, object> options);

    Task<PoolProperties> GetAllAsync();
}

/// <summary>org.lvstor.Storage1.Volume.</summary>
[DBusInterface("org.lvstor.Storage1.Volume")]
internal interface IVolume : IDBusObject
{
    Task DeleteAsync();

    Task ResizeAsync(ulong capacity, bool allowShrink);

    Task CreateSnapshotAsync(string name);

    Task RevertToSnapshotAsync(string name, bool discardNewer);

    Task<ObjectPath> CloneAsync(string target, string mode, string format);

    Task<ObjectPath> CloneFromAsync(string target, string mode, string format, IDictionary<string, object> options);

    Task<ObjectPath> UploadAsync(SafeFileHandle fd, ulong offset, ulong length);

    Task<ObjectPath> DownloadAsync(SafeFileHandle fd, ulong offset, ulong length);

    Task<ObjectPath> WipeAsync();

    Task<ObjectPath> StreamAsync(IDictionary<string, object> options);

    Task<ObjectPath> CommitAsync(IDictionary<string, object> options);

    Task<ObjectPath> MoveBaseAsync(string targetPool, IDictionary<string, object> options);

    Task<VolumeProperties> GetAllAsync();
}

/// <summary>org.lvstor.Storage1.Job.</summary>
[DBusInterface("org.lvstor.Storage1.Job")]
internal interface IJob : IDBusObject
{
    Task CancelAsync();

    Task SetSpeedAsync(ulong bytesPerSecond);

    Task PauseAsync();

    Task ResumeAsync();

    Task<IDisposable> WatchCompletedAsync(Action<(string state, string errorName, string errorMessage)> handler, Action<Exception>? onError = null);

    Task<IDisposable> WatchPropertiesAsync(Action<PropertyChanges> handler);

    Task<JobProperties> GetAllAsync();
}

/// <summary>The bus daemon itself, to tell "lvstord is not running" from other failures.</summary>
[DBusInterface("org.freedesktop.DBus")]
internal interface IBusDaemon : IDBusObject
{
    Task<bool> NameHasOwnerAsync(string name);
}
