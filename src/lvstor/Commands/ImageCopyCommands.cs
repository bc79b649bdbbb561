using System.CommandLine;
using LibvirtStorage.Images;
using LibvirtStorage.Images.Operations;

namespace LibvirtStorage.Cli.Commands;

/// <summary><c>lvstor image convert</c>, <c>commit</c> and <c>rebase</c>: commands that copy data.</summary>
internal static class ImageCopyCommands
{
    public static void Add(Command image, CliContext context)
    {
        image.Subcommands.Add(Convert(context));
        image.Subcommands.Add(Commit(context));
        image.Subcommands.Add(Rebase(context));
    }

    private static Command Convert(CliContext context)
    {
        Option<string?> format = CommonOptions.Format("Source format; probed when omitted");
        var outputFormat = new Option<string?>("-O") { HelpName = "format", Description = "Target format: raw or qcow2 (default raw, as qemu-img)" };
        var opts = new Option<string[]>("-o") { HelpName = "options", Description = "Target options (as for create)" };
        var compress = new Option<bool>("--compress", "-c") { Description = "Compress every cluster of the qcow2 target" };
        var sparse = new Option<string?>("--sparse-size", "-S") { Description = "Smallest zero run skipped (default 4k; 0 writes everything)" };
        Option<string?> cache = CommonOptions.Cache();
        Option<bool> progress = CommonOptions.Progress();
        Option<bool> share = CommonOptions.ForceShare();
        Option<bool> quiet = CommonOptions.Quiet();
        Argument<string> source = CommonOptions.File("source");
        Argument<string> target = CommonOptions.File("target");
        var command = new Command("convert", "Copy a whole chain into a new standalone image (qemu-img convert)")
        {
            format, outputFormat, opts, compress, sparse, cache, progress, share, quiet, source, target,
        };
        command.SetAction(r => CliErrors.Guard(context, () =>
        {
            var create = new ImageCreateOptions { Format = CliParsing.ParseFormat(r.GetValue(outputFormat)) ?? ImageFormat.Raw };
            create = CliParsing.ApplyCreateOptions(create, r.GetValue(opts));
            var convert = new ImageConvertOptions
            {
                Compress = r.GetValue(compress),
                SparseSize = r.GetValue(sparse) is string s ? checked((int)CliParsing.ParseSize(s)) : 4096,
                Direct = CommonOptions.IsDirect(r, cache),
            };
            var openOptions = new ImageOpenOptions
            {
                ReadOnly = true,
                Format = CliParsing.ParseFormat(r.GetValue(format)),
                Lock = !r.GetValue(share),
                Direct = convert.Direct,
            };
            using IBlockImage input = ImageOpener.Open(r.GetValue(source)!, openOptions);
            string output = r.GetValue(target)!;
            ProgressDisplay.Run(context, r.GetValue(progress), "convert", p =>
            {
                ImageConvert.Run(input, output, create, convert, p);
                return 0;
            });
            return 0;
        }));
        return command;
    }

    private static Command Commit(CliContext context)
    {
        Option<string?> format = CommonOptions.Format();
        var keep = new Option<bool>("-d") { Description = "Keep the top image's contents (do not empty it)" };
        Option<string?> cache = CommonOptions.Cache();
        Option<bool> progress = CommonOptions.Progress();
        Option<bool> quiet = CommonOptions.Quiet();
        Argument<string> file = CommonOptions.File();
        var command = new Command("commit", "Write the top image's data into its backing file (qemu-img commit)") { format, keep, cache, progress, quiet, file };
        command.SetAction(r => CliErrors.Guard(context, () =>
        {
            var options = new ImageCommitOptions
            {
                Format = CliParsing.ParseFormat(r.GetValue(format)),
                KeepTop = r.GetValue(keep),
                Direct = CommonOptions.IsDirect(r, cache),
            };
            string path = r.GetValue(file)!;
            ProgressDisplay.Run(context, r.GetValue(progress), "commit", p => ImageCommit.Run(path, options, p));
            if (!r.GetValue(quiet))
            {
                context.Out.WriteLine("Image committed.");
            }

            return 0;
        }));
        return command;
    }

    private static Command Rebase(CliContext context)
    {
        Option<string?> format = CommonOptions.Format();
        var backing = new Option<string?>("--backing", "-b") { Description = "New backing file ('' for none: copies all backing data in)" };
        var backingFormat = new Option<string?>("--backing-format", "-F") { Description = "Format of the new backing file (probed when omitted)" };
        var unsafeMode = new Option<bool>("--unsafe", "-u") { Description = "Only rewrite the reference; copy nothing" };
        Option<string?> cache = CommonOptions.Cache();
        Option<bool> progress = CommonOptions.Progress();
        Option<bool> quiet = CommonOptions.Quiet();
        Argument<string> file = CommonOptions.File();
        var command = new Command("rebase", "Change the backing file of a qcow2 image (qemu-img rebase)")
        {
            format, backing, backingFormat, unsafeMode, cache, progress, quiet, file,
        };
        command.SetAction(r => CliErrors.Guard(context, () =>
        {
            if (r.GetResult(backing) is null)
            {
                throw new CliUsageException("rebase needs -b BACKING_FILE (use -b '' to remove the backing file)");
            }

            var options = new ImageRebaseOptions
            {
                Format = CliParsing.ParseFormat(r.GetValue(format)),
                Unsafe = r.GetValue(unsafeMode),
                Direct = CommonOptions.IsDirect(r, cache),
            };
            string path = r.GetValue(file)!;
            string? newBacking = r.GetValue(backing);
            ImageFormat? newFormat = CliParsing.ParseFormat(r.GetValue(backingFormat));
            ProgressDisplay.Run(context, r.GetValue(progress), "rebase", p => ImageRebase.Run(path, newBacking, newFormat, options, p));
            return 0;
        }));
        return command;
    }
}
