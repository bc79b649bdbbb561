using LibvirtStorage.Service;

namespace LibvirtStorage.Bench.Jobs;

/// <summary>
/// Our side of the job rows: the live service path (issue 6), behind a seam (written before
/// <c>StorageService.StreamAsync</c>/<c>CommitAsync</c> reached main). An implementation that cannot run says why
/// through <see cref="Unavailable"/>, and its rows then show n/a, never a number.
/// </summary>
internal interface IServiceChainJobs
{
    /// <summary>Why the jobs cannot run, or null when they can.</summary>
    string? Unavailable { get; }

    /// <summary>Streams every layer below the top (the snapshot layers) into the top; their snapshots go.</summary>
    Task StreamAsync(StorageService service, string pool, string volume);

    /// <summary>Commits the top into the newest snapshot layer, which becomes the volume's top (pivot); the snapshot goes.</summary>
    Task CommitAsync(StorageService service, string pool, string volume);
}
