using LibvirtStorage.Service;
using Microsoft.Win32.SafeHandles;
using Xunit;

namespace LibvirtStorage.DBus.Tests;

/// <summary>The service's JobManager directly (no bus): what a Start refuses, fd ownership, retention, dispose.</summary>
public sealed class JobManagerTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("lvstor-jobs-").FullName;
    private readonly StorageService _service;

    public JobManagerTests()
    {
        _service = StorageService.Open(new StorageServiceOptions { StateDirectory = Path.Combine(_root, "state"), RuntimeDirectory = Path.Combine(_root, "run") });
        _service.DefinePool("p", Path.Combine(_root, "p"));
        _service.StartPool("p");
        _service.CreateVolume("p", new VolumeSpec("v", "raw", 8 << 20));
    }

    public void Dispose() => Directory.Delete(_root, recursive: true);

    [Fact]
    public void ARefusedStartCreatesNoJobAndClosesTheFd()
    {
        using var jobs = new JobManager(_service, TimeSpan.FromMinutes(1));
        SafeFileHandle missing = File.OpenHandle("/dev/null", FileMode.Open, FileAccess.Read);
        var notFound = Assert.Throws<StorageServiceException>(() => jobs.StartUpload("p", "nope", missing, 0, null));
        Assert.Equal(StorageErrorKind.NotFound, notFound.Kind);
        Assert.True(missing.IsClosed);

        SafeFileHandle outside = File.OpenHandle("/dev/null", FileMode.Open, FileAccess.Write);
        var invalid = Assert.Throws<StorageServiceException>(() => jobs.StartDownload("p", "v", outside, 16 << 20, null));
        Assert.Equal(StorageErrorKind.Invalid, invalid.Kind);
        Assert.True(outside.IsClosed);

        var exists = Assert.Throws<StorageServiceException>(() => jobs.StartClone("p", "v", "v", null, linked: false));
        Assert.Equal(StorageErrorKind.Exists, exists.Kind);
        Assert.Empty(jobs.List());
    }

    [Fact]
    public async Task AFinishedJobKeepsItsStateForTheRetentionThenGoes()
    {
        using var jobs = new JobManager(_service, TimeSpan.Zero);
        var removed = new TaskCompletionSource();
        jobs.Changed += job =>
        {
            if (job.State != StorageJobState.Running && jobs.Find(job.Id) is null)
            {
                removed.TrySetResult();
            }
        };
        StorageJob wipe = jobs.StartWipe("p", "v");
        await wipe.Completion.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(StorageJobState.Completed, wipe.State);
        Assert.Equal(wipe.BytesTotal, wipe.BytesDone);
        Assert.Null(wipe.Error);
        Assert.False(wipe.Cancel());
        await removed.Task.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Empty(jobs.List());
    }

    [Fact]
    public async Task DisposeCancelsRunningJobs()
    {
        var jobs = new JobManager(_service, TimeSpan.FromMinutes(1));
        using var pipe = new System.IO.Pipes.AnonymousPipeServerStream(System.IO.Pipes.PipeDirection.Out);

        // The job gets the only copy of the read end, as it would from the bus.
        var read = new SafeFileHandle(pipe.ClientSafePipeHandle.DangerousGetHandle(), ownsHandle: true);
        pipe.ClientSafePipeHandle.SetHandleAsInvalid();
        StorageJob upload = jobs.StartUpload("p", "v", read, 0, null);
        jobs.Dispose();

        // The upload notices at its next chunk boundary: give it one chunk (it may have ended and closed the pipe already).
        try
        {
            await pipe.WriteAsync(new byte[1 << 20]);
        }
        catch (IOException)
        {
        }

        await upload.Completion.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(StorageJobState.Cancelled, upload.State);
        Assert.Equal(StorageErrorKind.Cancelled, upload.Error!.Kind);
    }

    [Fact]
    public async Task ACancelledFullCloneLeavesNoTargetBehind()
    {
        _service.CreateVolume("p", new VolumeSpec("data", "raw", 32 << 20));
        byte[] content = new byte[32 << 20];
        content.AsSpan().Fill(0x5a);
        await File.WriteAllBytesAsync(Path.Combine(_root, "p", "data"), content);
        string before = string.Join(",", Directory.EnumerateFileSystemEntries(Path.Combine(_root, "p")).Order(StringComparer.Ordinal));

        using var jobs = new JobManager(_service, TimeSpan.FromMinutes(1));

        // Cancel from the first progress report: it runs on the copying thread, so the copy sees it at its next chunk.
        jobs.Changed += job =>
        {
            if (job.Type == StorageJobType.Clone && job.BytesDone > 0)
            {
                job.Cancel();
            }
        };
        StorageJob clone = jobs.StartClone("p", "data", "data-copy", "qcow2", linked: false);
        await clone.Completion.WaitAsync(TimeSpan.FromSeconds(60));

        Assert.Equal(StorageJobState.Cancelled, clone.State);
        Assert.Equal(StorageErrorKind.Cancelled, clone.Error!.Kind);
        Assert.Null(clone.Result);
        Assert.DoesNotContain(_service.ListVolumes("p"), v => v.Name == "data-copy");
        Assert.Equal(before, string.Join(",", Directory.EnumerateFileSystemEntries(Path.Combine(_root, "p")).Order(StringComparer.Ordinal)));
    }
}
