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
    private readonly Dictionary<long, JobRecord> _records = [];
    private readonly CancellationTokenSource _disposed = new();
    private readonly JobStore _store;
    private long _nextId;
    private volatile bool _stopping;

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
        _store = new JobStore(Path.Combine(Path.GetDirectoryName(service.StateFile) ?? ".", "jobs"));
    }

    /// <summary>Where stream and commit jobs are recorded while they run (<c>&lt;state-dir&gt;/jobs</c>).</summary>
    public string JobDirectory => _store.Directory;

    /// <summary>How long <see cref="Dispose"/> waits for running jobs to stop at a chunk boundary.</summary>
    public static TimeSpan StopTimeout { get; } = TimeSpan.FromSeconds(30);

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

    /// <summary>
    /// Starts a clone of <paramref name="source"/> to <paramref name="target"/> in one pool, of the volume as it is now or,
    /// with <paramref name="fromSnapshot"/>, as it was at that snapshot (see <see cref="StorageService.CloneVolumeAsync"/>).
    /// </summary>
    public StorageJob StartClone(string pool, string source, string target, string? format, bool linked, string? fromSnapshot = null)
    {
        VolumeInfo info = _service.GetVolume(pool, source);
        return Start(StorageJobType.Clone, info, target, info.Capacity, job =>
            _service.CloneVolumeAsync(pool, source, target, format, linked, Progress(job), job.CancellationToken, fromSnapshot));
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

    /// <summary>
    /// Starts a stream of <paramref name="volume"/> (<see cref="StorageService.StreamAsync"/>), recorded under
    /// <see cref="JobDirectory"/> until it ends so that a restarted lvstord takes it up again.
    /// </summary>
    public StorageJob StartStream(string pool, string volume, StreamOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        VolumeInfo info = _service.GetVolume(pool, volume);
        var record = new JobRecord(NewId(), StorageJobType.Stream, pool, volume, info.File, options.BaseSnapshot, options.SpeedLimit, _time.GetUtcNow(),
            IdlePriority: options.IdlePriority);
        return StartRecorded(record, info);
    }

    /// <summary>
    /// Starts a commit of <paramref name="volume"/> (<see cref="StorageService.CommitAsync"/>), recorded like a stream. The
    /// default base (the newest snapshot) is resolved now, so a resumed commit merges into the same layer.
    /// </summary>
    public StorageJob StartCommit(string pool, string volume, CommitOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        VolumeInfo info = _service.GetVolume(pool, volume);
        string? baseSnapshot = options.BaseSnapshot ?? (info.Snapshots.Count > 0 ? info.Snapshots[^1].Name : null);
        var record = new JobRecord(NewId(), StorageJobType.Commit, pool, volume, info.File, baseSnapshot, options.SpeedLimit, _time.GetUtcNow(),
            IdlePriority: options.IdlePriority);
        return StartRecorded(record, info);
    }

    /// <summary>
    /// Starts a base move of <paramref name="volume"/> to <paramref name="targetPool"/> (<see cref="StorageService.MoveBaseAsync"/>),
    /// recorded like a stream.
    /// </summary>
    public StorageJob StartMove(string pool, string volume, string targetPool, long speedLimit = 0)
    {
        ArgumentException.ThrowIfNullOrEmpty(targetPool);
        VolumeInfo info = _service.GetVolume(pool, volume);
        var record = new JobRecord(NewId(), StorageJobType.Move, pool, volume, info.File, null, speedLimit, _time.GetUtcNow(), targetPool);
        return StartRecorded(record, info);
    }

    /// <summary>
    /// Takes up the stream and commit jobs a previous lvstord left recorded: a job whose volume still has the top it
    /// started with runs again (copying again is harmless, and finds most of the work done); one whose pivot already
    /// happened, or whose volume is gone, is removed. Returns what happened to each, for the log.
    /// </summary>
    public IReadOnlyList<string> ResumeRecorded()
    {
        var report = new List<string>();
        (List<JobRecord> records, List<string> damaged) = _store.Load();
        report.AddRange(damaged.Select(d => $"ignored a damaged job record {d}"));
        foreach (JobRecord record in records)
        {
            InterlockedMax(ref _nextId, record.Id);
        }

        // A live clone interrupted by the restart is rolled back: its temporary snapshot merges back like any commit.
        foreach ((string pool, string volume, string snapshot) in _service.TakeInterruptedClones())
        {
            if (records.Any(r => r.Type == StorageJobType.Commit && r.Pool == pool && r.Volume == volume && r.BaseSnapshot == snapshot))
            {
                continue; // the merge was already recorded: it resumes below
            }

            try
            {
                StorageJob merge = StartCommit(pool, volume, new CommitOptions { BaseSnapshot = snapshot });
                report.Add($"rolling back an interrupted clone: {merge} merges the temporary snapshot '{snapshot}' back");
            }
            catch (StorageServiceException ex)
            {
                report.Add($"could not roll back the interrupted clone of volume '{volume}' in pool '{pool}': {ex.Message}; merge snapshot '{snapshot}' with 'lvstor commit {volume} --pool {pool} --base {snapshot}'");
            }
        }

        foreach (JobRecord record in records)
        {
            try
            {
                if (record.Type == StorageJobType.Move && ResumeMove(record) is { } done)
                {
                    _store.Delete(record.Id);
                    report.Add(done);
                    continue;
                }

                VolumeInfo info = _service.GetVolume(record.Pool, record.Volume);
                if (info.File != record.TopFile)
                {
                    _store.Delete(record.Id);
                    report.Add($"{Describe(record)} had finished before the restart; removed its record");
                    continue;
                }

                StorageJob job = StartRecorded(record, info);
                report.Add($"resumed {job}");
            }
            catch (StorageServiceException ex)
            {
                _store.Delete(record.Id);
                report.Add($"could not resume {Describe(record)}: {ex.Message}; removed its record");
            }
        }

        return report;
    }

    /// <summary>
    /// A move the inventory already records (the copy finished and was recorded) is finished here: the users' headers
    /// are rewritten and the old file deleted. Otherwise a copy that was renamed into place but not recorded is removed
    /// (no header names it yet) and null is returned: the move starts again.
    /// </summary>
    private string? ResumeMove(JobRecord record)
    {
        string target = record.TargetPool!;
        if (_service.ListVolumes(target).Any(v => v.Name == record.Volume))
        {
            _service.FinishMovedBase(target, record.Volume, record.TopFile);
            return $"finished {Describe(record)}: its users now read the copy in pool '{target}'";
        }

        string directory = _service.GetPool(target).Path;
        if (_service.GetVolume(record.Pool, record.Volume).File == record.TopFile)
        {
            // The interrupted copy: renamed into place but not recorded (no header names it yet), or still a hidden
            // .<name>.creating-* file. Both are this move's own; the move starts again from nothing.
            File.Delete(Path.Combine(directory, record.Volume));
            foreach (string partial in Directory.EnumerateFiles(directory, $".{record.Volume}.creating-*"))
            {
                File.Delete(partial);
            }
        }

        return null;
    }

    /// <summary>Changes the speed limit of a running stream, commit or move (bytes per second, 0 unlimited).</summary>
    public void SetSpeed(long id, long bytesPerSecond)
    {
        if (bytesPerSecond < 0)
        {
            ThrowHelper.Invalid($"speed {bytesPerSecond} is negative; give bytes per second, or 0 for no limit");
        }

        RequireControl(id, "change the speed of").SpeedLimit = bytesPerSecond;

        // A restarted lvstord resumes the job at the speed it last had.
        lock (_lock)
        {
            if (_records.TryGetValue(id, out JobRecord? record))
            {
                _records[id] = record with { SpeedLimit = bytesPerSecond };
                _store.Save(_records[id]);
            }
        }

        Raise(Find(id)!);
    }

    /// <summary>Holds a running stream, commit or move at its next chunk; the guest keeps running.</summary>
    public void Pause(long id)
    {
        RequireControl(id, "pause").Pause();
        Raise(Find(id)!);
    }

    /// <summary>Lets a paused stream, commit or move go on.</summary>
    public void Resume(long id)
    {
        RequireControl(id, "resume").Resume();
        Raise(Find(id)!);
    }

    /// <summary>
    /// Stops: running jobs are cancelled and waited for (up to <see cref="StopTimeout"/>); recorded jobs keep their
    /// records, so the next lvstord resumes them. Finished jobs are no longer removed.
    /// </summary>
    public void Dispose()
    {
        _stopping = true;
        var running = new List<Task>();
        foreach (StorageJob job in List())
        {
            if (job.Cancel())
            {
                running.Add(job.Completion);
            }
        }

        Task.WaitAll(running.ToArray(), StopTimeout);
        _disposed.Cancel();
        _disposed.Dispose();
    }

    private StorageJob StartRecorded(JobRecord record, VolumeInfo info)
    {
        var control = new LiveJobControl(record.SpeedLimit) { IdlePriority = record.IdlePriority };
        Func<StorageJob, Task<VolumeInfo?>> run = record.Type switch
        {
            StorageJobType.Stream => job => Nothing(_service.StreamAsync(record.Pool, record.Volume, new StreamOptions { BaseSnapshot = record.BaseSnapshot },
                Progress(job), job.CancellationToken, control)),
            StorageJobType.Commit => job => Nothing(_service.CommitAsync(record.Pool, record.Volume, new CommitOptions { BaseSnapshot = record.BaseSnapshot },
                Progress(job), job.CancellationToken, control)),
            _ => async job => await _service.MoveBaseAsync(record.Pool, record.Volume, record.TargetPool!, Progress(job), job.CancellationToken, control)
                .ConfigureAwait(false),
        };
        _store.Save(record);
        lock (_lock)
        {
            _records[record.Id] = record;
        }

        try
        {
            return Start(record.Type, info, record.TargetPool ?? "", info.Capacity, run, record.Id, control, record);
        }
        catch
        {
            lock (_lock)
            {
                _records.Remove(record.Id);
            }

            _store.Delete(record.Id);
            throw;
        }
    }

    private LiveJobControl RequireControl(long id, string what)
    {
        StorageJob job = Find(id) ?? throw new StorageServiceException(StorageErrorKind.NotFound, $"no job {id}; list jobs to see the running ones");
        if (job.Control is not { } control)
        {
            ThrowHelper.Invalid($"cannot {what} {job}: only stream, commit and move jobs have a speed and can pause");
            return null!;
        }

        if (job.State != StorageJobState.Running)
        {
            ThrowHelper.Invalid($"cannot {what} {job}: it has ended ({job.State.ToString().ToLowerInvariant()})");
        }

        return control;
    }

    private long NewId() => Interlocked.Increment(ref _nextId);

    private static void InterlockedMax(ref long target, long value)
    {
        long current;
        while ((current = Interlocked.Read(ref target)) < value && Interlocked.CompareExchange(ref target, value, current) != current)
        {
        }
    }

    private static string Describe(JobRecord record) =>
        $"{record.Type.ToString().ToLowerInvariant()} job {record.Id} on volume '{record.Volume}' in pool '{record.Pool}'";

    private static async Task<VolumeInfo?> Nothing(Task work)
    {
        await work.ConfigureAwait(false);
        return null;
    }

    private StorageJob Start<T>(StorageJobType type, VolumeInfo volume, string target, long total, Func<StorageJob, Task<T>> run,
        long id = 0, LiveJobControl? control = null, JobRecord? record = null)
    {
        var job = new StorageJob(id > 0 ? id : NewId(), type, volume.Pool, volume.Name, target, total, _time.GetUtcNow(), control);
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
        _ = FinishAsync(job, work, user, record);
        return job;
    }

    private async Task FinishAsync<T>(StorageJob job, Task<T> work, IDisposable? user, JobRecord? record)
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

        // A recorded job stopped by lvstord's own shutdown is taken up by the next start; otherwise it is over.
        if (record is not null)
        {
            lock (_lock)
            {
                _records.Remove(record.Id);
            }
        }

        if (record is not null && (!_stopping || state == StorageJobState.Completed))
        {
            _store.Delete(record.Id);
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
