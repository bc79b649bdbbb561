namespace LibvirtStorage.Service;

/// <summary>What a job does.</summary>
public enum StorageJobType
{
    /// <summary>A full or linked clone (<see cref="StorageService.CloneVolumeAsync"/>).</summary>
    Clone,
    /// <summary>Bytes from a file descriptor into a volume (<see cref="StorageService.UploadAsync"/>).</summary>
    Upload,
    /// <summary>A volume's bytes into a file descriptor (<see cref="StorageService.DownloadAsync"/>).</summary>
    Download,
    /// <summary>Zeroes over a whole volume (<see cref="StorageService.WipeAsync"/>).</summary>
    Wipe,
    /// <summary>Backing data copied into the top, then the backing dropped (<see cref="StorageService.StreamAsync"/>); persisted.</summary>
    Stream,
    /// <summary>Upper layers merged into a snapshot's layer, which becomes the top (<see cref="StorageService.CommitAsync"/>); persisted.</summary>
    Commit,
    /// <summary>A base volume copied to another pool, its users re-pointed (<see cref="StorageService.MoveBaseAsync"/>); persisted.</summary>
    Move,
}

/// <summary>Where a job stands.</summary>
public enum StorageJobState
{
    /// <summary>Still working.</summary>
    Running,
    /// <summary>Finished successfully.</summary>
    Completed,
    /// <summary>Ended with an error (see <see cref="StorageJob.Error"/>).</summary>
    Failed,
    /// <summary>Ended because it was cancelled.</summary>
    Cancelled,
}

/// <summary>
/// One long operation run by <see cref="JobManager"/>. Its fields change as it runs (read them at any time,
/// from any thread); <see cref="JobManager.Changed"/> says when.
/// </summary>
public sealed class StorageJob
{
    private readonly CancellationTokenSource _cancel = new();
    private long _bytesDone;
    private volatile StorageJobState _state = StorageJobState.Running;

    internal StorageJob(long id, StorageJobType type, string pool, string volume, string target, long bytesTotal, DateTimeOffset startedAt,
        LiveJobControl? control = null)
    {
        Control = control;
        Id = id;
        Type = type;
        Pool = pool;
        Volume = volume;
        Target = target;
        BytesTotal = bytesTotal;
        StartedAt = startedAt;
    }

    /// <summary>Unique for the life of the process, counting up from 1.</summary>
    public long Id { get; }

    /// <summary>What the job does.</summary>
    public StorageJobType Type { get; }

    /// <summary>The pool of the volume.</summary>
    public string Pool { get; }

    /// <summary>The volume worked on (the source of a clone).</summary>
    public string Volume { get; }

    /// <summary>The clone target's name, or empty.</summary>
    public string Target { get; }

    /// <summary>Pause and speed of a stream or commit; null for jobs that have neither.</summary>
    public LiveJobControl? Control { get; }

    /// <summary>Bytes per second the job copies at most (0: unlimited); always 0 for jobs without <see cref="Control"/>.</summary>
    public long SpeedLimit => Control?.SpeedLimit ?? 0;

    /// <summary>Whether a running job is held by <see cref="JobManager.Pause"/>.</summary>
    public bool IsPaused => _state == StorageJobState.Running && Control?.IsPaused == true;

    /// <summary>Bytes processed so far.</summary>
    public long BytesDone => Interlocked.Read(ref _bytesDone);

    /// <summary>Bytes the job covers in all.</summary>
    public long BytesTotal { get; }

    /// <summary>Where the job stands.</summary>
    public StorageJobState State => _state;

    /// <summary>Why the job failed or was cancelled; null while running or after success.</summary>
    public StorageServiceException? Error { get; private set; }

    /// <summary>The new volume of a completed clone; null otherwise.</summary>
    public VolumeInfo? Result { get; private set; }

    /// <summary>When the job started.</summary>
    public DateTimeOffset StartedAt { get; }

    /// <summary>When the job ended; null while running.</summary>
    public DateTimeOffset? EndedAt { get; private set; }

    /// <summary>Completes (never faults) when the job has ended.</summary>
    public Task Completion => _done.Task;

    private readonly TaskCompletionSource _done = new(TaskCreationOptions.RunContinuationsAsynchronously);

    internal CancellationToken CancellationToken => _cancel.Token;

    /// <summary>Asks the job to stop; it ends in <see cref="StorageJobState.Cancelled"/> at its next chunk boundary.</summary>
    /// <returns>False when the job had already ended.</returns>
    public bool Cancel()
    {
        if (_state != StorageJobState.Running)
        {
            return false;
        }

        try
        {
            _cancel.Cancel();
        }
        catch (ObjectDisposedException)
        {
            return false;
        }

        return true;
    }

    /// <summary>Records progress; true when the value moved.</summary>
    internal bool SetBytesDone(long value)
    {
        long clamped = Math.Clamp(value, 0, BytesTotal);
        return Interlocked.Exchange(ref _bytesDone, clamped) != clamped;
    }

    internal void Finish(StorageJobState state, StorageServiceException? error, VolumeInfo? result, DateTimeOffset endedAt)
    {
        Error = error;
        Result = result;
        EndedAt = endedAt;
        if (state == StorageJobState.Completed)
        {
            Interlocked.Exchange(ref _bytesDone, BytesTotal);
        }

        _state = state;
        _cancel.Dispose();
        _done.TrySetResult();
    }

    /// <inheritdoc/>
    public override string ToString() => $"{Type.ToString().ToLowerInvariant()} job {Id} on volume '{Volume}' in pool '{Pool}'";
}
