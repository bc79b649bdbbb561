using LibvirtStorage.Service;
using Microsoft.Win32.SafeHandles;
using Tmds.DBus.Protocol;

namespace LibvirtStorage.DBus;

/// <summary>org.lvstor.Storage1.Volume on /org/lvstor/Storage1/pool/&lt;label&gt;/&lt;label&gt;.</summary>
internal static class VolumeMethods
{
    private const string I = Interfaces.Volume;

    public static readonly BusMethod[] All =
    [
        new(I, "Delete", "", Admin: true, call => Change(call, (s, v) => s.DeleteVolume(v.Pool, v.Volume))),
        new(I, "Resize", "tb", Admin: true, Resize),
        new(I, "CreateSnapshot", "s", Admin: true, CreateSnapshot),
        new(I, "RevertToSnapshot", "sb", Admin: true, RevertToSnapshot),
        new(I, "Clone", "sss", Admin: true, call => Clone(call, withOptions: false)),
        new(I, "CloneFrom", "sssa{sv}", Admin: true, call => Clone(call, withOptions: true)),
        new(I, "Upload", "htt", Admin: true, call => Transfer(call, upload: true)),
        new(I, "Download", "htt", Admin: true, call => Transfer(call, upload: false)),
        new(I, "UploadStaged", "hhtt", Admin: true, UploadStaged),
        new(I, "Wipe", "", Admin: true, call => StartJob(call, jobs => jobs.StartWipe(call.Target.Pool, call.Target.Volume))),
        new(I, "Stream", "a{sv}", Admin: true, call => LiveJob(call, (jobs, v, o) =>
            jobs.StartStream(v.Pool, v.Volume, new StreamOptions { BaseSnapshot = o.BaseSnapshot, SpeedLimit = o.Speed, IdlePriority = o.Idle }))),
        new(I, "Commit", "a{sv}", Admin: true, call => LiveJob(call, (jobs, v, o) =>
            jobs.StartCommit(v.Pool, v.Volume, new CommitOptions { BaseSnapshot = o.BaseSnapshot, SpeedLimit = o.Speed, IdlePriority = o.Idle }))),
        new(I, "MoveBase", "sa{sv}", Admin: true, MoveBase),
    ];

    /// <summary>MoveBase: <c>s target_pool, a{sv} options</c> (<c>speed</c> only).</summary>
    private static Task MoveBase(BusCall call)
    {
        Reader reader = call.Request.GetBodyReader();
        string targetPool = reader.ReadString();
        LiveOptions options = ReadLiveOptions(reader.ReadDictionaryOfStringToVariantValue());
        if (options.BaseSnapshot is not null || options.Idle)
        {
            throw BusError.Invalid("MoveBase takes only the option 'speed' (t)");
        }

        return StartJob(call, jobs => jobs.StartMove(call.Target.Pool, call.Target.Volume, targetPool, options.Speed));
    }

    /// <summary>Stream and Commit: options <c>base</c> (s, a snapshot name), <c>speed</c> (t, bytes per second), <c>priority</c> (s).</summary>
    private static Task LiveJob(BusCall call, Func<JobManager, BusObject, LiveOptions, StorageJob> start)
    {
        LiveOptions options = ReadLiveOptions(call.Request.GetBodyReader().ReadDictionaryOfStringToVariantValue());
        return StartJob(call, jobs => start(jobs, call.Target, options));
    }

    private static LiveOptions ReadLiveOptions(Dictionary<string, VariantValue> options)
    {
        string? baseSnapshot = null;
        long speed = 0;
        bool idle = false;
        foreach ((string key, VariantValue value) in options)
        {
            switch (key)
            {
                case "base" when value.Type == VariantValueType.String:
                    baseSnapshot = value.GetString();
                    break;
                case "speed" when value.Type == VariantValueType.UInt64:
                    speed = BusCall.ToSize(value.GetUInt64(), "speed");
                    break;
                case "priority" when value.Type == VariantValueType.String:
                    idle = value.GetString() switch
                    {
                        "normal" => false,
                        "idle" => true,
                        string other => throw BusError.Invalid($"priority '{other}' is not known; use 'normal' or 'idle' (wait for gaps in guest I/O)"),
                    };
                    break;
                case "base" or "speed" or "priority":
                    throw BusError.Invalid($"option '{key}' has the wrong type: 'base' and 'priority' are strings (s), 'speed' bytes per second (t)");
                default:
                    throw BusError.Invalid($"unknown option '{key}'; the options are 'base' (s), 'speed' (t) and 'priority' (s)");
            }
        }

        return new LiveOptions(string.IsNullOrEmpty(baseSnapshot) ? null : baseSnapshot, speed, idle);
    }

    private readonly record struct LiveOptions(string? BaseSnapshot, long Speed, bool Idle);

    private static Task Change(BusCall call, Action<StorageService, BusObject> change)
    {
        change(call.Server.Service, call.Target);
        call.Server.Resync();
        call.ReplyEmpty();
        return Task.CompletedTask;
    }

    private static Task Resize(BusCall call)
    {
        Reader reader = call.Request.GetBodyReader();
        long capacity = BusCall.ToSize(reader.ReadUInt64(), "capacity");
        bool allowShrink = reader.ReadBool();
        return Change(call, (s, v) => s.ResizeVolume(v.Pool, v.Volume, capacity, allowShrink));
    }

    private static Task CreateSnapshot(BusCall call)
    {
        string name = call.Request.GetBodyReader().ReadString();
        return Change(call, (s, v) => s.CreateSnapshot(v.Pool, v.Volume, name));
    }

    private static Task RevertToSnapshot(BusCall call)
    {
        Reader reader = call.Request.GetBodyReader();
        string name = reader.ReadString();
        bool discardNewer = reader.ReadBool();
        return Change(call, (s, v) => s.RevertToSnapshot(v.Pool, v.Volume, name, discardNewer));
    }

    /// <summary>Clone (s target, s mode, s format) and CloneFrom (the same and a{sv} options: <c>snapshot</c> (s), a snapshot name).</summary>
    private static Task Clone(BusCall call, bool withOptions)
    {
        Reader reader = call.Request.GetBodyReader();
        string target = reader.ReadString();
        string mode = reader.ReadString();
        string format = reader.ReadString();
        string? snapshot = null;
        if (withOptions)
        {
            foreach ((string key, VariantValue value) in reader.ReadDictionaryOfStringToVariantValue())
            {
                snapshot = key switch
                {
                    "snapshot" when value.Type == VariantValueType.String => value.GetString(),
                    "snapshot" => throw BusError.Invalid("option 'snapshot' has the wrong type: it is a snapshot name (s)"),
                    _ => throw BusError.Invalid($"unknown option '{key}'; the only option is 'snapshot' (s)"),
                };
            }
        }

        bool linked = mode switch
        {
            "full" => false,
            "linked" => true,
            _ => throw BusError.Invalid($"clone mode '{mode}' is not known; use 'full' (an independent copy) or 'linked' (an overlay over this volume)"),
        };
        return StartJob(call, jobs => jobs.StartClone(call.Target.Pool, call.Target.Volume, target, format.Length == 0 ? null : format, linked,
            string.IsNullOrEmpty(snapshot) ? null : snapshot));
    }

    private static Task Transfer(BusCall call, bool upload)
    {
        Reader reader = call.Request.GetBodyReader();
        SafeFileHandle? fd = reader.ReadHandle<SafeFileHandle>();
        ulong offset = reader.ReadUInt64();
        ulong length = reader.ReadUInt64();
        if (fd is null || fd.IsInvalid)
        {
            fd?.Dispose();
            throw BusError.Invalid("the call carried no usable file descriptor; pass an open fd (file, pipe or socket)");
        }

        long start;
        long? count;
        try
        {
            start = BusCall.ToSize(offset, "offset");
            count = length == 0 ? null : BusCall.ToSize(length, "length");
        }
        catch
        {
            // From here on the job manager owns the fd (it closes it on its own errors too); these are our checks.
            fd.Dispose();
            throw;
        }

        (string pool, string volume) = (call.Target.Pool, call.Target.Volume);
        return StartJob(call, jobs => upload ? jobs.StartUpload(pool, volume, fd, start, count) : jobs.StartDownload(pool, volume, fd, start, count));
    }

    /// <summary>Upload from a file its writer is still filling: the job claims the volume now and reads the file once the ready fd delivers a byte.</summary>
    private static Task UploadStaged(BusCall call)
    {
        Reader reader = call.Request.GetBodyReader();
        SafeFileHandle? file = reader.ReadHandle<SafeFileHandle>();
        SafeFileHandle? ready = reader.ReadHandle<SafeFileHandle>();
        ulong offset = reader.ReadUInt64();
        ulong length = reader.ReadUInt64();
        long start;
        long? count;
        try
        {
            if (file is null || file.IsInvalid || ready is null || ready.IsInvalid)
            {
                throw BusError.Invalid("UploadStaged needs two usable file descriptors: the staged file and the ready signal (a pipe or socket)");
            }

            start = BusCall.ToSize(offset, "offset");
            count = length == 0 ? null : BusCall.ToSize(length, "length");
        }
        catch
        {
            file?.Dispose();
            ready?.Dispose();
            throw;
        }

        (string pool, string volume) = (call.Target.Pool, call.Target.Volume);
        return StartJob(call, jobs => jobs.StartUpload(pool, volume, file, start, count, ready));
    }

    private static Task StartJob(BusCall call, Func<JobManager, StorageJob> start)
    {
        StorageJob job = start(call.Server.Jobs);
        call.Server.Resync();
        call.ReplyObjectPath(ObjectPaths.Job(job.Id));
        return Task.CompletedTask;
    }
}

/// <summary>org.lvstor.Storage1.Job on /org/lvstor/Storage1/job/&lt;id&gt;.</summary>
internal static class JobMethods
{
    public static readonly BusMethod[] All =
    [
        new(Interfaces.Job, "Cancel", "", Admin: true, Cancel),
        new(Interfaces.Job, "SetSpeed", "t", Admin: true, call => Control(call, (jobs, id) =>
            jobs.SetSpeed(id, BusCall.ToSize(call.Request.GetBodyReader().ReadUInt64(), "speed")))),
        new(Interfaces.Job, "Pause", "", Admin: true, call => Control(call, (jobs, id) => jobs.Pause(id))),
        new(Interfaces.Job, "Resume", "", Admin: true, call => Control(call, (jobs, id) => jobs.Resume(id))),
    ];

    private static Task Control(BusCall call, Action<JobManager, long> change)
    {
        change(call.Server.Jobs, call.Target.JobId);
        call.Server.Resync();
        call.ReplyEmpty();
        return Task.CompletedTask;
    }

    private static async Task Cancel(BusCall call)
    {
        StorageJob job = call.Server.Jobs.Find(call.Target.JobId)
            ?? throw BusError.NotFound($"job {call.Target.JobId} is gone (finished jobs are kept for {call.Server.Options.JobRetention.TotalSeconds:0} s)");
        if (job.Cancel())
        {
            // Usually the job ends at its next chunk, so its state is final when the call returns; a transfer
            // blocked on a silent pipe ends when the pipe moves, and the caller learns it from Completed.
            try
            {
                await job.Completion.WaitAsync(TimeSpan.FromSeconds(2)).ConfigureAwait(false);
            }
            catch (TimeoutException)
            {
            }
        }

        call.Server.Resync();
        call.ReplyEmpty();
    }
}
