using System.CommandLine;
using System.Globalization;
using LibvirtStorage.Cli.Service;
using LibvirtStorage.Client;
using Spectre.Console;

namespace LibvirtStorage.Cli.Commands;

/// <summary>External snapshots of one volume: snapshot, snapshot-list, revert.</summary>
internal static class SnapshotCommands
{
    public static void Add(RootCommand root, ServiceGlobals globals)
    {
        root.Subcommands.Add(Create(globals));
        root.Subcommands.Add(List(globals));
        root.Subcommands.Add(Revert(globals));
    }

    private static Command Create(ServiceGlobals globals)
    {
        Argument<string> volume = VolumeLookup.VolumeArgument();
        var name = new Argument<string>("NAME") { Description = "The snapshot's name" };
        Option<string?> pool = VolumeLookup.PoolOption();
        var command = new ServiceCommand("snapshot", "Take an external snapshot: the current top becomes read-only, a new overlay takes the writes") { volume, name, pool };
        command.SetService(globals, r =>
        {
            VolumeLookup.Validate(r.GetValue(volume)!, r.GetValue(pool));
            return async client =>
            {
                string volumePath = await VolumeLookup.ResolveAsync(client, r.GetValue(volume)!, r.GetValue(pool)).ConfigureAwait(false);
                await client.CreateSnapshotAsync(volumePath, r.GetValue(name)!).ConfigureAwait(false);
                return await VolumeCommands.Done(globals.Context, r, client, volumePath, $"Snapshot {r.GetValue(name)} created").ConfigureAwait(false);
            };
        });
        return command;
    }

    private static Command List(ServiceGlobals globals)
    {
        Argument<string> volume = VolumeLookup.VolumeArgument();
        Option<string?> pool = VolumeLookup.PoolOption();
        var command = new ServiceCommand("snapshot-list", "List a volume's snapshots, oldest first") { volume, pool };
        command.SetService(globals, r =>
        {
            VolumeLookup.Validate(r.GetValue(volume)!, r.GetValue(pool));
            return async client =>
            {
                VolumeInfo v = await client.GetVolumeInfoAsync(await VolumeLookup.ResolveAsync(client, r.GetValue(volume)!, r.GetValue(pool)).ConfigureAwait(false)).ConfigureAwait(false);
                if (ServiceGlobals.IsJson(r))
                {
                    ServiceOutput.WriteJson(globals.Context, v.Snapshots);
                    return ExitCodes.Ok;
                }

                Table table = ServiceOutput.Table("Name", "Creation Time", "Format", "File");
                foreach (SnapshotInfo s in v.Snapshots)
                {
                    ServiceOutput.AddRow(table, s.Name, s.CreatedAt.ToString("yyyy-MM-dd HH:mm:ss zzz", CultureInfo.InvariantCulture), s.Format, s.File);
                }

                ServiceOutput.Console(globals.Context).Write(table);
                return ExitCodes.Ok;
            };
        });
        return command;
    }

    private static Command Revert(ServiceGlobals globals)
    {
        Argument<string> volume = VolumeLookup.VolumeArgument();
        var snapshot = new Argument<string>("SNAPSHOT") { Description = "The snapshot to continue from" };
        Option<string?> pool = VolumeLookup.PoolOption();
        var discard = new Option<bool>("--discard-newer") { Description = "Delete snapshots newer than SNAPSHOT (otherwise refused while there are any)" };
        var command = new ServiceCommand("revert", "Discard the volume's current state and continue from a snapshot") { volume, snapshot, pool, discard };
        command.SetService(globals, r =>
        {
            VolumeLookup.Validate(r.GetValue(volume)!, r.GetValue(pool));
            return async client =>
            {
                string volumePath = await VolumeLookup.ResolveAsync(client, r.GetValue(volume)!, r.GetValue(pool)).ConfigureAwait(false);
                await client.RevertToSnapshotAsync(volumePath, r.GetValue(snapshot)!, r.GetValue(discard)).ConfigureAwait(false);
                return await VolumeCommands.Done(globals.Context, r, client, volumePath, $"Volume reverted to snapshot {r.GetValue(snapshot)}").ConfigureAwait(false);
            };
        });
        return command;
    }
}
