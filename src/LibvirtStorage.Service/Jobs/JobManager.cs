using Microsoft.Win32.SafeHandles;

namespace LibvirtStorage.Service;

/// <summary>
/// Runs the service's long operations (clone, upload, download, wipe) as jobs: each gets an id, progress in
/// bytes, a cancellation handle and a final state, and stays listed for <see cref="Retention"/> after it ends.
/// </summary>
/// <remarks>
/// Arguments are checked when the job is started: a bad call throws <see cref="StorageServiceException"/>
/// from the Start method and creates no job. Failures after that end the job in <see cref="StorageJobState.Failed"/>
/// (or <see cref="StorageJobState.Cancelled"/>) with the error recorded. A running job is registered as a
/// user of its volume when the service's <see cref="StorageService.Users"/> is a <see cref="VolumeUserRegistry"/>,
/// so delete and stop name it.
/// </remarks>
public sealed class JobManager : IDisposable
{
    private readonly StorageService _service;
    private readonly TimeProvider _time;
    private readonly Lock _lock = new();
    private readonly Dictionary<long, StorageJob> _jobs = [];
    private readonly CancellationTokenSource _disposed = new();
    private long _nextId;

    /// <summary>Creates a manager over <paramref name="service"/>.</summary>
    /// <param name="service">The service whose operations the jobs run.</param>
    /// <param name="retention">How long a finished job stays listed.</param>
    /// <param name="time">The clock (tests); null for the system clock.</param>
    public JobManager(StorageService service, TimeSpan retention, TimeProvider? time = null)
    {
        ArgumentNullException.ThrowIfNull(service);
        ArgumentOutOfRangeException.ThrowIfLessThan(retention, TimeSpan.Zero);
        _service = service;
        Retention = retention;
        _time = time ?? TimeProvider.System;
    }

    /// <summary>How long a finished job stays listed.</summary>
    public TimeSpan Retention { get; }

    /// <summary>
    /// Raised (on any thread, possibly often) when a job is added, makes progress, ends, or is removed after
    /// its retention (then it is no longer in <see cref="List"/>).
    /// </summary>
    public event Action<StorageJob>? Changed;

    /// <summary>Running jobs and jobs that ended within the retention, by id.</summary>
    public IReadOnlyList<StorageJob> List()
    {
        lock (_lock)
        {
            return _jobs.Values.OrderBy(j => j.Id).ToList();
        }
    }

    /// <summary>The job with <paramref name="id"/>, or null when there is none (any more).</summary>
    public StorageJob? Find(long id)
    {
        lock (_lock)
        {
            return _jobs.GetValueOrDefault(id);
        }
    }

    /// <summary>Starts a clone of <paramref name="source"/> to <paramref name="target"/> in one pool.</summary>
    public StorageJob StartClone(string pool, string source, string target, string? format, bool linked)
    {
        VolumeInfo info = _service.GetVolume(pool, source);
        return Start(StorageJobType.Clone, info, target, info.Capacity, job =>
            _service.CloneVolumeAsync(pool, source, target, format, linked, Progress(job), job.CancellationToken));
    }

    /// <summary>
    /// Starts an upload from <paramref name="source"/>, which the job owns and closes when it ends; so it does
    /// <paramref name="ready"/>, the optional signal of a staged source (see <see cref="StorageService.UploadAsync"/>).
    /// </summary>
    public StorageJob StartUpload(string pool, string volume, SafeFileHandle source, long offset, long? length, SafeFileHandle? ready = null)
    {
        ArgumentNullException.ThrowIfNull(source);
        using var owned = new OwnedHandle(source);
        using OwnedHandle? ownedReady = ready is null ? null : new OwnedHandle(ready);
        VolumeInfo info = _service.GetVolume(pool, volume);
        CheckRange(info, offset, length);
        StorageJob job = Start(StorageJobType.Upload, info, "", length ?? Math.Max(0, info.Capacity - offset), job =>
            Close(_service.UploadAsync(pool, volume, source, offset, length, Progress(job), job.CancellationToken, ready), source, ready));
        owned.Release();
        ownedReady?.Release();
        return job;
    }

    /// <summary>Starts a download into <paramref name="destination"/>, which the job owns and closes when it ends.</summary>
    public StorageJob StartDownload(string pool, string volume, SafeFileHandle destination, long offset, long? length)
    {
        ArgumentNullException.ThrowIfNull(destination);
        using var owned = new OwnedHandle(destination);
        VolumeInfo info = _service.GetVolume(pool, volume);
        CheckRange(info, offset, length);
        StorageJob job = Start(StorageJobType.Download, info, "", length ?? Math.Max(0, info.Capacity - offset), job =>
            Close(_service.DownloadAsync(pool, volume, destination, offset, length, Progress(job), job.CancellationToken), destination));
        owned.Release();
        return job;
    }

    /// <summary>Starts a wipe of <paramref name="volume"/>.</summary>
    public StorageJob StartWipe(string pool, string volume)
    {
        VolumeInfo info = _service.GetVolume(pool, volume);
        return Start(StorageJobType.Wipe, info, "", info.Capacity, job =>
            _service.WipeAsync(pool, volume, Progress(job), job.CancellationToken).ContinueWith(
                t => { t.GetAwaiter().GetResult(); return (VolumeInfo?)null; }, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default));
    }

    /// <summary>Cancels running jobs and stops removing finished ones.</summary>
    public void Dispose()
    {
        foreach (StorageJob job in List())
        {
            job.Cancel();
        }

        _disposed.Cancel();
        _disposed.Dispose();
    }

    private StorageJob Start<T>(StorageJobType type, VolumeInfo volume, string target, long total, Func<StorageJob, Task<T>> run)
    {
        var job = new StorageJob(Interlocked.Increment(ref _nextId), type, volume.Pool, volume.Name, target, total, _time.GetUtcNow());
        Task<T> work = run(job);

        // The service checks its arguments before it starts working; such errors fail the call, not a job.
        if (work.IsFaulted && work.Exception.InnerException is StorageServiceException early)
        {
            throw early;
        }

        IDisposable? user = null;
        if (_service.Users is VolumeUserRegistry registry)
        {
            user = registry.Attach(volume.Key, new VolumeUser("job", job.ToString()));
        }

        lock (_lock)
        {
            _jobs.Add(job.Id, job);
        }

        Raise(job);
        _ = FinishAsync(job, work, user);
        return job;
    }

    private async Task FinishAsync<T>(StorageJob job, Task<T> work, IDisposable? user)
    {
        StorageJobState state;
        StorageServiceException? error = null;
        VolumeInfo? result = null;
        try
        {
            T value = await work.ConfigureAwait(false);
            result = value as VolumeInfo;
            state = StorageJobState.Completed;
        }
        catch (StorageServiceException ex)
        {
            error = ex;
            state = ex.Kind == StorageErrorKind.Cancelled ? StorageJobState.Cancelled : StorageJobState.Failed;
        }
        catch (OperationCanceledException ex)
        {
            error = new StorageServiceException(StorageErrorKind.Cancelled, $"{job} was cancelled", ex);
            state = StorageJobState.Cancelled;
        }
        catch (Exception ex)
        {
            error = new StorageServiceException(StorageErrorKind.Io, $"{job} failed: {ex.Message}", ex);
            state = StorageJobState.Failed;
        }
        finally
        {
            user?.Dispose();
        }

        if (state == StorageJobState.Cancelled && error is not null && !error.Message.Contains("cancel", StringComparison.OrdinalIgnoreCase))
        {
            error = new StorageServiceException(StorageErrorKind.Cancelled, $"{job} was cancelled", error);
        }

        job.Finish(state, error, result, _time.GetUtcNow());
        Raise(job);
        try
        {
            await Task.Delay(Retention, _time, _disposed.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
        }
        catch (ObjectDisposedException)
        {
        }

        lock (_lock)
        {
            _jobs.Remove(job.Id);
        }

        Raise(job);
    }

    /// <summary>The service checks the range too, but only inside the job; a bad range should fail the call instead.</summary>
    private static void CheckRange(VolumeInfo volume, long offset, long? length)
    {
        if (offset < 0 || offset > volume.Capacity || length < 0 || (length is { } l && l > volume.Capacity - offset))
        {
            throw new StorageServiceException(StorageErrorKind.Invalid,
                $"range at offset {offset} length {length?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "(to the end)"} is outside volume '{volume.Name}' ({volume.Capacity} bytes)");
        }
    }

    private static async Task<VolumeInfo?> Close<T>(Task<T> work, SafeFileHandle handle, SafeFileHandle? also = null)
    {
        try
        {
            await work.ConfigureAwait(false);
            return null;
        }
        finally
        {
            handle.Dispose();
            also?.Dispose();
        }
    }

    private IProgress<OperationProgress> Progress(StorageJob job) => new JobProgress(this, job);

    private void Raise(StorageJob job) => Changed?.Invoke(job);

    /// <summary>Turns fractions into bytes on the job, synchronously (Progress&lt;T&gt; would post and reorder).</summary>
    private sealed class JobProgress(JobManager owner, StorageJob job) : IProgress<OperationProgress>
    {
        public void Report(OperationProgress value)
        {
            if (job.SetBytesDone((long)(value.Fraction * job.BytesTotal)))
            {
                owner.Raise(job);
            }
        }
    }

    /// <summary>Closes a handle passed to a Start method when that method throws before a job owns it.</summary>
    private sealed class OwnedHandle(SafeFileHandle handle) : IDisposable
    {
        private SafeFileHandle? _handle = handle;

        public void Release() => _handle = null;

        public void Dispose() => _handle?.Dispose();
    }
}
