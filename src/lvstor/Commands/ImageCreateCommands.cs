using System.CommandLine;
using LibvirtStorage.Images;

namespace LibvirtStorage.Cli.Commands;

/// <summary><c>lvstor image create</c> and <c>resize</c>.</summary>
internal static class ImageCreateCommands
{
    public static void Add(Command image, CliContext context)
    {
        image.Subcommands.Add(Create(context));
        image.Subcommands.Add(Resize(context));
    }

    private static Command Create(CliContext context)
    {
        Option<string?> format = CommonOptions.Format("Format of the new image (default qcow2)");
        var backing = new Option<string?>("--backing", "-b") { Description = "Backing file (relative to the new image's folder)" };
        var backingFormat = new Option<string?>("--backing-format", "-F") { Description = "Format of the backing file (probed when omitted)" };
        var opts = new Option<string[]>("-o") { HelpName = "options", Description = "Options: cluster_size, compat, preallocation, extended_l2, compression_type, refcount_bits, lazy_refcounts", AllowMultipleArgumentsPerToken = false };
        Option<bool> quiet = CommonOptions.Quiet();
        Argument<string> file = CommonOptions.File();
        var size = new Argument<string?>("size") { Description = "Virtual size (e.g. 10G); defaults to the backing file's", Arity = ArgumentArity.ZeroOrOne };
        var command = new Command("create", "Create a new image (qemu-img create)") { format, backing, backingFormat, opts, quiet, file, size };
        command.SetAction(r => CliErrors.Guard(context, () =>
        {
            var options = new ImageCreateOptions { Format = CliParsing.ParseFormat(r.GetValue(format)) ?? ImageFormat.Qcow2 };
            options = CliParsing.ApplyCreateOptions(options, r.GetValue(opts));
            string path = r.GetValue(file)!;
            if (r.GetValue(size) is string s)
            {
                options = options with { Size = CliParsing.ParseSize(s) };
            }

            if (r.GetValue(backing) is string b && b.Length > 0)
            {
                options = options with { BackingFile = b };
            }

            if (r.GetValue(backingFormat) is string bf)
            {
                options = options with { BackingFormat = CliParsing.ParseFormat(bf) };
            }

            if (options.BackingFile is string bfile && options.BackingFormat is null)
            {
                string resolved = ImageOpener.ResolveBackingPath(path, bfile);
                if (!File.Exists(resolved))
                {
                    throw new CliUsageException($"backing file '{bfile}' does not exist (looked for {resolved})");
                }

                options = options with { BackingFormat = ImageOpener.Probe(resolved) };
            }

            ImageOpener.Create(path, options);
            if (!r.GetValue(quiet))
            {
                context.Out.WriteLine(Describe(path, options));
            }

            return 0;
        }));
        return command;
    }

    private static string Describe(string path, ImageCreateOptions o)
    {
        string size = o.Size is long s ? $" size={s}" : string.Empty;
        if (o.Format == ImageFormat.Raw)
        {
            return $"Formatting '{path}', fmt=raw{size}";
        }

        string backing = o.BackingFile is null ? string.Empty : $" backing_file={o.BackingFile} backing_fmt={o.BackingFormat?.ToName()}";
        string onOff(bool v) => v ? "on" : "off";
        return $"Formatting '{path}', fmt=qcow2 cluster_size={o.ClusterSize} extended_l2={onOff(o.ExtendedL2)} " +
            $"compression_type={(o.CompressionType == CompressionType.Zstd ? "zstd" : "zlib")}{size}{backing} " +
            $"lazy_refcounts={onOff(o.LazyRefcounts)} refcount_bits={o.RefcountBits}";
    }

    private static Command Resize(CliContext context)
    {
        Option<string?> format = CommonOptions.Format();
        var shrink = new Option<bool>("--shrink") { Description = "Allow shrinking (refused when the tail holds data)" };
        Option<bool> quiet = CommonOptions.Quiet();
        Argument<string> file = CommonOptions.File();
        var size = new Argument<string>("size") { Description = "New size, or +N / -N relative to the current size" };
        var command = new Command("resize", "Change the virtual size (qemu-img resize)") { format, shrink, quiet, file, size };
        command.SetAction(r => CliErrors.Guard(context, () =>
        {
            string path = r.GetValue(file)!;
            string text = r.GetValue(size)!;
            var options = new ImageOpenOptions { Format = CliParsing.ParseFormat(r.GetValue(format)), OpenBacking = false };
            using IBlockImage image = ImageOpener.Open(path, options);
            long current = image.VirtualSize;
            long target = text[0] switch
            {
                '+' => current + CliParsing.ParseSize(text[1..]),
                '-' => current - CliParsing.ParseSize(text[1..]),
                _ => CliParsing.ParseSize(text),
            };
            if (target < current && !r.GetValue(shrink))
            {
                throw new CliUsageException("use the --shrink option to make an image smaller; make sure the guest no longer uses the tail");
            }

            image.Resize(target);
            image.Flush();
            if (!r.GetValue(quiet))
            {
                context.Out.WriteLine("Image resized.");
            }

            return 0;
        }));
        return command;
    }
}
