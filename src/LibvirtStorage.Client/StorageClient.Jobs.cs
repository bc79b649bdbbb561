using LibvirtStorage.Client.Bus;
using Tmds.DBus;

namespace LibvirtStorage.Client;

/// <summary>org.lvstor.Storage1.Job.</summary>
public sealed partial class StorageClient
{
    /// <summary>A job's properties.</summary>
    /// <param name="jobPath">The job's object path.</param>
    /// <returns>The job.</returns>
    public Task<JobInfo> GetJobInfoAsync(string jobPath) => Call(async () => ToJobInfo(jobPath, await Job(jobPath).GetAllAsync().ConfigureAwait(false)));

    /// <summary>Cancels a job; it ends in <c>cancelled</c> and nothing half-made stays behind. [admin]</summary>
    /// <param name="jobPath">The job's object path.</param>
    /// <returns>A task.</returns>
    public Task CancelJobAsync(string jobPath) => Call(() => Job(jobPath).CancelAsync());

    /// <summary>Changes a stream's or commit's speed limit (bytes per second, 0 for none). [admin]</summary>
    /// <param name="jobPath">The job's object path.</param>
    /// <param name="bytesPerSecond">The new limit.</param>
    /// <returns>A task.</returns>
    public Task SetJobSpeedAsync(string jobPath, ulong bytesPerSecond) => Call(() => Job(jobPath).SetSpeedAsync(bytesPerSecond));

    /// <summary>Pauses (or resumes) a stream or commit at its next chunk; guests keep running. [admin]</summary>
    /// <param name="jobPath">The job's object path.</param>
    /// <param name="pause">True to pause, false to resume.</param>
    /// <returns>A task.</returns>
    public Task PauseJobAsync(string jobPath, bool pause) => Call(() => pause ? Job(jobPath).PauseAsync() : Job(jobPath).ResumeAsync());

    /// <summary>
    /// Waits until a job ends, reporting (BytesDone, BytesTotal) as they change. It subscribes to <c>Completed</c>
    /// and <c>PropertiesChanged</c> before it reads <c>State</c>, so a job that already ended is seen too.
    /// </summary>
    /// <param name="jobPath">The job's object path.</param>
    /// <param name="progress">Receives progress, or null.</param>
    /// <param name="cancellationToken">Stops waiting (the job keeps running: cancel it with <see cref="CancelJobAsync"/>).</param>
    /// <returns>The finished job when it completed.</returns>
    /// <exception cref="StorageClientException">The job failed or was cancelled (its ErrorName and ErrorMessage).</exception>
    public async Task<JobInfo> WaitForJobAsync(string jobPath, IProgress<(ulong Done, ulong Total)>? progress, CancellationToken cancellationToken)
    {
        IJob job = Job(jobPath);
        var ended = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        ulong done = 0, total = 0;
        var gate = new object();

        void OnChanges(PropertyChanges changes)
        {
            bool report = false;
            (ulong, ulong) snapshot;
            lock (gate)
            {
                foreach (KeyValuePair<string, object> change in changes.Changed)
                {
                    switch (change.Key)
                    {
                        case "BytesDone":
                            done = Convert.ToUInt64(change.Value, System.Globalization.CultureInfo.InvariantCulture);
                            report = true;
                            break;
                        case "BytesTotal":
                            total = Convert.ToUInt64(change.Value, System.Globalization.CultureInfo.InvariantCulture);
                            report = true;
                            break;
                        case "State" when change.Value is string state && state != "running":
                            ended.TrySetResult();
                            break;
                    }
                }

                snapshot = (done, total);
            }

            if (report)
            {
                progress?.Report(snapshot);
            }
        }

        IDisposable completedWatch = await Call(() => job.WatchCompletedAsync(_ => ended.TrySetResult(), e => ended.TrySetException(e))).ConfigureAwait(false);
        using (completedWatch)
        {
            IDisposable propertiesWatch = await Call(() => job.WatchPropertiesAsync(OnChanges)).ConfigureAwait(false);
            using (propertiesWatch)
            {
                EventHandler<ConnectionStateChangedEventArgs> onState = (_, e) =>
                {
                    if (e.State is ConnectionState.Disconnected or ConnectionState.Disconnecting)
                    {
                        ended.TrySetException(new StorageClientException(StorageClientException.ServiceUnavailableName, $"lost the connection to {BusDescription} while waiting for {jobPath}"));
                    }
                };
                _connection.StateChanged += onState;
                try
                {
                    JobInfo info = await GetJobInfoAsync(jobPath).ConfigureAwait(false);
                    lock (gate)
                    {
                        // A signal may have brought newer numbers already.
                        done = Math.Max(done, info.BytesDone);
                        total = info.BytesTotal;
                    }

                    progress?.Report((info.BytesDone, info.BytesTotal));
                    if (!info.IsFinished)
                    {
                        await ended.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
                        info = await GetJobInfoAsync(jobPath).ConfigureAwait(false);
                    }

                    return Finish(info, progress);
                }
                finally
                {
                    _connection.StateChanged -= onState;
                }
            }
        }
    }

    private static JobInfo Finish(JobInfo info, IProgress<(ulong Done, ulong Total)>? progress)
    {
        switch (info.State)
        {
            case "completed":
                progress?.Report((info.BytesTotal, info.BytesTotal));
                return info;
            case "cancelled":
                throw new StorageClientException(
                    info.ErrorName.Length > 0 ? info.ErrorName : StorageClientException.ErrorPrefix + "Cancelled",
                    info.ErrorMessage.Length > 0 ? info.ErrorMessage : $"the {info.Type} job was cancelled");
            default:
                throw new StorageClientException(
                    info.ErrorName.Length > 0 ? info.ErrorName : StorageClientException.ErrorPrefix + "Io",
                    info.ErrorMessage.Length > 0 ? info.ErrorMessage : $"the {info.Type} job ended in state '{info.State}'");
        }
    }

    private static JobInfo ToJobInfo(string jobPath, JobProperties p) => new(
        jobPath,
        p.Type,
        p.Pool,
        p.Volume,
        p.Target,
        p.BytesDone,
        p.BytesTotal,
        p.State,
        p.ErrorName,
        p.ErrorMessage,
        p.Result.ToString(),
        FromUnixMicroseconds(p.StartedAt),
        p.Speed,
        p.Paused,
        p.Priority);
}
