using System.CommandLine;

namespace LibvirtStorage.Cli.Commands;

/// <summary>Options shared by several image commands, spelled as qemu-img spells them.</summary>
internal static class CommonOptions
{
    public static Option<string?> Format(string description = "Image format (raw or qcow2); probed when omitted") =>
        new("--format", "-f") { Description = description };

    public static Option<string> Output()
    {
        var option = new Option<string>("--output") { Description = "Output format: human or json", DefaultValueFactory = _ => "human" };
        option.AcceptOnlyFromAmong("human", "json");
        return option;
    }

    public static Option<bool> Json() => new("--json") { Description = "Same as --output=json" };

    public static Option<bool> Progress() => new("--progress", "-p") { Description = "Show a progress bar (on a terminal)" };

    public static Option<bool> ForceShare() => new("--force-share", "-U") { Description = "Open without taking locks (image may be in use)" };

    public static Option<string?> Cache() =>
        new("--cache", "-t") { Description = "Cache mode: writeback (default) or none (O_DIRECT)" };

    public static Option<bool> Quiet() => new("--quiet", "-q") { Description = "Print nothing on success" };

    public static Argument<string> File(string name = "filename") => new(name) { Description = "Image file" };

    public static bool IsJson(ParseResult result, Option<string> output, Option<bool> json) =>
        result.GetValue(json) || result.GetValue(output) == "json";

    public static bool IsDirect(ParseResult result, Option<string?> cache) => result.GetValue(cache) switch
    {
        null or "writeback" or "unsafe" or "writethrough" => false,
        "none" or "directsync" => true,
        string other => throw new CliUsageException($"unknown cache mode '{other}' (use writeback or none)"),
    };
}
