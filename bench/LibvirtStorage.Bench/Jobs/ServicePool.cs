using LibvirtStorage.Images;
using LibvirtStorage.Service;
using Microsoft.Win32.SafeHandles;

namespace LibvirtStorage.Bench.Jobs;

/// <summary>
/// Our side's setting: an in-process <see cref="StorageService"/> with <see cref="VolumeExports"/> (as lvstord runs
/// it, with <c>io.direct</c> on: O_DIRECT like QSD's cache.direct=on), a state directory, a runtime directory and
/// one active pool, all under the bench's scratch folder. Every volume is exported (its socket listens), no guest
/// connects.
/// </summary>
internal sealed class ServicePool : IAsyncDisposable
{
    public const string PoolName = "bench";
    public const string SnapshotName = "base";
    private readonly VolumeExports _exports;

    private ServicePool(StorageService service, VolumeExports exports, string poolDirectory)
    {
        Service = service;
        _exports = exports;
        PoolDirectory = poolDirectory;
    }

    public StorageService Service { get; }

    public string PoolDirectory { get; }

    public static ServicePool Open(string directory)
    {
        string poolDirectory = Path.Combine(directory, "pool");
        var exports = new VolumeExports(new VolumeExportOptions { ImageOptions = new ImageOpenOptions { Direct = true } });
        StorageService service = StorageService.Open(new StorageServiceOptions
        {
            StateDirectory = Path.Combine(directory, "state"),
            RuntimeDirectory = Path.Combine(directory, "run"),
            Exports = exports,
        });
        service.DefinePool(PoolName, poolDirectory);
        service.StartPool(PoolName);
        return new ServicePool(service, exports, poolDirectory);
    }

    /// <summary>Where a file the pool should adopt goes (a visible name in the pool directory).</summary>
    public string PathOf(string volume) => Path.Combine(PoolDirectory, volume);

    /// <summary>
    /// Adopts <paramref name="volume"/> (a qemu-img made file already in the pool directory) with a pool refresh, then
    /// snapshots it: the file becomes the snapshot's read-only layer and the service makes an empty qcow2 top over it.
    /// </summary>
    public VolumeInfo AdoptAndSnapshot(string volume)
    {
        RefreshReport report = Service.RefreshPool(PoolName);
        if (!report.Adopted.Contains(volume))
        {
            throw new InvalidOperationException($"pool refresh did not adopt {volume}: {string.Join("; ", report.Problems.Select(p => p.Message))}");
        }

        Service.CreateSnapshot(PoolName, volume, SnapshotName);
        return Service.GetVolume(PoolName, volume);
    }

    /// <summary>Writes a whole raw file into the volume's top through the service (UploadAsync).</summary>
    public async Task UploadAsync(string volume, string rawSource)
    {
        using SafeFileHandle source = File.OpenHandle(rawSource);
        await Service.UploadAsync(PoolName, volume, source).ConfigureAwait(false);
    }

    /// <summary>The volume's files, top first.</summary>
    public IReadOnlyList<string> Files(string volume)
    {
        VolumeInfo info = Service.GetVolume(PoolName, volume);
        return [info.File, .. info.Chain.Select(l => l.File)];
    }

    public ValueTask DisposeAsync() => _exports.DisposeAsync();
}
