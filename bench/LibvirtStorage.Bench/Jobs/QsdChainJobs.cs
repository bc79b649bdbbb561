using System.Diagnostics;
using System.Text.Json.Nodes;
using LibvirtStorage.Bench.Vhost;

namespace LibvirtStorage.Bench.Jobs;

/// <summary>
/// The live peer: qemu-storage-daemon holding the chain (base.qcow2 ← top.qcow2, both cache.direct=on) with a
/// vhost-user-blk export of the top (listening, no guest, like ours) and a QMP monitor. The job is started and
/// watched over QMP; the clock runs from writing the job command to reading BLOCK_JOB_COMPLETED.
/// </summary>
internal sealed class QsdChainJobs
{
    private static readonly TimeSpan ReplyTimeout = TimeSpan.FromMinutes(5);
    private readonly string _dir;
    private readonly string _aio;
    private readonly List<string> _commandLog;

    public QsdChainJobs(string dir, string aio, List<string> commandLog)
    {
        _dir = dir;
        _aio = aio;
        _commandLog = commandLog;
    }

    /// <summary>block-stream of the whole backing chain into the top; afterwards top.qcow2 stands alone.</summary>
    public TimeSpan Stream(string basePath, string topPath) => Run(basePath, topPath, qmp =>
    {
        const string job = "stream0";
        var clock = Stopwatch.StartNew();
        Command(qmp, "block-stream", new JsonObject { ["job-id"] = job, ["device"] = "top" });
        JsonObject done = qmp.WaitForJobEvent("BLOCK_JOB_COMPLETED", job);
        TimeSpan elapsed = clock.Elapsed;
        CheckWhole(done);
        return elapsed;
    });

    /// <summary>Active block-commit of the top into the base, then block-job-complete (the pivot) once READY.</summary>
    public TimeSpan Commit(string basePath, string topPath) => Run(basePath, topPath, qmp =>
    {
        const string job = "commit0";
        var clock = Stopwatch.StartNew();
        Command(qmp, "block-commit", new JsonObject { ["job-id"] = job, ["device"] = "top" });
        qmp.WaitForJobEvent("BLOCK_JOB_READY", job);
        Command(qmp, "block-job-complete", new JsonObject { ["device"] = job });
        JsonObject done = qmp.WaitForJobEvent("BLOCK_JOB_COMPLETED", job);
        TimeSpan elapsed = clock.Elapsed;
        CheckWhole(done);
        return elapsed;
    });

    private TimeSpan Run(string basePath, string topPath, Func<QmpClient, TimeSpan> job)
    {
        string qmpSocket = Path.Combine(_dir, "qsd-qmp.sock");
        string exportSocket = Path.Combine(_dir, "qsd-export.sock");
        File.Delete(exportSocket);
        string[] args =
        [
            "--blockdev", $"driver=file,node-name=base-file,filename={basePath},cache.direct=on,aio={_aio}",
            "--blockdev", "driver=qcow2,node-name=base,file=base-file",
            "--blockdev", $"driver=file,node-name=top-file,filename={topPath},cache.direct=on,aio={_aio}",
            "--blockdev", "driver=qcow2,node-name=top,file=top-file,backing=base",
            "--export", $"type=vhost-user-blk,id=exp0,node-name=top,addr.type=unix,addr.path={exportSocket},writable=on",
            "--chardev", $"socket,id=qmp0,path={qmpSocket},server=on,wait=off",
            "--monitor", "chardev=qmp0",
        ];
        using BackendProcess qsd = BackendProcess.StartQsd(args, qmpSocket);
        Remember(qsd.CommandLine);
        TimeSpan elapsed;
        using (QmpClient qmp = QmpClient.Connect(qmpSocket, ReplyTimeout))
        {
            try
            {
                elapsed = job(qmp);
            }
            catch (Exception e) when (e is InvalidOperationException or IOException)
            {
                throw new InvalidOperationException($"{e.Message}; QSD log: {qsd.Log.Trim()}", e);
            }

            // quit closes (and flushes) every node before the files are compared. Its reply is awaited: QSD may
            // drop a command still unread when the client hangs up.
            qmp.Send("quit");
            try
            {
                qmp.ReadReply("quit");
            }
            catch (IOException)
            {
                // Closed by QSD on its way out.
            }
        }

        if (!qsd.WaitForExit(TimeSpan.FromSeconds(30)))
        {
            throw new InvalidOperationException("qemu-storage-daemon did not exit after QMP quit");
        }

        return elapsed;
    }

    private void Command(QmpClient qmp, string command, JsonObject arguments)
    {
        Remember($"QMP {{\"execute\":\"{command}\",\"arguments\":{arguments.ToJsonString()}}}");
        qmp.Send(command, arguments);
        qmp.ReadReply(command);
    }

    private static void CheckWhole(JsonObject completed)
    {
        long length = completed["len"]?.GetValue<long>() ?? -1;
        long offset = completed["offset"]?.GetValue<long>() ?? -2;
        if (length != offset)
        {
            throw new InvalidOperationException($"QSD job ended at {offset} of {length} bytes: {completed.ToJsonString()}");
        }
    }

    private void Remember(string line)
    {
        if (!_commandLog.Contains(line))
        {
            _commandLog.Add(line);
        }
    }
}
