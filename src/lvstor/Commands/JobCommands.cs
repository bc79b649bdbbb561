using System.CommandLine;
using LibvirtStorage.Cli.Service;
using LibvirtStorage.Client;
using Microsoft.Win32.SafeHandles;
using Spectre.Console;

namespace LibvirtStorage.Cli.Commands;

/// <summary>Commands that run as lvstord jobs (vol-clone, vol-upload, vol-download, vol-wipe) and job-list.</summary>
internal static class JobCommands
{
    public static void Add(RootCommand root, ServiceGlobals globals)
    {
        root.Subcommands.Add(Clone(globals));
        root.Subcommands.Add(Transfer(globals, upload: true));
        root.Subcommands.Add(Transfer(globals, upload: false));
        root.Subcommands.Add(Wipe(globals));
        root.Subcommands.Add(List(globals));
    }

    private static Command Clone(ServiceGlobals globals)
    {
        Argument<string> source = VolumeLookup.VolumeArgument("SRC");
        var name = new Argument<string>("NEW") { Description = "The clone's name (same pool)" };
        Option<string?> pool = VolumeLookup.PoolOption();
        var linked = new Option<bool>("--linked") { Description = "A qcow2 overlay on SRC (SRC becomes a read-only base) instead of a full copy" };
        var format = new Option<string?>("--format") { Description = "The clone's format (raw or qcow2); default: the source's" };
        format.AcceptOnlyFromAmong("raw", "qcow2");
        var snapshot = new Option<string?>("--snapshot")
        {
            Description = "Clone SRC as it was at this snapshot (its guest keeps running; --linked backs the clone by the snapshot's layer)",
        };
        var command = new ServiceCommand("vol-clone", "Clone a volume in its pool") { source, name, pool, linked, format, snapshot };
        command.SetService(globals, r =>
        {
            VolumeLookup.Validate(r.GetValue(source)!, r.GetValue(pool));
            return async client =>
            {
                string volumePath = await VolumeLookup.ResolveAsync(client, r.GetValue(source)!, r.GetValue(pool)).ConfigureAwait(false);
                string? at = r.GetValue(snapshot);
                string job = string.IsNullOrEmpty(at)
                    ? await client.CloneVolumeAsync(volumePath, r.GetValue(name)!, r.GetValue(linked), r.GetValue(format) ?? string.Empty).ConfigureAwait(false)
                    : await client.CloneVolumeFromSnapshotAsync(volumePath, r.GetValue(name)!, at, r.GetValue(linked), r.GetValue(format) ?? string.Empty).ConfigureAwait(false);
                JobInfo done = await JobWaiter.WaitAsync(globals.Context, client, job, !ServiceGlobals.IsJson(r), $"clone to {r.GetValue(name)}").ConfigureAwait(false);
                string from = string.IsNullOrEmpty(at) ? r.GetValue(source)! : $"{r.GetValue(source)} at snapshot {at}";
                return await VolumeCommands.Done(globals.Context, r, client, done.Result, $"Vol {r.GetValue(name)} cloned from {from}").ConfigureAwait(false);
            };
        });
        return command;
    }

    private static Command Transfer(ServiceGlobals globals, bool upload)
    {
        Argument<string> volume = VolumeLookup.VolumeArgument();
        var file = new Argument<string>("FILE") { Description = upload ? "The file to read ('-' = stdin)" : "The file to write ('-' = stdout)" };
        Option<string?> pool = VolumeLookup.PoolOption();
        var offset = new Option<string?>("--offset") { Description = "Volume offset to start at (bytes or with a unit)" };
        var length = new Option<string?>("--length") { Description = "Bytes to transfer (default: to the end of the volume)" };
        var command = new ServiceCommand(
            upload ? "vol-upload" : "vol-download",
            upload ? "Write a local file's content into a volume" : "Write a volume's content to a local file (sparse)")
        { volume, file, pool, offset, length };
        command.SetService(globals, r =>
        {
            VolumeLookup.Validate(r.GetValue(volume)!, r.GetValue(pool));
            ulong from = r.GetValue(offset) is string o && o.Trim() != "0" ? VirshSizes.Parse(o, "offset") : 0;
            ulong count = r.GetValue(length) is string l ? VirshSizes.Parse(l, "length") : 0;
            string path = r.GetValue(file)!;
            bool stdio = path == "-";
            return async client =>
            {
                string volumePath = await VolumeLookup.ResolveAsync(client, r.GetValue(volume)!, r.GetValue(pool)).ConfigureAwait(false);
                string job;

                // lvstord gets its own copy of the descriptor with the call; ours is closed right after.
                using (SafeFileHandle fd = Open(path, upload))
                {
                    job = upload
                        ? await client.UploadAsync(volumePath, fd, from, count).ConfigureAwait(false)
                        : await client.DownloadAsync(volumePath, fd, from, count).ConfigureAwait(false);
                }

                bool bar = !ServiceGlobals.IsJson(r) && !(stdio && !upload);
                JobInfo done = await JobWaiter.WaitAsync(globals.Context, client, job, bar, upload ? $"upload {path}" : $"download {path}").ConfigureAwait(false);
                return Report(globals.Context, r, done, stdio && !upload ? null : $"{(upload ? "Uploaded" : "Downloaded")} {done.BytesDone} bytes");
            };
        });
        return command;
    }

    private static SafeFileHandle Open(string path, bool forReading)
    {
        if (path == "-")
        {
            return new SafeFileHandle(forReading ? 0 : 1, ownsHandle: false);
        }

        return forReading
            ? File.OpenHandle(path, FileMode.Open, FileAccess.Read)
            : File.OpenHandle(path, FileMode.Create, FileAccess.Write);
    }

    private static Command Wipe(ServiceGlobals globals)
    {
        Argument<string> volume = VolumeLookup.VolumeArgument();
        Option<string?> pool = VolumeLookup.PoolOption();
        var command = new ServiceCommand("vol-wipe", "Write zeroes over the whole volume") { volume, pool };
        command.SetService(globals, r =>
        {
            VolumeLookup.Validate(r.GetValue(volume)!, r.GetValue(pool));
            return async client =>
            {
                string volumePath = await VolumeLookup.ResolveAsync(client, r.GetValue(volume)!, r.GetValue(pool)).ConfigureAwait(false);
                string job = await client.WipeVolumeAsync(volumePath).ConfigureAwait(false);
                JobInfo done = await JobWaiter.WaitAsync(globals.Context, client, job, !ServiceGlobals.IsJson(r), $"wipe {r.GetValue(volume)}").ConfigureAwait(false);
                return Report(globals.Context, r, done, $"Vol {done.Volume} wiped");
            };
        });
        return command;
    }

    private static int Report(CliContext context, ParseResult r, JobInfo done, string? message)
    {
        if (ServiceGlobals.IsJson(r))
        {
            ServiceOutput.WriteJson(context, done);
        }
        else if (message is not null)
        {
            context.Out.WriteLine(message);
        }

        return ExitCodes.Ok;
    }

    private static Command List(ServiceGlobals globals)
    {
        var command = new ServiceCommand("job-list", "List running jobs and jobs finished in the last 60 s");
        command.SetService(globals, r => async client =>
        {
            IReadOnlyList<JobInfo> jobs = await client.ListJobsAsync().ConfigureAwait(false);
            if (ServiceGlobals.IsJson(r))
            {
                ServiceOutput.WriteJson(globals.Context, jobs);
                return ExitCodes.Ok;
            }

            Table table = ServiceOutput.Table("Job", "Type", "Pool", "Volume", "Target", "State", "Progress", "Error");
            foreach (JobInfo j in jobs)
            {
                string progress = j.BytesTotal > 0 ? $"{100.0 * j.BytesDone / j.BytesTotal:0}%" : "-";
                ServiceOutput.AddRow(table, j.ObjectPath[(j.ObjectPath.LastIndexOf('/') + 1)..], j.Type, j.Pool, j.Volume, j.Target, j.State, progress, j.ErrorMessage);
            }

            ServiceOutput.Console(globals.Context).Write(table);
            return ExitCodes.Ok;
        });
        return command;
    }
}
