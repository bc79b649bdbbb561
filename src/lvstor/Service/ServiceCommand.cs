using System.CommandLine;
using LibvirtStorage.Client;

namespace LibvirtStorage.Cli.Service;

/// <summary>A command that talks to lvstord: usage errors exit 2, service errors exit with the kind's code.</summary>
internal sealed class ServiceCommand(string name, string description) : Command(name, description)
{
    /// <summary>Prefix of every error line on stderr.</summary>
    public const string ErrorPrefix = "lvstor: error: ";

    /// <summary>
    /// Sets the action: <paramref name="prepare"/> checks the arguments (a <see cref="CliUsageException"/> exits 2
    /// before any connection), then the returned body runs against a connected client.
    /// </summary>
    public void SetService(ServiceGlobals globals, Func<ParseResult, Func<StorageClient, Task<int>>> prepare)
    {
        Options.Add(globals.JsonOption());
        SetAction(r => Run(globals, r, prepare));
    }

    private static int Run(ServiceGlobals globals, ParseResult r, Func<ParseResult, Func<StorageClient, Task<int>>> prepare)
    {
        CliContext context = globals.Context;
        try
        {
            Func<StorageClient, Task<int>> body = prepare(r);
            // Off the caller's synchronization context: the command blocks until the async calls finish.
            return Task.Run(() => RunAsync(r.GetValue(globals.Bus), body)).GetAwaiter().GetResult();
        }
        catch (CliUsageException e)
        {
            context.Error.WriteLine(ErrorPrefix + e.Message);
            return ExitCodes.Usage;
        }
        catch (StorageClientException e)
        {
            context.Error.WriteLine(ErrorPrefix + e.Message);
            return ExitCodes.For(e.Kind);
        }
        catch (JobInterruptedException e)
        {
            context.Error.WriteLine(ErrorPrefix + e.Message);
            return ExitCodes.Interrupted;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // The local file of vol-upload / vol-download.
            context.Error.WriteLine(ErrorPrefix + e.Message);
            return ExitCodes.Error;
        }
    }

    private static async Task<int> RunAsync(string? bus, Func<StorageClient, Task<int>> body)
    {
        using StorageClient client = await StorageClient.ConnectAsync(bus).ConfigureAwait(false);
        return await body(client).ConfigureAwait(false);
    }
}

/// <summary>Options every service command shares (--bus is recursive on the root; --json on each command).</summary>
internal sealed class ServiceGlobals(CliContext context)
{
    public CliContext Context { get; } = context;

    public Option<string?> Bus { get; } = new("--bus")
    {
        Description = "D-Bus address of lvstord's bus (default: $LVSTOR_BUS_ADDRESS, else the system bus)",
        HelpName = "ADDRESS",
        Recursive = true,
    };

    public Option<bool> JsonOption() => new("--json") { Description = "Print JSON (stable snake_case fields) for scripts" };

    /// <summary>Whether --json was given to the command being run.</summary>
    public static bool IsJson(ParseResult r) =>
        r.CommandResult.Command.Options.OfType<Option<bool>>().FirstOrDefault(o => o.Name == "--json") is { } o && r.GetValue(o);
}

/// <summary>Ctrl-C during a job: the job was cancelled and has ended.</summary>
internal sealed class JobInterruptedException(string message) : Exception(message);
