using System.CommandLine;
using LibvirtStorage.Cli.Commands;
using LibvirtStorage.Cli.Service;

namespace LibvirtStorage.Cli;

/// <summary>lvstor: the LibvirtStorage admin tool: virsh-like commands against lvstord, plus image engine commands.</summary>
internal static class Program
{
    private static int Main(string[] args) =>
        Run(args, new CliContext(Console.Out, Console.Error, !Console.IsOutputRedirected) { ErrorIsTerminal = !Console.IsErrorRedirected });

    /// <summary>Parses and runs one command line; the writers receive all output (tests capture them).</summary>
    internal static int Run(string[] args, TextWriter output, TextWriter error, bool isTerminal) =>
        Run(args, new CliContext(output, error, isTerminal));

    /// <summary>Parses and runs one command line in <paramref name="context"/>.</summary>
    internal static int Run(string[] args, CliContext context)
    {
        RootCommand root = BuildRoot(context);
        ParseResult parsed = root.Parse(args);
        if (parsed.Errors.Count > 0 && parsed.CommandResult.Command is ServiceCommand)
        {
            // A wrong command line for a service command is a usage error (exit 2), like a bad size.
            foreach (var parseError in parsed.Errors)
            {
                context.Error.WriteLine(ServiceCommand.ErrorPrefix + parseError.Message);
            }

            context.Error.WriteLine($"Try 'lvstor {parsed.CommandResult.Command.Name} --help'.");
            return ExitCodes.Usage;
        }

        // Ctrl-C is handled by the commands that wait for jobs (they cancel the job), not by the parser.
        var config = new InvocationConfiguration { Output = context.Out, Error = context.Error, EnableDefaultExceptionHandler = false, ProcessTerminationTimeout = null };
        try
        {
            return parsed.Invoke(config);
        }
        catch (Exception e) when (CliErrors.IsExpected(e))
        {
            context.Error.WriteLine($"lvstor: {CliErrors.Describe(e)}");
            return 1;
        }
    }

    internal static RootCommand BuildRoot(CliContext context)
    {
        var image = new Command("image", "Create, inspect and transform qcow2 and raw images (like qemu-img).");
        ImageCreateCommands.Add(image, context);
        ImageInspectCommands.Add(image, context);
        ImageCopyCommands.Add(image, context);
        image.Subcommands.Add(ImageBenchCommand.Build(context));

        var root = new RootCommand("lvstor: LibvirtStorage admin tool: pools, volumes, snapshots and jobs of lvstord (virsh-like), image engine commands, demo.");
        var globals = new ServiceGlobals(context);
        root.Options.Add(globals.Bus);
        PoolCommands.Add(root, globals);
        VolumeCommands.Add(root, globals);
        SnapshotCommands.Add(root, globals);
        JobCommands.Add(root, globals);
        LiveJobCommands.Add(root, globals);
        root.Subcommands.Add(StatusCommand.Build(globals));
        root.Subcommands.Add(image);
        root.Subcommands.Add(DemoCommand.Build(context));
        return root;
    }
}
