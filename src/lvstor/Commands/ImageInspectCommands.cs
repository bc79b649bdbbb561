using System.CommandLine;
using LibvirtStorage.Images;
using LibvirtStorage.Images.Operations;
using LibvirtStorage.Images.Qcow2;

namespace LibvirtStorage.Cli.Commands;

/// <summary><c>lvstor image info</c>, <c>map</c>, <c>check</c> and <c>compare</c>: commands that only read.</summary>
internal static class ImageInspectCommands
{
    /// <summary>qemu-img check's exit codes.</summary>
    public const int CheckClean = 0;
    public const int CheckError = 1;
    public const int CheckCorrupt = 2;
    public const int CheckLeaks = 3;
    public const int CheckUnsupported = 63;

    public static void Add(Command image, CliContext context)
    {
        image.Subcommands.Add(Info(context));
        image.Subcommands.Add(Map(context));
        image.Subcommands.Add(Check(context));
        image.Subcommands.Add(Compare(context));
    }

    private static Command Info(CliContext context)
    {
        Option<string?> format = CommonOptions.Format();
        Option<string> output = CommonOptions.Output();
        Option<bool> json = CommonOptions.Json();
        Option<bool> share = CommonOptions.ForceShare();
        var chain = new Option<bool>("--backing-chain") { Description = "Describe every image of the backing chain" };
        Argument<string> file = CommonOptions.File();
        var command = new Command("info", "Show facts about an image (qemu-img info)") { format, output, json, share, chain, file };
        command.SetAction(r => CliErrors.Guard(context, () =>
        {
            string path = r.GetValue(file)!;
            ImageFormat? fmt = CliParsing.ParseFormat(r.GetValue(format));
            bool asJson = CommonOptions.IsJson(r, output, json);
            if (r.GetValue(chain))
            {
                IReadOnlyList<ImageInfo> infos = ImageInfo.GetChain(path, fmt, r.GetValue(share));
                if (asJson)
                {
                    context.Out.Write(ImageInfo.ToJson(infos));
                    return 0;
                }

                for (int i = 0; i < infos.Count; i++)
                {
                    context.Out.Write((i > 0 ? "\n" : string.Empty) + infos[i].ToHuman());
                }

                return 0;
            }

            ImageInfo info = ImageInfo.Get(path, fmt, r.GetValue(share));
            context.Out.Write(asJson ? info.ToJson() : info.ToHuman());
            return 0;
        }));
        return command;
    }

    private static Command Map(CliContext context)
    {
        Option<string?> format = CommonOptions.Format();
        Option<string> output = CommonOptions.Output();
        Option<bool> json = CommonOptions.Json();
        Option<bool> share = CommonOptions.ForceShare();
        var start = new Option<string?>("--start-offset", "-s") { Description = "First guest offset to map" };
        var length = new Option<string?>("--max-length", "-l") { Description = "Bytes to map" };
        Argument<string> file = CommonOptions.File();
        var command = new Command("map", "Show the allocation of the whole backing chain (qemu-img map)") { format, output, json, share, start, length, file };
        command.SetAction(r => CliErrors.Guard(context, () =>
        {
            var options = new ImageOpenOptions { ReadOnly = true, Format = CliParsing.ParseFormat(r.GetValue(format)), Lock = !r.GetValue(share) };
            using IBlockImage image = ImageOpener.Open(r.GetValue(file)!, options);
            long from = r.GetValue(start) is string s ? CliParsing.ParseSize(s) : 0;
            long? max = r.GetValue(length) is string l ? CliParsing.ParseSize(l) : null;
            IReadOnlyList<MapExtent> extents = ImageMap.Get(image, from, max);
            context.Out.Write(CommonOptions.IsJson(r, output, json) ? ImageMap.ToJson(extents) : ImageMap.ToHuman(extents));
            return 0;
        }));
        return command;
    }

    private static Command Check(CliContext context)
    {
        Option<string?> format = CommonOptions.Format();
        Option<string> output = CommonOptions.Output();
        Option<bool> json = CommonOptions.Json();
        Option<bool> share = CommonOptions.ForceShare();
        Option<bool> quiet = CommonOptions.Quiet();
        var repair = new Option<string?>("--repair", "-r") { Description = "Repair: leaks or all" };
        repair.AcceptOnlyFromAmong("leaks", "all");
        Argument<string> file = CommonOptions.File();
        var command = new Command("check", "Check (and repair) qcow2 metadata (qemu-img check); exit 0 clean, 2 corrupt, 3 leaks") { format, output, json, share, quiet, repair, file };
        command.SetAction(r =>
        {
            try
            {
                string path = r.GetValue(file)!;
                CheckRepair mode = r.GetValue(repair) switch { "leaks" => CheckRepair.Leaks, "all" => CheckRepair.All, _ => CheckRepair.None };
                var options = new ImageOpenOptions
                {
                    ReadOnly = mode == CheckRepair.None,
                    Format = CliParsing.ParseFormat(r.GetValue(format)),
                    OpenBacking = false,
                    Lock = !r.GetValue(share),
                };
                using IBlockImage image = ImageOpener.Open(path, options);
                if (image is not Qcow2Image q)
                {
                    context.Error.WriteLine("lvstor: This image format does not support checks");
                    return CheckUnsupported;
                }

                ImageCheckResult result = q.Check(mode);
                foreach (string message in result.Messages)
                {
                    context.Error.WriteLine(message);
                }

                bool asJson = CommonOptions.IsJson(r, output, json);
                if (asJson)
                {
                    context.Out.Write(CheckReport.ToJson(result, path));
                }
                else if (!r.GetValue(quiet))
                {
                    context.Out.Write(CheckReport.ToHuman(result));
                }

                return result.Corruptions > 0 ? CheckCorrupt : result.Leaks > 0 ? CheckLeaks : CheckClean;
            }
            catch (Exception e) when (CliErrors.IsExpected(e))
            {
                context.Error.WriteLine($"lvstor: {CliErrors.Describe(e)}");
                return CheckError;
            }
        });
        return command;
    }

    private static Command Compare(CliContext context)
    {
        var strict = new Option<bool>("--strict", "-s") { Description = "Images of different sizes differ" };
        Option<bool> share = CommonOptions.ForceShare();
        Argument<string> first = CommonOptions.File("filename1");
        Argument<string> second = CommonOptions.File("filename2");
        var command = new Command("compare", "Compare the disks two images show (qemu-img compare); exit 0 same, 1 different, 2 error") { strict, share, first, second };
        command.SetAction(r =>
        {
            try
            {
                var options = new ImageOpenOptions { ReadOnly = true, Lock = !r.GetValue(share) };
                using IBlockImage a = ImageOpener.Open(r.GetValue(first)!, options);
                using IBlockImage b = ImageOpener.Open(r.GetValue(second)!, options);
                long? diff = ImageCompare.FirstDifference(a, b, r.GetValue(strict));
                if (diff is long at)
                {
                    context.Out.WriteLine($"Content mismatch at offset {at}!");
                    return 1;
                }

                context.Out.WriteLine("Images are identical.");
                return 0;
            }
            catch (Exception e) when (CliErrors.IsExpected(e))
            {
                context.Error.WriteLine($"lvstor: {CliErrors.Describe(e)}");
                return 2;
            }
        });
        return command;
    }
}
