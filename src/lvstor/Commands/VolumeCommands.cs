using System.CommandLine;
using System.Globalization;
using LibvirtStorage.Cli.Service;
using LibvirtStorage.Client;
using Spectre.Console;

namespace LibvirtStorage.Cli.Commands;

/// <summary>virsh's volume commands against lvstord that finish in one call: vol-list, vol-info, vol-create-as, vol-delete, vol-resize, vol-path, vol-key.</summary>
internal static class VolumeCommands
{
    public static void Add(RootCommand root, ServiceGlobals globals)
    {
        root.Subcommands.Add(List(globals));
        root.Subcommands.Add(Info(globals));
        root.Subcommands.Add(CreateAs(globals));
        root.Subcommands.Add(Delete(globals));
        root.Subcommands.Add(Resize(globals));
        root.Subcommands.Add(Field(globals, "vol-path", "Show a volume's path (its vhost-user-blk socket)", "path", v => v.Path));
        root.Subcommands.Add(Field(globals, "vol-key", "Show a volume's key (its UUID)", "key", v => v.Key));
    }

    private static Command List(ServiceGlobals globals)
    {
        var pool = new Argument<string>("POOL") { Description = "Pool name" };
        var details = new Option<bool>("--details") { Description = "Also show format, capacity, allocation and export state" };
        var command = new ServiceCommand("vol-list", "List the volumes of a pool") { pool, details };
        command.SetService(globals, r => async client =>
        {
            IReadOnlyList<VolumeInfo> volumes = await client.ListVolumesAsync(await client.GetPoolPathAsync(r.GetValue(pool)!).ConfigureAwait(false)).ConfigureAwait(false);
            if (ServiceGlobals.IsJson(r))
            {
                ServiceOutput.WriteJson(globals.Context, volumes);
                return ExitCodes.Ok;
            }

            bool more = r.GetValue(details);
            Table table = more ? ServiceOutput.Table("Name", "Path", "Format", "Capacity", "Allocation", "State") : ServiceOutput.Table("Name", "Path");
            foreach (VolumeInfo v in volumes)
            {
                if (more)
                {
                    ServiceOutput.AddRow(table, v.Name, v.Path, v.Format, VirshSizes.Format(v.Capacity), VirshSizes.Format(v.Allocation), v.Problem.Length > 0 ? "problem: " + v.Problem : v.ExportState);
                }
                else
                {
                    ServiceOutput.AddRow(table, v.Name, v.Path);
                }
            }

            ServiceOutput.Console(globals.Context).Write(table);
            return ExitCodes.Ok;
        });
        return command;
    }

    private static Command Info(ServiceGlobals globals)
    {
        Argument<string> volume = VolumeLookup.VolumeArgument();
        Option<string?> pool = VolumeLookup.PoolOption();
        var command = new ServiceCommand("vol-info", "Show a volume's facts, backing chain, snapshots and users") { volume, pool };
        command.SetService(globals, r =>
        {
            VolumeLookup.Validate(r.GetValue(volume)!, r.GetValue(pool));
            return async client =>
            {
                VolumeInfo v = await client.GetVolumeInfoAsync(await VolumeLookup.ResolveAsync(client, r.GetValue(volume)!, r.GetValue(pool)).ConfigureAwait(false)).ConfigureAwait(false);
                PrintVolume(globals.Context, r, v);
                return ExitCodes.Ok;
            };
        });
        return command;
    }

    /// <summary>A volume as vol-info shows it (also after create, resize, clone, snapshot, revert).</summary>
    public static void PrintVolume(CliContext context, ParseResult r, VolumeInfo v)
    {
        if (ServiceGlobals.IsJson(r))
        {
            ServiceOutput.WriteJson(context, v);
            return;
        }

        var fields = new List<(string, string)>
        {
            ("Name", v.Name),
            ("Pool", v.PoolName),
            ("Key", v.Key),
            ("Type", "file"),
            ("Format", v.Format),
            ("Capacity", VirshSizes.Format(v.Capacity)),
            ("Allocation", VirshSizes.Format(v.Allocation)),
            ("Path", v.Path),
            ("File", v.File),
            ("Read-only", ServiceOutput.YesNo(v.ReadOnly)),
            ("Export", v.ExportState),
        };
        if (v.Problem.Length > 0)
        {
            fields.Add(("Problem", v.Problem));
        }

        fields.AddRange(v.BackingChain.Select(l => ("Backing", $"{l.Volume}{(l.Snapshot.Length > 0 ? "@" + l.Snapshot : string.Empty)} ({l.Format}) {l.File}")));
        fields.AddRange(v.Snapshots.Select(s => ("Snapshot", $"{s.Name} {s.CreatedAt.ToString("u", CultureInfo.InvariantCulture)}")));
        fields.AddRange(v.Users.Select(u => ("User", $"{u.Kind}: {u.Who}")));
        ServiceOutput.WriteFields(context, fields);
    }

    private static Command CreateAs(ServiceGlobals globals)
    {
        var pool = new Argument<string>("POOL") { Description = "Pool name" };
        var name = new Argument<string>("NAME") { Description = "The new volume's name" };
        var size = new Argument<string>("SIZE") { Description = "Capacity: bytes, or with a unit (512M, 10G, 1T)" };
        var format = new Option<string?>("--format") { Description = "raw (default) or qcow2 (default with --backing-vol)" };
        format.AcceptOnlyFromAmong("raw", "qcow2");
        var backing = new Option<string?>("--backing-vol") { Description = "A volume of the same pool to back onto (qcow2 only)" };
        var command = new ServiceCommand("vol-create-as", "Create a volume") { pool, name, size, format, backing };
        command.SetService(globals, r =>
        {
            ulong capacity = VirshSizes.Parse(r.GetValue(size)!, "capacity");
            string backingVolume = r.GetValue(backing) ?? string.Empty;
            string fmt = r.GetValue(format) ?? (backingVolume.Length > 0 ? "qcow2" : "raw");
            return async client =>
            {
                string poolPath = await client.GetPoolPathAsync(r.GetValue(pool)!).ConfigureAwait(false);
                string volumePath = await client.CreateVolumeAsync(poolPath, r.GetValue(name)!, fmt, capacity, backingVolume).ConfigureAwait(false);
                return await Done(globals.Context, r, client, volumePath, $"Vol {r.GetValue(name)} created").ConfigureAwait(false);
            };
        });
        return command;
    }

    private static Command Delete(ServiceGlobals globals)
    {
        Argument<string> volume = VolumeLookup.VolumeArgument();
        Option<string?> pool = VolumeLookup.PoolOption();
        var command = new ServiceCommand("vol-delete", "Delete a volume and its files (refused while something uses it)") { volume, pool };
        command.SetService(globals, r =>
        {
            VolumeLookup.Validate(r.GetValue(volume)!, r.GetValue(pool));
            return async client =>
            {
                string volumePath = await VolumeLookup.ResolveAsync(client, r.GetValue(volume)!, r.GetValue(pool)).ConfigureAwait(false);
                VolumeInfo v = await client.GetVolumeInfoAsync(volumePath).ConfigureAwait(false);
                await client.DeleteVolumeAsync(volumePath).ConfigureAwait(false);
                if (ServiceGlobals.IsJson(r))
                {
                    ServiceOutput.WriteJson(globals.Context, new { pool = v.PoolName, name = v.Name, key = v.Key, deleted = true });
                }
                else
                {
                    globals.Context.Out.WriteLine($"Vol {v.Name} deleted");
                }

                return ExitCodes.Ok;
            };
        });
        return command;
    }

    private static Command Resize(ServiceGlobals globals)
    {
        Argument<string> volume = VolumeLookup.VolumeArgument();
        var size = new Argument<string>("SIZE") { Description = "New capacity; with --delta the change (a leading '-' means --delta --shrink)" };
        Option<string?> pool = VolumeLookup.PoolOption();
        var delta = new Option<bool>("--delta") { Description = "SIZE is added to the current capacity (subtracted with --shrink)" };
        var shrink = new Option<bool>("--shrink") { Description = "Allow the volume to become smaller" };
        var command = new ServiceCommand("vol-resize", "Change a volume's capacity (virsh semantics)") { volume, size, pool, delta, shrink };
        command.SetService(globals, r =>
        {
            VolumeLookup.Validate(r.GetValue(volume)!, r.GetValue(pool));
            ResizeRequest request = ResizeRequest.Parse(r.GetValue(size)!, r.GetValue(delta), r.GetValue(shrink));
            return async client =>
            {
                string volumePath = await VolumeLookup.ResolveAsync(client, r.GetValue(volume)!, r.GetValue(pool)).ConfigureAwait(false);
                VolumeInfo before = await client.GetVolumeInfoAsync(volumePath).ConfigureAwait(false);
                ulong capacity = request.NewCapacity(before.Capacity);
                await client.ResizeVolumeAsync(volumePath, capacity, request.Shrink).ConfigureAwait(false);
                return await Done(globals.Context, r, client, volumePath, $"Size of volume '{before.Name}' successfully changed to {r.GetValue(size)}").ConfigureAwait(false);
            };
        });
        return command;
    }

    private static Command Field(ServiceGlobals globals, string name, string description, string field, Func<VolumeInfo, string> value)
    {
        Argument<string> volume = VolumeLookup.VolumeArgument();
        Option<string?> pool = VolumeLookup.PoolOption();
        var command = new ServiceCommand(name, description) { volume, pool };
        command.SetService(globals, r =>
        {
            VolumeLookup.Validate(r.GetValue(volume)!, r.GetValue(pool));
            return async client =>
            {
                VolumeInfo v = await client.GetVolumeInfoAsync(await VolumeLookup.ResolveAsync(client, r.GetValue(volume)!, r.GetValue(pool)).ConfigureAwait(false)).ConfigureAwait(false);
                if (ServiceGlobals.IsJson(r))
                {
                    ServiceOutput.WriteJson(globals.Context, new Dictionary<string, string> { [field] = value(v) });
                }
                else
                {
                    globals.Context.Out.WriteLine(value(v));
                }

                return ExitCodes.Ok;
            };
        });
        return command;
    }

    /// <summary>After a change: virsh's one-line message, or the volume's new state as JSON.</summary>
    public static async Task<int> Done(CliContext context, ParseResult r, StorageClient client, string volumePath, string message)
    {
        if (ServiceGlobals.IsJson(r))
        {
            ServiceOutput.WriteJson(context, await client.GetVolumeInfoAsync(volumePath).ConfigureAwait(false));
        }
        else
        {
            context.Out.WriteLine(message);
        }

        return ExitCodes.Ok;
    }
}

/// <summary>virsh vol-resize's arithmetic: absolute, or --delta added (subtracted with --shrink); "-SIZE" means --delta --shrink.</summary>
internal sealed record ResizeRequest(ulong Amount, bool Delta, bool Shrink)
{
    public static ResizeRequest Parse(string size, bool delta, bool shrink)
    {
        if (size.StartsWith('-'))
        {
            if (!shrink)
            {
                throw new CliUsageException($"negative size '{size}' requires --shrink");
            }

            return new ResizeRequest(VirshSizes.Parse(size[1..], "size"), Delta: true, Shrink: true);
        }

        return new ResizeRequest(VirshSizes.Parse(size, "size"), delta, shrink);
    }

    public ulong NewCapacity(ulong current)
    {
        if (!Delta)
        {
            return Amount;
        }

        if (Shrink)
        {
            return Amount < current
                ? current - Amount
                : throw new CliUsageException($"cannot shrink by {Amount} bytes: the volume has only {current}");
        }

        return current <= ulong.MaxValue - Amount ? current + Amount : throw new CliUsageException("the new size is too large");
    }
}
