using System.Text.Encodings.Web;
using System.Text.Json;
using Spectre.Console;
using Spectre.Console.Rendering;

namespace LibvirtStorage.Cli.Service;

/// <summary>How service commands print: JSON with stable snake_case fields, or Spectre.Console tables like virsh's.</summary>
internal static class ServiceOutput
{
    public static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = true,
        Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };

    public static void WriteJson<T>(CliContext context, T value) =>
        context.Out.WriteLine(JsonSerializer.Serialize(value, Json));

    /// <summary>A Spectre console over the command's stdout: colours only on a terminal, wide enough not to wrap paths in pipes.</summary>
    public static IAnsiConsole Console(CliContext context)
    {
        IAnsiConsole console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Ansi = context.IsTerminal ? AnsiSupport.Detect : AnsiSupport.No,
            ColorSystem = context.IsTerminal ? ColorSystemSupport.Detect : ColorSystemSupport.NoColors,
            Interactive = InteractionSupport.No,
            Out = new AnsiConsoleOutput(context.Out),
        });
        if (!context.IsTerminal)
        {
            console.Profile.Width = 240;
        }

        return console;
    }

    /// <summary>A table with virsh's plain look: a header, a rule, one line per row.</summary>
    public static Table Table(params string[] columns)
    {
        var table = new Table { Border = TableBorder.Simple, ShowHeaders = true };
        foreach (string column in columns)
        {
            table.AddColumn(new TableColumn(new Text(column)) { NoWrap = true });
        }

        return table;
    }

    public static void AddRow(Table table, params string[] cells) =>
        table.AddRow(cells.Select(c => (IRenderable)new Text(c)).ToArray());

    /// <summary>"Key:   value" lines like virsh's pool-info and vol-info.</summary>
    public static void WriteFields(CliContext context, IEnumerable<(string Key, string Value)> fields)
    {
        var list = fields.ToList();
        int width = list.Max(f => f.Key.Length) + 2;
        foreach ((string key, string value) in list)
        {
            context.Out.WriteLine((key + ":").PadRight(width) + value);
        }
    }

    public static string YesNo(bool value) => value ? "yes" : "no";
}
