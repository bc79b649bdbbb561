using LibvirtStorage.Service;

namespace LibvirtStorage.Bench.Jobs;

/// <summary>
/// Our side of the job rows: the live service path (issue 6 contract), behind a seam so the bench builds before
/// <c>StorageService.StreamAsync</c>/<c>CommitAsync</c> reach main. An implementation that cannot run says why
/// through <see cref="Unavailable"/>, and its rows then show n/a, never a number.
/// </summary>
internal interface IServiceChainJobs
{
    /// <summary>Why the jobs cannot run, or null when they can.</summary>
    string? Unavailable { get; }

    /// <summary>Streams every layer below the top (the snapshot layers) into the top; their snapshots are deleted.</summary>
    Task StreamAsync(StorageService service, string pool, string volume);

    /// <summary>Commits the top into the newest snapshot layer, which becomes the volume's top (pivot); the snapshot is deleted.</summary>
    Task CommitAsync(StorageService service, string pool, string volume);
}

/// <summary>Stand-in until the live-job calls exist in LibvirtStorage.Service.</summary>
internal sealed class PendingServiceChainJobs : IServiceChainJobs
{
    public string? Unavailable =>
        "not measured: StorageService.StreamAsync/CommitAsync (issue 6) are not on main yet";

    public Task StreamAsync(StorageService service, string pool, string volume) => throw new NotSupportedException(Unavailable);

    public Task CommitAsync(StorageService service, string pool, string volume) => throw new NotSupportedException(Unavailable);
}
