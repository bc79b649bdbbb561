using LibvirtStorage.Service;

namespace LibvirtStorage.Bench.Jobs;

/// <summary>Our side of the job rows: <see cref="StorageService.StreamAsync"/> and <see cref="StorageService.CommitAsync"/> (issue 6).</summary>
internal sealed class ServiceChainJobs : IServiceChainJobs
{
    public string? Unavailable => null;

    public Task StreamAsync(StorageService service, string pool, string volume) =>
        service.StreamAsync(pool, volume, new StreamOptions());

    public Task CommitAsync(StorageService service, string pool, string volume) =>
        service.CommitAsync(pool, volume, new CommitOptions());
}
