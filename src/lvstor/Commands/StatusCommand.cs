using System.CommandLine;
using System.Globalization;
using LibvirtStorage.Cli.Service;
using LibvirtStorage.Client;
using Spectre.Console;

namespace LibvirtStorage.Cli.Commands;

/// <summary><c>lvstor status</c>: lvstord's counters and who uses which volume.</summary>
internal static class StatusCommand
{
    /// <summary>The JSON shape of <c>status --json</c>.</summary>
    internal sealed record StatusJson(
        string Version,
        string StateDirectory,
        string RuntimeDirectory,
        uint Pools,
        uint ActivePools,
        uint Volumes,
        uint Exports,
        uint ConnectedGuests,
        uint Jobs,
        DateTimeOffset StartedAt,
        IReadOnlyList<VolumeUser> Users);

    public static Command Build(ServiceGlobals globals)
    {
        var command = new ServiceCommand("status", "Show lvstord's state and every user of every volume");
        command.SetService(globals, r => async client =>
        {
            ManagerInfo manager = await client.GetManagerInfoAsync().ConfigureAwait(false);
            ServiceStatus s = await client.GetStatusAsync().ConfigureAwait(false);
            IReadOnlyList<VolumeUser> users = await client.ListUsersAsync().ConfigureAwait(false);
            CliContext context = globals.Context;
            if (ServiceGlobals.IsJson(r))
            {
                ServiceOutput.WriteJson(context, new StatusJson(manager.Version, manager.StateDirectory, manager.RuntimeDirectory,
                    s.Pools, s.ActivePools, s.Volumes, s.Exports, s.ConnectedGuests, s.Jobs, s.StartedAt, users));
                return ExitCodes.Ok;
            }

            string N(uint n) => n.ToString(CultureInfo.InvariantCulture);
            ServiceOutput.WriteFields(context,
            [
                ("lvstord", $"{manager.Version} on {client.BusDescription}"),
                ("Started", s.StartedAt.ToString("u", CultureInfo.InvariantCulture)),
                ("State directory", manager.StateDirectory),
                ("Runtime directory", manager.RuntimeDirectory),
                ("Pools", $"{N(s.Pools)} ({N(s.ActivePools)} active)"),
                ("Volumes", N(s.Volumes)),
                ("Exports", N(s.Exports)),
                ("Connected guests", N(s.ConnectedGuests)),
                ("Running jobs", N(s.Jobs)),
            ]);
            if (users.Count == 0)
            {
                context.Out.WriteLine("No volume is in use.");
                return ExitCodes.Ok;
            }

            context.Out.WriteLine();
            Table table = ServiceOutput.Table("Pool", "Volume", "Kind", "Who");
            foreach (VolumeUser u in users)
            {
                ServiceOutput.AddRow(table, u.Pool, u.Volume, u.Kind, u.Who);
            }

            ServiceOutput.Console(context).Write(table);
            return ExitCodes.Ok;
        });
        return command;
    }
}
