using System.CommandLine;
using LibvirtStorage.Cli.Service;
using LibvirtStorage.Client;
using Spectre.Console;

namespace LibvirtStorage.Cli.Commands;

/// <summary>virsh's pool commands against lvstord: pool-list, pool-info, pool-define-as, pool-start, pool-destroy, pool-undefine, pool-autostart, pool-refresh.</summary>
internal static class PoolCommands
{
    public static void Add(RootCommand root, ServiceGlobals globals)
    {
        root.Subcommands.Add(List(globals));
        root.Subcommands.Add(Info(globals));
        root.Subcommands.Add(DefineAs(globals));
        root.Subcommands.Add(Simple(globals, "pool-start", "Start a pool: adopt new image files and open its volumes' sockets", "started", (c, p) => c.StartPoolAsync(p)));
        root.Subcommands.Add(Simple(globals, "pool-destroy", "Stop a pool (refused while a guest is connected); its files stay", "destroyed", (c, p) => c.StopPoolAsync(p)));
        root.Subcommands.Add(Undefine(globals));
        root.Subcommands.Add(Autostart(globals));
        root.Subcommands.Add(Refresh(globals));
    }

    private static Argument<string> PoolArgument() => new("POOL") { Description = "Pool name" };

    private static Command List(ServiceGlobals globals)
    {
        var all = new Option<bool>("--all") { Description = "List active and inactive pools" };
        var inactive = new Option<bool>("--inactive") { Description = "List inactive pools only" };
        var command = new ServiceCommand("pool-list", "List pools (active ones unless --all or --inactive)") { all, inactive };
        command.SetService(globals, r => async client =>
        {
            IReadOnlyList<PoolInfo> pools = await client.ListPoolsAsync().ConfigureAwait(false);
            var shown = pools.Where(p => r.GetValue(all) || (r.GetValue(inactive) ? !p.Active : p.Active)).ToList();
            if (ServiceGlobals.IsJson(r))
            {
                ServiceOutput.WriteJson(globals.Context, shown);
                return ExitCodes.Ok;
            }

            Table table = ServiceOutput.Table("Name", "State", "Autostart", "Volumes", "Path");
            foreach (PoolInfo p in shown)
            {
                ServiceOutput.AddRow(table, p.Name, p.Active ? "active" : "inactive", ServiceOutput.YesNo(p.Autostart), p.VolumeCount.ToString(System.Globalization.CultureInfo.InvariantCulture), p.Path);
            }

            ServiceOutput.Console(globals.Context).Write(table);
            return ExitCodes.Ok;
        });
        return command;
    }

    private static Command Info(ServiceGlobals globals)
    {
        Argument<string> pool = PoolArgument();
        var command = new ServiceCommand("pool-info", "Show a pool's facts") { pool };
        command.SetService(globals, r => async client =>
        {
            PoolInfo p = await client.GetPoolInfoAsync(await client.GetPoolPathAsync(r.GetValue(pool)!).ConfigureAwait(false)).ConfigureAwait(false);
            Print(globals.Context, r, p);
            return ExitCodes.Ok;
        });
        return command;
    }

    private static void Print(CliContext context, ParseResult r, PoolInfo p)
    {
        if (ServiceGlobals.IsJson(r))
        {
            ServiceOutput.WriteJson(context, p);
            return;
        }

        ServiceOutput.WriteFields(context,
        [
            ("Name", p.Name),
            ("UUID", p.Uuid),
            ("State", p.Active ? "running" : "inactive"),
            ("Persistent", "yes"),
            ("Autostart", ServiceOutput.YesNo(p.Autostart)),
            ("Path", p.Path),
            ("Volumes", p.VolumeCount.ToString(System.Globalization.CultureInfo.InvariantCulture)),
            ("Capacity", VirshSizes.Format(p.Capacity)),
            ("Allocation", VirshSizes.Format(p.Allocation)),
            ("Available", VirshSizes.Format(p.Available)),
        ]);
    }

    private static Command DefineAs(ServiceGlobals globals)
    {
        var name = new Argument<string>("NAME") { Description = "The new pool's name" };
        var path = new Argument<string>("PATH") { Description = "Its directory (created if missing)" };
        var command = new ServiceCommand("pool-define-as", "Define a pool over a directory (not started)") { name, path };
        command.SetService(globals, r =>
        {
            string directory = Path.GetFullPath(r.GetValue(path)!);
            return async client =>
            {
                string poolPath = await client.DefinePoolAsync(r.GetValue(name)!, directory).ConfigureAwait(false);
                return await Done(globals.Context, r, client, poolPath, $"Pool {r.GetValue(name)} defined").ConfigureAwait(false);
            };
        });
        return command;
    }

    private static Command Simple(ServiceGlobals globals, string name, string description, string verb, Func<StorageClient, string, Task> action)
    {
        Argument<string> pool = PoolArgument();
        var command = new ServiceCommand(name, description) { pool };
        command.SetService(globals, r => async client =>
        {
            string poolPath = await client.GetPoolPathAsync(r.GetValue(pool)!).ConfigureAwait(false);
            await action(client, poolPath).ConfigureAwait(false);
            return await Done(globals.Context, r, client, poolPath, $"Pool {r.GetValue(pool)} {verb}").ConfigureAwait(false);
        });
        return command;
    }

    private static Command Undefine(ServiceGlobals globals)
    {
        Argument<string> pool = PoolArgument();
        var command = new ServiceCommand("pool-undefine", "Forget a stopped pool; its files stay on disk") { pool };
        command.SetService(globals, r => async client =>
        {
            string name = r.GetValue(pool)!;
            await client.UndefinePoolAsync(await client.GetPoolPathAsync(name).ConfigureAwait(false)).ConfigureAwait(false);
            if (ServiceGlobals.IsJson(r))
            {
                ServiceOutput.WriteJson(globals.Context, new { name, undefined = true });
            }
            else
            {
                globals.Context.Out.WriteLine($"Pool {name} has been undefined");
            }

            return ExitCodes.Ok;
        });
        return command;
    }

    private static Command Autostart(ServiceGlobals globals)
    {
        Argument<string> pool = PoolArgument();
        var disable = new Option<bool>("--disable") { Description = "Do not start the pool with lvstord" };
        var command = new ServiceCommand("pool-autostart", "Start the pool whenever lvstord starts") { pool, disable };
        command.SetService(globals, r => async client =>
        {
            string poolPath = await client.GetPoolPathAsync(r.GetValue(pool)!).ConfigureAwait(false);
            bool on = !r.GetValue(disable);
            await client.SetPoolAutostartAsync(poolPath, on).ConfigureAwait(false);
            return await Done(globals.Context, r, client, poolPath, $"Pool {r.GetValue(pool)} {(on ? "marked as autostarted" : "unmarked as autostarted")}").ConfigureAwait(false);
        });
        return command;
    }

    private static Command Refresh(ServiceGlobals globals)
    {
        Argument<string> pool = PoolArgument();
        var command = new ServiceCommand("pool-refresh", "Adopt new image files in the pool's directory") { pool };
        command.SetService(globals, r => async client =>
        {
            string name = r.GetValue(pool)!;
            PoolRefreshResult result = await client.RefreshPoolAsync(await client.GetPoolPathAsync(name).ConfigureAwait(false)).ConfigureAwait(false);
            if (ServiceGlobals.IsJson(r))
            {
                ServiceOutput.WriteJson(globals.Context, result);
                return ExitCodes.Ok;
            }

            globals.Context.Out.WriteLine($"Pool {name} refreshed");
            foreach (string file in result.Adopted)
            {
                globals.Context.Out.WriteLine($"  adopted {file}");
            }

            foreach (PoolProblem problem in result.Problems)
            {
                globals.Context.Out.WriteLine($"  left alone {problem.File}: {problem.Message}");
            }

            return ExitCodes.Ok;
        });
        return command;
    }

    /// <summary>After a change: virsh's one-line message, or the pool's new state as JSON.</summary>
    private static async Task<int> Done(CliContext context, ParseResult r, StorageClient client, string poolPath, string message)
    {
        if (ServiceGlobals.IsJson(r))
        {
            ServiceOutput.WriteJson(context, await client.GetPoolInfoAsync(poolPath).ConfigureAwait(false));
        }
        else
        {
            context.Out.WriteLine(message);
        }

        return ExitCodes.Ok;
    }
}
