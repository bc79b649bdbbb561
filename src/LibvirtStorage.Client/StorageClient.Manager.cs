using LibvirtStorage.Client.Bus;
using Tmds.DBus;

namespace LibvirtStorage.Client;

/// <summary>org.lvstor.Storage1.Manager.</summary>
public sealed partial class StorageClient
{
    /// <summary>The Manager's properties (version, directories).</summary>
    /// <returns>The facts.</returns>
    public Task<ManagerInfo> GetManagerInfoAsync() => Call(async () =>
    {
        ManagerProperties p = await _manager.GetAllAsync().ConfigureAwait(false);
        return new ManagerInfo(p.Version, p.StateDirectory, p.RuntimeDirectory);
    });

    /// <summary>Defines a pool (not started). [admin]</summary>
    /// <param name="name">The pool's name.</param>
    /// <param name="path">Its directory (created if missing).</param>
    /// <returns>The pool's object path.</returns>
    public Task<string> DefinePoolAsync(string name, string path) =>
        Call(async () => (await _manager.DefinePoolAsync(name, path).ConfigureAwait(false)).ToString());

    /// <summary>Object paths of every pool, sorted by name.</summary>
    /// <returns>The paths.</returns>
    public Task<IReadOnlyList<string>> ListPoolPathsAsync() => Call(async () => Paths(await _manager.ListPoolsAsync().ConfigureAwait(false)));

    /// <summary>Every pool with its properties, sorted by name.</summary>
    /// <returns>The pools.</returns>
    public async Task<IReadOnlyList<PoolInfo>> ListPoolsAsync()
    {
        var pools = new List<PoolInfo>();
        foreach (string path in await ListPoolPathsAsync().ConfigureAwait(false))
        {
            pools.Add(await GetPoolInfoAsync(path).ConfigureAwait(false));
        }

        return pools;
    }

    /// <summary>A pool's object path by name (<c>NotFound</c> when there is none).</summary>
    /// <param name="name">The pool's name.</param>
    /// <returns>The object path.</returns>
    public Task<string> GetPoolPathAsync(string name) =>
        Call(async () => (await _manager.GetPoolAsync(name).ConfigureAwait(false)).ToString());

    /// <summary>A volume's object path by key (its UUID).</summary>
    /// <param name="key">The key.</param>
    /// <returns>The object path.</returns>
    public Task<string> GetVolumeByKeyAsync(string key) =>
        Call(async () => (await _manager.GetVolumeByKeyAsync(key).ConfigureAwait(false)).ToString());

    /// <summary>A volume's object path by its socket path (the volume's path for clients).</summary>
    /// <param name="path">The socket path.</param>
    /// <returns>The object path.</returns>
    public Task<string> GetVolumeByPathAsync(string path) =>
        Call(async () => (await _manager.GetVolumeByPathAsync(path).ConfigureAwait(false)).ToString());

    /// <summary>Object paths of running jobs and jobs finished in the last 60 s.</summary>
    /// <returns>The paths.</returns>
    public Task<IReadOnlyList<string>> ListJobPathsAsync() => Call(async () => Paths(await _manager.ListJobsAsync().ConfigureAwait(false)));

    /// <summary>Running and recently finished jobs with their properties (jobs that vanish meanwhile are left out).</summary>
    /// <returns>The jobs.</returns>
    public async Task<IReadOnlyList<JobInfo>> ListJobsAsync()
    {
        var jobs = new List<JobInfo>();
        foreach (string path in await ListJobPathsAsync().ConfigureAwait(false))
        {
            try
            {
                jobs.Add(await GetJobInfoAsync(path).ConfigureAwait(false));
            }
            catch (StorageClientException e) when (e.Kind is StorageErrorKind.NotFound or StorageErrorKind.Other)
            {
                // Removed between the list and the read (60 s after it ended).
            }
        }

        return jobs;
    }

    /// <summary>lvstord's counters.</summary>
    /// <returns>The status.</returns>
    public Task<ServiceStatus> GetStatusAsync() => Call(async () =>
    {
        IDictionary<string, object> s = await _manager.GetStatusAsync().ConfigureAwait(false);
        return new ServiceStatus(
            Count(s, "Pools"),
            Count(s, "ActivePools"),
            Count(s, "Volumes"),
            Count(s, "Exports"),
            Count(s, "ConnectedGuests"),
            Count(s, "Jobs"),
            s.TryGetValue("StartedAt", out object? started) ? FromUnixMicroseconds(Convert.ToInt64(started, System.Globalization.CultureInfo.InvariantCulture)) : default);
    });

    /// <summary>Every current user of every volume.</summary>
    /// <returns>The users.</returns>
    public Task<IReadOnlyList<VolumeUser>> ListUsersAsync() => Call(async () =>
    {
        var users = await _manager.ListUsersAsync().ConfigureAwait(false);
        return (IReadOnlyList<VolumeUser>)users.Select(u => new VolumeUser(u.pool, u.volume, u.kind, u.who)).ToList();
    });

    private static uint Count(IDictionary<string, object> status, string key) =>
        status.TryGetValue(key, out object? value) ? Convert.ToUInt32(value, System.Globalization.CultureInfo.InvariantCulture) : 0;

    private static IReadOnlyList<string> Paths(ObjectPath[] paths) => paths.Select(p => p.ToString()).ToList();
}
