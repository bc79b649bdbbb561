using System.CommandLine;
using System.Globalization;
using LibvirtStorage.Cli.Service;
using LibvirtStorage.Client;

namespace LibvirtStorage.Cli.Commands;

/// <summary>stream and commit (jobs that change a chain while guests run), and job-cancel/pause/resume/speed.</summary>
internal static class LiveJobCommands
{
    public static void Add(RootCommand root, ServiceGlobals globals)
    {
        root.Subcommands.Add(Live(globals, commit: false));
        root.Subcommands.Add(Live(globals, commit: true));
        root.Subcommands.Add(MoveBase(globals));
        root.Subcommands.Add(Control(globals, "job-cancel", "Cancel a running job (a stream or commit keeps the volume's chain as it was)",
            (client, path, _) => client.CancelJobAsync(path), "cancelled"));
        root.Subcommands.Add(Control(globals, "job-pause", "Hold a stream, commit or base move at its next chunk; guests keep running",
            (client, path, _) => client.PauseJobAsync(path, pause: true), "paused"));
        root.Subcommands.Add(Control(globals, "job-resume", "Let a paused stream, commit or base move go on",
            (client, path, _) => client.PauseJobAsync(path, pause: false), "resumed"));
        var speed = new Argument<string>("SPEED") { Description = "Bytes per second, with a unit (10M = 10 MiB/s); 0 for no limit" };
        root.Subcommands.Add(Control(globals, "job-speed", "Change a stream's, commit's or base move's speed limit",
            (client, path, r) => client.SetJobSpeedAsync(path, Speed(r.GetValue(speed)!)), "set to the new speed", speed));
    }

    private static Command Live(ServiceGlobals globals, bool commit)
    {
        Argument<string> volume = VolumeLookup.VolumeArgument();
        Option<string?> pool = VolumeLookup.PoolOption();
        var baseSnapshot = new Option<string?>("--base")
        {
            Description = commit
                ? "The snapshot whose layer receives the data (default: the newest); it and newer snapshots are merged and deleted"
                : "The snapshot whose layer stays as backing (default: none, stream everything); newer snapshots are merged and deleted",
        };
        var speed = new Option<string?>("--speed") { Description = "Bytes per second at most, with a unit (50M = 50 MiB/s); default: no limit" };
        var detach = new Option<bool>("--async") { Description = "Print the job's id and return; follow it with job-list" };
        var priority = new Option<string?>("--priority") { Description = "normal (default) or idle: wait for gaps in the guest's I/O before each chunk" };
        priority.AcceptOnlyFromAmong("normal", "idle");
        string name = commit ? "commit" : "stream";
        var command = new ServiceCommand(name, commit
            ? "Merge a volume's top into a snapshot's layer while its guest runs; that layer becomes the top"
            : "Copy a volume's backing data into its top while its guest runs, then drop the backing")
        { volume, pool, baseSnapshot, speed, priority, detach };
        command.SetService(globals, r =>
        {
            VolumeLookup.Validate(r.GetValue(volume)!, r.GetValue(pool));
            ulong limit = r.GetValue(speed) is string s ? Speed(s) : 0;
            bool idle = r.GetValue(priority) == "idle";
            return async client =>
            {
                string volumePath = await VolumeLookup.ResolveAsync(client, r.GetValue(volume)!, r.GetValue(pool)).ConfigureAwait(false);
                string job = commit
                    ? await client.CommitVolumeAsync(volumePath, r.GetValue(baseSnapshot), limit, idle).ConfigureAwait(false)
                    : await client.StreamVolumeAsync(volumePath, r.GetValue(baseSnapshot), limit, idle).ConfigureAwait(false);
                if (r.GetValue(detach))
                {
                    return Detached(globals.Context, r, await client.GetJobInfoAsync(job).ConfigureAwait(false));
                }

                JobInfo done = await JobWaiter.WaitAsync(globals.Context, client, job, !ServiceGlobals.IsJson(r), $"{name} {r.GetValue(volume)}").ConfigureAwait(false);
                return await VolumeCommands.Done(globals.Context, r, client, volumePath,
                    commit ? $"Vol {done.Volume} committed" : $"Vol {done.Volume} streamed").ConfigureAwait(false);
            };
        });
        return command;
    }

    private static Command MoveBase(ServiceGlobals globals)
    {
        Argument<string> volume = VolumeLookup.VolumeArgument();
        var targetPool = new Argument<string>("TARGET-POOL") { Description = "The pool to move the base to" };
        Option<string?> pool = VolumeLookup.PoolOption();
        var speed = new Option<string?>("--speed") { Description = "Bytes per second at most, with a unit (50M = 50 MiB/s); default: no limit" };
        var detach = new Option<bool>("--async") { Description = "Print the job's id and return; follow it with job-list" };
        var command = new ServiceCommand("base-move",
            "Copy a shared base volume to another pool while the volumes over it run, re-point them all to the copy, delete the old file")
        { volume, targetPool, pool, speed, detach };
        command.SetService(globals, r =>
        {
            VolumeLookup.Validate(r.GetValue(volume)!, r.GetValue(pool));
            ulong limit = r.GetValue(speed) is string s ? Speed(s) : 0;
            return async client =>
            {
                string volumePath = await VolumeLookup.ResolveAsync(client, r.GetValue(volume)!, r.GetValue(pool)).ConfigureAwait(false);
                string target = r.GetValue(targetPool)!;
                string job = await client.MoveBaseAsync(volumePath, target, limit).ConfigureAwait(false);
                if (r.GetValue(detach))
                {
                    return Detached(globals.Context, r, await client.GetJobInfoAsync(job).ConfigureAwait(false));
                }

                JobInfo done = await JobWaiter.WaitAsync(globals.Context, client, job, !ServiceGlobals.IsJson(r), $"move {r.GetValue(volume)} to {target}").ConfigureAwait(false);
                string moved = await client.GetVolumePathAsync(await client.GetPoolPathAsync(target).ConfigureAwait(false), done.Volume).ConfigureAwait(false);
                return await VolumeCommands.Done(globals.Context, r, client, moved, $"Vol {done.Volume} moved to pool {target}").ConfigureAwait(false);
            };
        });
        return command;
    }

    /// <summary>A speed with a unit; "0" is no limit (VirshSizes refuses 0, which no size may be).</summary>
    private static ulong Speed(string text) => text.Trim() == "0" ? 0 : VirshSizes.Parse(text, "speed");

    private static int Detached(CliContext context, ParseResult r, JobInfo job)
    {
        if (ServiceGlobals.IsJson(r))
        {
            ServiceOutput.WriteJson(context, job);
        }
        else
        {
            context.Out.WriteLine($"Job {JobId(job.ObjectPath)} started: {job.Type} of {job.Volume}");
        }

        return ExitCodes.Ok;
    }

    private static Command Control(ServiceGlobals globals, string name, string description, Func<StorageClient, string, ParseResult, Task> act,
        string done, Argument<string>? extra = null)
    {
        var id = new Argument<string>("JOB") { Description = "The job's id (job-list shows it)" };
        var command = new ServiceCommand(name, description) { id };
        if (extra is not null)
        {
            command.Arguments.Add(extra);
        }

        command.SetService(globals, r =>
        {
            string path = JobPath(r.GetValue(id)!);
            return async client =>
            {
                await act(client, path, r).ConfigureAwait(false);
                JobInfo job = await client.GetJobInfoAsync(path).ConfigureAwait(false);
                if (ServiceGlobals.IsJson(r))
                {
                    ServiceOutput.WriteJson(globals.Context, job);
                }
                else
                {
                    globals.Context.Out.WriteLine($"Job {JobId(path)} {done} ({job.Type} of {job.Volume}: {job.State})");
                }

                return ExitCodes.Ok;
            };
        });
        return command;
    }

    private static string JobPath(string id)
    {
        if (!ulong.TryParse(id, NumberStyles.None, CultureInfo.InvariantCulture, out ulong number) || number == 0)
        {
            throw new CliUsageException($"job id '{id}' is not a number; job-list shows the ids");
        }

        return $"{StorageClient.ManagerPath}/job/{number}";
    }

    private static string JobId(string path) => path[(path.LastIndexOf('/') + 1)..];
}
