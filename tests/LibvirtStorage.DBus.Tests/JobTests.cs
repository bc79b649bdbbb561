using System.IO.Pipes;
using System.Runtime.InteropServices;
using Tmds.DBus.Protocol;
using Xunit;

namespace LibvirtStorage.DBus.Tests;

/// <summary>Upload, download, clone and wipe as Job objects: fds passed over the bus, Completed, final properties, Cancel.</summary>
public sealed class JobTests(BusServerFixture fixture) : IClassFixture<BusServerFixture>
{
    private const string Volume = "org.lvstor.Storage1.Volume";
    private const string Job = "org.lvstor.Storage1.Job";

    private Task<string> TransferAsync(string volumePath, string member, SafeHandle fd, ulong offset = 0, ulong length = 0) =>
        fixture.CallPathAsync(volumePath, Volume, member, "htt", (ref MessageWriter w) =>
        {
            w.WriteHandle(fd);
            w.WriteUInt64(offset);
            w.WriteUInt64(length);
        });

    private async Task<SignalLog.Signal> CompletedAsync(SignalLog log, string job)
    {
        SignalLog.Signal completed = await log.WaitAsync(s => s.Member == "Completed" && s.Path == job);
        Assert.Equal(Job, completed.Interface);
        return completed;
    }

    private async Task<string> StringPropertyAsync(string path, string name) => (await fixture.GetPropertyAsync(path, Job, name)).GetString();

    private static byte[] Pattern(int length, int seed)
    {
        var data = new byte[length];
        new Random(seed).NextBytes(data);
        data.AsSpan(length / 2, 128 << 10).Clear(); // a zero run in the middle, which upload turns into a zero range
        return data;
    }

    [BusFact]
    public async Task UploadAndDownloadThroughFilesRoundTripTheBytes()
    {
        string volume = await fixture.CreateVolumeAsync("job-file", "qcow2", 4 << 20);
        byte[] pattern = Pattern(4 << 20, 1);
        string source = Path.Combine(fixture.Root, "pattern.bin");
        string copy = Path.Combine(fixture.Root, "copy.bin");
        await File.WriteAllBytesAsync(source, pattern);
        using SignalLog log = await SignalLog.StartAsync(fixture.Client);

        string upload;
        using (var fd = File.OpenHandle(source, FileMode.Open, FileAccess.Read))
        {
            upload = await TransferAsync(volume, "Upload", fd);
        }

        Assert.StartsWith(StorageBusServer.RootPath + "/job/", upload);
        SignalLog.Signal done = await CompletedAsync(log, upload);
        Assert.Equal(["completed", "", ""], done.Strings);
        Assert.Equal("completed", await StringPropertyAsync(upload, "State"));
        Assert.Equal("upload", await StringPropertyAsync(upload, "Type"));
        Assert.Equal("job-file", await StringPropertyAsync(upload, "Volume"));
        Assert.Equal((ulong)pattern.Length, (await fixture.GetPropertyAsync(upload, Job, "BytesTotal")).GetUInt64());
        Assert.Equal((ulong)pattern.Length, (await fixture.GetPropertyAsync(upload, Job, "BytesDone")).GetUInt64());
        Assert.Equal("/", (await fixture.GetPropertyAsync(upload, Job, "Result")).GetObjectPathAsString());
        Assert.Contains(upload, await fixture.ListAsync(StorageBusServer.RootPath, "org.lvstor.Storage1.Manager", "ListJobs"));

        string download;
        using (var fd = File.OpenHandle(copy, FileMode.Create, FileAccess.ReadWrite))
        {
            download = await TransferAsync(volume, "Download", fd);
        }

        Assert.Equal(["completed", "", ""], (await CompletedAsync(log, download)).Strings);
        Assert.Equal(pattern, await File.ReadAllBytesAsync(copy));
    }

    [BusFact]
    public async Task UploadAndDownloadThroughPipes()
    {
        string volume = await fixture.CreateVolumeAsync("job-pipe", "raw", 2 << 20);
        byte[] pattern = Pattern(2 << 20, 2);
        using SignalLog log = await SignalLog.StartAsync(fixture.Client);

        string upload;
        using (var pipe = new AnonymousPipeServerStream(PipeDirection.Out))
        {
            upload = await TransferAsync(volume, "Upload", pipe.ClientSafePipeHandle);
            pipe.DisposeLocalCopyOfClientHandle();
            await pipe.WriteAsync(pattern);
        }

        Assert.Equal("completed", (await CompletedAsync(log, upload)).Strings[0]);

        using var reader = new AnonymousPipeServerStream(PipeDirection.In);
        string download = await TransferAsync(volume, "Download", reader.ClientSafePipeHandle);
        reader.DisposeLocalCopyOfClientHandle();
        using var received = new MemoryStream();
        await reader.CopyToAsync(received);
        Assert.Equal("completed", (await CompletedAsync(log, download)).Strings[0]);
        Assert.Equal(pattern, received.ToArray());
    }

    [BusFact]
    public async Task FullCloneJobReportsTheNewVolumeAsResult()
    {
        string source = await fixture.CreateVolumeAsync("job-clone-src", "qcow2", 2 << 20);
        using SignalLog log = await SignalLog.StartAsync(fixture.Client);
        string job = await fixture.CallPathAsync(source, Volume, "Clone", "sss", (ref MessageWriter w) =>
        {
            w.WriteString("job-clone-dst");
            w.WriteString("full");
            w.WriteString("raw");
        });
        Assert.Equal("completed", (await CompletedAsync(log, job)).Strings[0]);
        string result = (await fixture.GetPropertyAsync(job, Job, "Result")).GetObjectPathAsString();
        Assert.Equal(BusServerFixture.VolumePath("job-clone-dst"), result);
        Assert.Equal("raw", (await fixture.GetPropertyAsync(result, Volume, "Format")).GetString());
        Assert.Equal("job-clone-dst", await StringPropertyAsync(job, "Target"));
        await log.WaitAsync(s => s.Member == "InterfacesAdded" && s.Object == result);
    }

    [BusFact]
    public async Task CloneFromMakesFullAndLinkedClonesOfASnapshot()
    {
        string source = await fixture.CreateVolumeAsync("job-from-src", "qcow2", 2 << 20);
        string first = fixture.Service.GetVolume(BusServerFixture.Pool, "job-from-src").File;
        var qemuIo = System.Diagnostics.Process.Start("qemu-io", ["-f", "qcow2", "-c", "write -P 9 0 1M", first])!;
        await qemuIo.WaitForExitAsync();
        Assert.Equal(0, qemuIo.ExitCode);
        await fixture.CallAsync(source, Volume, "CreateSnapshot", "s", (ref MessageWriter w) => w.WriteString("s1"));
        using SignalLog log = await SignalLog.StartAsync(fixture.Client);
        foreach (string mode in new[] { "full", "linked" })
        {
            string job = await fixture.CallPathAsync(source, Volume, "CloneFrom", "sssa{sv}", (ref MessageWriter w) =>
            {
                w.WriteString($"job-from-{mode}");
                w.WriteString(mode);
                w.WriteString("");
                w.WriteDictionary(new Dictionary<string, VariantValue> { ["snapshot"] = VariantValue.String("s1") });
            });
            Assert.Equal("completed", (await CompletedAsync(log, job)).Strings[0]);
            Assert.Equal("clone", await StringPropertyAsync(job, "Type"));
        }

        Assert.Empty(fixture.Service.GetVolume(BusServerFixture.Pool, "job-from-full").Chain);
        var layer = Assert.Single(fixture.Service.GetVolume(BusServerFixture.Pool, "job-from-linked").Chain);
        Assert.Equal(("job-from-src", "s1"), (layer.Volume, layer.Snapshot));
        Assert.False((await fixture.GetPropertyAsync(source, Volume, "ReadOnly")).GetBool());

        // The linked clone uses s1's layer: a commit into it is refused at the call, naming the clone.
        var error = await Assert.ThrowsAsync<DBusErrorReplyException>(() =>
            fixture.CallPathAsync(source, Volume, "Commit", "a{sv}", (ref MessageWriter w) => w.WriteDictionary(new Dictionary<string, VariantValue>())));
        Assert.Equal("org.lvstor.Storage1.Error.InUse", error.ErrorName);
        Assert.Contains("job-from-linked", error.ErrorMessage, StringComparison.Ordinal);
    }

    [BusFact]
    public async Task LinkedCloneAndWipe()
    {
        string source = await fixture.CreateVolumeAsync("job-linked-src", "qcow2", 1 << 20);
        using SignalLog log = await SignalLog.StartAsync(fixture.Client);
        string clone = await fixture.CallPathAsync(source, Volume, "Clone", "sss", (ref MessageWriter w) =>
        {
            w.WriteString("job-linked-dst");
            w.WriteString("linked");
            w.WriteString("");
        });
        Assert.Equal("completed", (await CompletedAsync(log, clone)).Strings[0]);
        Assert.True((await fixture.GetPropertyAsync(source, Volume, "ReadOnly")).GetBool());

        string dst = BusServerFixture.VolumePath("job-linked-dst");
        string wipe = await fixture.CallPathAsync(dst, Volume, "Wipe");
        Assert.Equal("completed", (await CompletedAsync(log, wipe)).Strings[0]);
        Assert.Equal("wipe", await StringPropertyAsync(wipe, "Type"));

        // The base is read-only now: a wipe is refused at the call, and no job is made.
        var error = await Assert.ThrowsAsync<DBusErrorReplyException>(() => fixture.CallPathAsync(source, Volume, "Wipe"));
        Assert.Equal("org.lvstor.Storage1.Error.InUse", error.ErrorName);
    }

    [BusFact]
    public async Task StreamAndCommitRunAsJobsWithSpeedAndPause()
    {
        string volume = await fixture.CreateVolumeAsync("job-live", "qcow2", 16 << 20);
        await fixture.CallAsync(volume, Volume, "CreateSnapshot", "s", (ref MessageWriter w) => w.WriteString("s1"));

        // 16 MiB of data in the layer that becomes s2's, so the stream has something to copy (no export holds the file here).
        string top = fixture.Service.GetVolume(BusServerFixture.Pool, "job-live").File;
        var qemuIo = System.Diagnostics.Process.Start("qemu-io", ["-f", "qcow2", "-c", "write -P 5 0 16M", top])!;
        await qemuIo.WaitForExitAsync();
        Assert.Equal(0, qemuIo.ExitCode);
        await fixture.CallAsync(volume, Volume, "CreateSnapshot", "s", (ref MessageWriter w) => w.WriteString("s2"));
        using SignalLog log = await SignalLog.StartAsync(fixture.Client);

        // Slow enough (64 KiB/s for 16 MiB: minutes) to be seen running, paused and sped up.
        string stream = await fixture.CallPathAsync(volume, Volume, "Stream", "a{sv}", (ref MessageWriter w) =>
            w.WriteDictionary(new Dictionary<string, VariantValue>
            {
                ["base"] = VariantValue.String("s1"),
                ["speed"] = VariantValue.UInt64(64 << 10),
                ["priority"] = VariantValue.String("idle"),
            }));
        Assert.Equal("idle", await StringPropertyAsync(stream, "Priority"));
        Assert.Equal("stream", await StringPropertyAsync(stream, "Type"));
        Assert.Equal(64UL << 10, (await fixture.GetPropertyAsync(stream, Job, "Speed")).GetUInt64());
        await fixture.CallAsync(stream, Job, "Pause", null, null);
        Assert.True((await fixture.GetPropertyAsync(stream, Job, "Paused")).GetBool());
        Assert.Equal("running", await StringPropertyAsync(stream, "State"));
        await fixture.CallAsync(stream, Job, "Resume", null, null);
        await fixture.CallAsync(stream, Job, "SetSpeed", "t", (ref MessageWriter w) => w.WriteUInt64(0));
        Assert.Equal(0UL, (await fixture.GetPropertyAsync(stream, Job, "Speed")).GetUInt64());
        Assert.Equal("completed", (await CompletedAsync(log, stream)).Strings[0]);
        Assert.Equal(16UL << 20, (await fixture.GetPropertyAsync(stream, Job, "BytesDone")).GetUInt64());

        // s2's layer was streamed into the top, so s2 is gone; a commit then merges the top into s1's layer.
        Assert.Equal(["s1"], fixture.Service.ListSnapshots(BusServerFixture.Pool, "job-live").Select(x => x.Name));
        string commit = await fixture.CallPathAsync(volume, Volume, "Commit", "a{sv}", (ref MessageWriter w) => w.WriteDictionary(new Dictionary<string, VariantValue>()));
        Assert.Equal("completed", (await CompletedAsync(log, commit)).Strings[0]);
        Assert.Equal("commit", await StringPropertyAsync(commit, "Type"));
        Assert.Empty(fixture.Service.ListSnapshots(BusServerFixture.Pool, "job-live"));
        Assert.Equal(Path.Combine(fixture.PoolDirectory, "job-live"), fixture.Service.GetVolume(BusServerFixture.Pool, "job-live").File);

        // A finished job cannot be paused.
        var error = await Assert.ThrowsAsync<DBusErrorReplyException>(() => fixture.CallAsync(commit, Job, "Pause", null, null));
        Assert.Equal("org.lvstor.Storage1.Error.Invalid", error.ErrorName);
    }

    [BusFact]
    public async Task CancelEndsASlowUploadAsCancelledAndLeavesNothingBehind()
    {
        string volume = await fixture.CreateVolumeAsync("job-cancel", "qcow2", 64 << 20);
        string before = string.Join(",", Directory.EnumerateFileSystemEntries(fixture.PoolDirectory).Order(StringComparer.Ordinal));
        using SignalLog log = await SignalLog.StartAsync(fixture.Client);
        using var pipe = new AnonymousPipeServerStream(PipeDirection.Out);
        string job = await TransferAsync(volume, "Upload", pipe.ClientSafePipeHandle);
        pipe.DisposeLocalCopyOfClientHandle();

        // One chunk in: the job is running and has moved.
        byte[] chunk = new byte[1 << 20];
        chunk.AsSpan().Fill(0x5a);
        await pipe.WriteAsync(chunk);
        await log.WaitAsync(s => s.Member == "PropertiesChanged" && s.Path == job && s.Changed.TryGetValue("BytesDone", out VariantValue v) && v.GetUInt64() > 0);
        Assert.Equal("running", await StringPropertyAsync(job, "State"));

        // The job notices Cancel at its next chunk boundary, so keep feeding it until it has ended.
        Task cancel = fixture.CallAsync(job, Job, "Cancel");
        Task<SignalLog.Signal> completed = CompletedAsync(log, job);
        try
        {
            while (!completed.IsCompleted)
            {
                await pipe.WriteAsync(chunk);
            }
        }
        catch (IOException)
        {
            // The job ended and closed its end of the pipe.
        }

        await cancel;
        SignalLog.Signal end = await completed;
        Assert.Equal("cancelled", end.Strings[0]);
        Assert.Equal("org.lvstor.Storage1.Error.Cancelled", end.Strings[1]);
        Assert.Equal("cancelled", await StringPropertyAsync(job, "State"));
        Assert.Equal("org.lvstor.Storage1.Error.Cancelled", await StringPropertyAsync(job, "ErrorName"));
        Assert.Equal(before, string.Join(",", Directory.EnumerateFileSystemEntries(fixture.PoolDirectory).Order(StringComparer.Ordinal)));

        // Cancelling an ended job is harmless; the volume is free for the next operation.
        await fixture.CallAsync(job, Job, "Cancel");
        await fixture.CallAsync(volume, Volume, "Resize", "tb", (ref MessageWriter w) => { w.WriteUInt64(65 << 20); w.WriteBool(false); });
    }

    [BusFact]
    public async Task AJobRunningOnAVolumeIsNamedAsItsUser()
    {
        string volume = await fixture.CreateVolumeAsync("job-user", "raw", 8 << 20);
        using SignalLog log = await SignalLog.StartAsync(fixture.Client);
        using var pipe = new AnonymousPipeServerStream(PipeDirection.Out);
        string job = await TransferAsync(volume, "Upload", pipe.ClientSafePipeHandle);
        pipe.DisposeLocalCopyOfClientHandle();

        var (code, output, error) = fixture.Gdbus(volume, "org.freedesktop.DBus.Properties.Get", Volume, "Users");
        Assert.True(code == 0, error);
        Assert.Contains("'job'", output);
        Assert.Contains("upload job", output);

        var busy = await Assert.ThrowsAsync<DBusErrorReplyException>(() => fixture.CallAsync(volume, Volume, "Delete"));
        Assert.Contains(busy.ErrorName, new[] { "org.lvstor.Storage1.Error.InUse", "org.lvstor.Storage1.Error.Busy" });
        Assert.Contains("upload job", busy.ErrorMessage);

        pipe.Dispose(); // end of input: the upload completes with what it got (nothing)
        Assert.Equal("completed", (await CompletedAsync(log, job)).Strings[0]);
    }
}
