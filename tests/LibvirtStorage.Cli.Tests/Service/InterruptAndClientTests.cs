using LibvirtStorage.Client;
using LibvirtStorage.Images.Tests.Infrastructure;
using Xunit;

namespace LibvirtStorage.Cli.Tests.Service;

/// <summary>Ctrl-C during a job, the client's job waiting, and the built lvstor process with '-' (stdin/stdout).</summary>
public sealed class InterruptAndClientTests
{
    private const long M = 1 << 20;

    private static async Task<StorageClient> PoolWithVolumeAsync(LvstordHost host, string format, long size)
    {
        StorageClient client = await StorageClient.ConnectAsync(host.Address);
        string pool = await client.DefinePoolAsync("p", host.PoolDirectory("p"));
        await client.StartPoolAsync(pool);
        await client.CreateVolumeAsync(pool, "v", format, (ulong)size);
        return client;
    }

    [BusFact]
    public async Task Interrupt_during_an_upload_cancels_the_job_and_exits_130()
    {
        await using LvstordHost host = await LvstordHost.StartAsync();
        using StorageClient client = await PoolWithVolumeAsync(host, "raw", 64 * M);
        string fifo = Path.Combine(host.Root, "fifo");
        ProcessRunner.Run("mkfifo", [fifo]).Expect();

        // A slow writer: the upload keeps running until it is cancelled.
        using var stopWriter = new CancellationTokenSource();
        Task writer = Task.Run(() =>
        {
            using FileStream pipe = new(fifo, FileMode.Open, FileAccess.Write);
            var chunk = new byte[64 * 1024];
            chunk.AsSpan().Fill(7);
            try
            {
                while (!stopWriter.IsCancellationRequested)
                {
                    pipe.Write(chunk);
                    pipe.Flush();
                    Thread.Sleep(20);
                }
            }
            catch (IOException)
            {
                // lvstord closed its end (the job was cancelled).
            }
        });

        using var interrupt = new CancellationTokenSource();
        using var output = new StringWriter();
        using var error = new StringWriter();
        var context = new CliContext(output, error, IsTerminal: false) { Interrupt = interrupt.Token };
        Task<int> run = Task.Run(() => Program.Run(["vol-upload", "v", fifo, "--pool", "p", "--bus", host.Address], context));

        // Wait until the job runs and has moved some bytes, then "press Ctrl-C".
        JobInfo? job = null;
        while (job is null || job.BytesDone == 0)
        {
            Assert.False(run.IsCompleted, "lvstor ended before the interrupt: " + error);
            await Task.Delay(50);
            job = (await client.ListJobsAsync()).FirstOrDefault(j => j.Type == "upload");
        }

        interrupt.Cancel();
        int code = await run;
        stopWriter.Cancel();
        await writer;

        Assert.Equal(130, code);
        Assert.StartsWith("lvstor: error: interrupted", error.ToString(), StringComparison.Ordinal);
        JobInfo ended = await client.GetJobInfoAsync(job.ObjectPath);
        Assert.Equal("cancelled", ended.State);
        Assert.Equal(StorageClientException.ErrorPrefix + "Cancelled", ended.ErrorName);
    }

    [BusFact]
    public async Task WaitForJob_reports_progress_and_a_failed_job_throws_its_error()
    {
        await using LvstordHost host = await LvstordHost.StartAsync();
        using StorageClient client = await PoolWithVolumeAsync(host, "raw", 32 * M);
        string pool = await client.GetPoolPathAsync("p");
        string volume = await client.GetVolumePathAsync(pool, "v");

        var reports = new List<(ulong Done, ulong Total)>();
        var progress = new SyncProgress(reports);
        string job = await client.WipeVolumeAsync(volume);
        JobInfo done = await client.WaitForJobAsync(job, progress, CancellationToken.None);
        Assert.Equal("completed", done.State);
        Assert.Equal((ulong)(32 * M), done.BytesTotal);
        Assert.Equal(((ulong)(32 * M), (ulong)(32 * M)), reports[^1]);

        // Waiting on a job that already ended returns at once with its final state.
        Assert.Equal("completed", (await client.WaitForJobAsync(job, null, CancellationToken.None)).State);

        // A clone onto an existing name is refused (at the call since lvstord checks before a job exists): lvstord's error name and message.
        var e = await Assert.ThrowsAsync<StorageClientException>(async () =>
            await client.WaitForJobAsync(await client.CloneVolumeAsync(volume, "v", linked: false), null, CancellationToken.None));
        Assert.Contains(e.Kind, new[] { StorageErrorKind.Exists, StorageErrorKind.Invalid });
        Assert.StartsWith(StorageClientException.ErrorPrefix, e.ErrorName, StringComparison.Ordinal);

        var notFound = await Assert.ThrowsAsync<StorageClientException>(() => client.GetPoolPathAsync("nope"));
        Assert.Equal(StorageErrorKind.NotFound, notFound.Kind);
        Assert.Equal("org.lvstor.Storage1.Error.NotFound", notFound.ErrorName);

        ManagerInfo manager = await client.GetManagerInfoAsync();
        Assert.False(string.IsNullOrEmpty(manager.Version));
        ServiceStatus status = await client.GetStatusAsync();
        Assert.Equal(1u, status.Pools);
        Assert.True(status.StartedAt > DateTimeOffset.UnixEpoch);
    }

    [BusFact]
    public async Task Built_lvstor_uploads_from_stdin_and_downloads_to_stdout()
    {
        await using LvstordHost host = await LvstordHost.StartAsync();
        using StorageClient client = await PoolWithVolumeAsync(host, "qcow2", 4 * M);
        string lvstor = Path.Combine(AppContext.BaseDirectory, "lvstor");
        Assert.True(File.Exists(lvstor), "the built lvstor apphost is next to the tests");

        string input = Path.Combine(host.Root, "in.bin");
        byte[] data = new byte[4 * M];
        new Random(3).NextBytes(data);
        File.WriteAllBytes(input, data);
        string output = Path.Combine(host.Root, "out.bin");

        // Through a shell, so that stdin and stdout are real pipes/files of the child, as a user would run it.
        ProcessResult up = ProcessRunner.Run("sh", ["-c", $"LVSTOR_BUS_ADDRESS='{host.Address}' '{lvstor}' vol-upload v - --pool p < '{input}'"]);
        Assert.True(up.ExitCode == 0, up.StdErr);
        Assert.Equal($"Uploaded {4 * M} bytes\n", up.StdOut);
        ProcessResult down = ProcessRunner.Run("sh", ["-c", $"'{lvstor}' --bus '{host.Address}' vol-download v - --pool p | cat > '{output}'"]);
        Assert.True(down.ExitCode == 0, down.StdErr);
        Assert.Equal(data, File.ReadAllBytes(output));

        ProcessResult missing = ProcessRunner.Run("sh", ["-c", $"'{lvstor}' --bus '{host.Address}' vol-info nope --pool p; echo \"rc=$?\""]);
        Assert.EndsWith("rc=3\n", missing.StdOut, StringComparison.Ordinal);
        Assert.StartsWith("lvstor: error: ", missing.StdErr, StringComparison.Ordinal);
    }

    /// <summary>Records reports synchronously (Progress&lt;T&gt; would post them to the thread pool, out of order).</summary>
    private sealed class SyncProgress(List<(ulong Done, ulong Total)> reports) : IProgress<(ulong Done, ulong Total)>
    {
        public void Report((ulong Done, ulong Total) value)
        {
            lock (reports)
            {
                reports.Add(value);
            }
        }
    }
}
