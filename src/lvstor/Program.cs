using System.CommandLine;
using LibvirtStorage.Cli.Commands;

namespace LibvirtStorage.Cli;

/// <summary>lvstor: the LibvirtStorage admin tool. Until lvstord exists it drives the image engine directly.</summary>
internal static class Program
{
    private static int Main(string[] args) => Run(args, Console.Out, Console.Error, !Console.IsOutputRedirected);

    /// <summary>Parses and runs one command line; the writers receive all output (tests capture them).</summary>
    internal static int Run(string[] args, TextWriter output, TextWriter error, bool isTerminal)
    {
        var context = new CliContext(output, error, isTerminal);
        RootCommand root = BuildRoot(context);
        var config = new InvocationConfiguration { Output = output, Error = error, EnableDefaultExceptionHandler = false };
        try
        {
            return root.Parse(args).Invoke(config);
        }
        catch (Exception e) when (CliErrors.IsExpected(e))
        {
            error.WriteLine($"lvstor: {CliErrors.Describe(e)}");
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

        var root = new RootCommand("lvstor: LibvirtStorage admin tool (image engine commands, demo).");
        root.Subcommands.Add(image);
        root.Subcommands.Add(DemoCommand.Build(context));
        return root;
    }
}
