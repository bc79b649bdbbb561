using LibvirtStorage.Client.Bus;

namespace LibvirtStorage.Client;

/// <summary>org.lvstor.Storage1.Pool.</summary>
public sealed partial class StorageClient
{
    /// <summary>A pool's properties.</summary>
    /// <param name="poolPath">The pool's object path.</param>
    /// <returns>The pool.</returns>
    public Task<PoolInfo> GetPoolInfoAsync(string poolPath) => Call(async () =>
    {
        PoolProperties p = await Pool(poolPath).GetAllAsync().ConfigureAwait(false);
        return new PoolInfo(poolPath, p.Name, p.Uuid, p.Path, p.Active, p.Autostart, p.Capacity, p.Allocation, p.Available, p.VolumeCount);
    });

    /// <summary>Starts a pool: adopts new files and opens every volume's socket. [admin]</summary>
    /// <param name="poolPath">The pool's object path.</param>
    /// <returns>A task.</returns>
    public Task StartPoolAsync(string poolPath) => Call(() => Pool(poolPath).StartAsync());

    /// <summary>Stops a pool (refused while a guest is connected). [admin]</summary>
    /// <param name="poolPath">The pool's object path.</param>
    /// <returns>A task.</returns>
    public Task StopPoolAsync(string poolPath) => Call(() => Pool(poolPath).StopAsync());

    /// <summary>Forgets a stopped pool; its files stay on disk. [admin]</summary>
    /// <param name="poolPath">The pool's object path.</param>
    /// <returns>A task.</returns>
    public Task UndefinePoolAsync(string poolPath) => Call(() => Pool(poolPath).UndefineAsync());

    /// <summary>Sets whether lvstord starts the pool when it starts. [admin]</summary>
    /// <param name="poolPath">The pool's object path.</param>
    /// <param name="autostart">The new value.</param>
    /// <returns>A task.</returns>
    public Task SetPoolAutostartAsync(string poolPath, bool autostart) => Call(() => Pool(poolPath).SetAutostartAsync(autostart));

    /// <summary>Adopts new image files in the pool's directory. [admin]</summary>
    /// <param name="poolPath">The pool's object path.</param>
    /// <returns>What was adopted and what was left alone.</returns>
    public Task<PoolRefreshResult> RefreshPoolAsync(string poolPath) => Call(async () =>
    {
        var (adopted, problems) = await Pool(poolPath).RefreshAsync().ConfigureAwait(false);
        return new PoolRefreshResult(adopted, problems.Select(p => new PoolProblem(p.file, p.message)).ToList());
    });

    /// <summary>Object paths of the pool's volumes, sorted by name.</summary>
    /// <param name="poolPath">The pool's object path.</param>
    /// <returns>The paths.</returns>
    public Task<IReadOnlyList<string>> ListVolumePathsAsync(string poolPath) =>
        Call(async () => Paths(await Pool(poolPath).ListVolumesAsync().ConfigureAwait(false)));

    /// <summary>The pool's volumes with their properties, sorted by name.</summary>
    /// <param name="poolPath">The pool's object path.</param>
    /// <returns>The volumes.</returns>
    public async Task<IReadOnlyList<VolumeInfo>> ListVolumesAsync(string poolPath)
    {
        var volumes = new List<VolumeInfo>();
        foreach (string path in await ListVolumePathsAsync(poolPath).ConfigureAwait(false))
        {
            volumes.Add(await GetVolumeInfoAsync(path).ConfigureAwait(false));
        }

        return volumes;
    }

    /// <summary>A volume's object path by pool and name.</summary>
    /// <param name="poolPath">The pool's object path.</param>
    /// <param name="name">The volume's name.</param>
    /// <returns>The object path.</returns>
    public Task<string> GetVolumePathAsync(string poolPath, string name) =>
        Call(async () => (await Pool(poolPath).GetVolumeAsync(name).ConfigureAwait(false)).ToString());

    /// <summary>Creates a volume. [admin]</summary>
    /// <param name="poolPath">The pool's object path.</param>
    /// <param name="name">The new volume's name.</param>
    /// <param name="format"><c>raw</c> or <c>qcow2</c>.</param>
    /// <param name="capacity">Virtual size in bytes; 0 takes the backing volume's size.</param>
    /// <param name="backingVolume">A volume of the same pool to back onto (qcow2 only), or empty.</param>
    /// <returns>The new volume's object path.</returns>
    public Task<string> CreateVolumeAsync(string poolPath, string name, string format, ulong capacity, string backingVolume = "") =>
        Call(async () => (await Pool(poolPath).CreateVolumeAsync(name, format, capacity, backingVolume, new Dictionary<string, object>()).ConfigureAwait(false)).ToString());
}
