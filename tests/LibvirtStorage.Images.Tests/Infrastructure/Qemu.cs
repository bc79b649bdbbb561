using System.Globalization;
using System.Text;
using System.Text.Json;

namespace LibvirtStorage.Images.Tests.Infrastructure;

/// <summary>A QEMU tool failed, or did not finish in time.</summary>
internal sealed class QemuToolException(string message) : Exception(message);

/// <summary>The facts of <c>qemu-img check --output=json</c>.</summary>
internal sealed record QemuCheckReport(int ExitCode, long Corruptions, long Leaks, long CheckErrors, long ImageEndOffset, string Json)
{
    public bool IsClean => Corruptions == 0 && Leaks == 0 && CheckErrors == 0 && ExitCode == 0;

    public bool HasNoCorruption => Corruptions == 0 && CheckErrors == 0 && ExitCode is 0 or 3;
}

/// <summary>
/// qemu-img and qemu-io (Debian's qemu-utils) as test oracles, on top of <see cref="QemuTools"/>: create,
/// write with qemu-io, check (parsed JSON), convert to raw, compare, info. Each helper throws
/// <see cref="QemuToolException"/> with the command line and stderr when the tool fails.
/// </summary>
internal static class Qemu
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(120);

    /// <summary>Runs a tool (through <see cref="QemuTools.Run"/>); throws with its command line and stderr on a non-zero exit.</summary>
    public static ToolResult Run(string tool, IReadOnlyList<string> arguments)
    {
        ToolResult r = QemuTools.Run(tool, arguments, Timeout);
        if (r.ExitCode != 0)
        {
            throw new QemuToolException($"{CommandLine(tool, arguments)} exited with {r.ExitCode}\nstderr: {r.StandardError}\nstdout: {Tail(r.StandardOutput)}");
        }

        return r;
    }

    /// <summary>qemu-img with the given arguments; throws on a non-zero exit.</summary>
    public static ToolResult Img(params string[] arguments) => Run("qemu-img", arguments);

    /// <summary>
    /// Runs qemu-io commands (one <c>-c</c> each) on an image. Throws if qemu-io fails or any command
    /// reports a failure (for example "Pattern verification failed").
    /// </summary>
    public static ToolResult Io(string image, string format, IEnumerable<string> commands, bool readOnly = false)
    {
        var args = new List<string> { "-f", format };
        if (readOnly)
        {
            args.Add("-r");
        }

        foreach (string c in commands)
        {
            args.Add("-c");
            args.Add(c);
        }

        args.Add(image);
        ToolResult r = QemuTools.Run("qemu-io", args, Timeout);
        if (r.ExitCode != 0 || r.StandardOutput.Contains("failed", StringComparison.Ordinal) || r.StandardError.Length > 0)
        {
            throw new QemuToolException($"qemu-io on {image} exited with {r.ExitCode}\nstderr: {r.StandardError}\nfailures: {Failures(r.StandardOutput)}");
        }

        return r;
    }

    /// <summary>Creates an image with qemu-img create (-o options joined with commas).</summary>
    public static void Create(string path, string format, long size, string? options = null, string? backing = null, string? backingFormat = null)
    {
        var args = new List<string> { "create", "-q", "-f", format };
        if (backing is not null)
        {
            args.AddRange(["-b", backing, "-F", backingFormat ?? throw new ArgumentNullException(nameof(backingFormat))]);
        }

        if (!string.IsNullOrEmpty(options))
        {
            args.AddRange(["-o", options]);
        }

        args.Add(path);
        if (size >= 0)
        {
            args.Add(size.ToString(CultureInfo.InvariantCulture));
        }

        Run("qemu-img", args);
    }

    /// <summary>qemu-img check --output=json, parsed. Exit codes 0 (clean), 2 (corrupt) and 3 (leaks) are reports, not failures.</summary>
    public static QemuCheckReport Check(string image, string format = "qcow2")
    {
        ToolResult r = QemuTools.Run("qemu-img", ["check", "--output=json", "-f", format, image], Timeout);
        if (r.ExitCode is not (0 or 2 or 3) || r.StandardOutput.Length == 0)
        {
            throw new QemuToolException($"qemu-img check {image} could not check the image (exit {r.ExitCode})\nstderr: {r.StandardError}\nstdout: {r.StandardOutput}");
        }

        using var doc = JsonDocument.Parse(r.StandardOutput);
        JsonElement root = doc.RootElement;
        return new QemuCheckReport(
            r.ExitCode,
            Field(root, "corruptions"),
            Field(root, "leaks"),
            Field(root, "check-errors"),
            Field(root, "image-end-offset"),
            r.StandardOutput);

        static long Field(JsonElement e, string name) => e.TryGetProperty(name, out JsonElement v) ? v.GetInt64() : 0;
    }

    /// <summary>The guest-visible bytes of an image as QEMU reads them (qemu-img convert -O raw).</summary>
    public static byte[] ReadAll(string image, string format, string scratchDirectory)
    {
        string raw = Path.Combine(scratchDirectory, $"qemu-view-{Guid.NewGuid():N}.raw");
        try
        {
            Img("convert", "-f", format, "-O", "raw", image, raw);
            return File.ReadAllBytes(raw);
        }
        finally
        {
            File.Delete(raw);
        }
    }

    /// <summary>qemu-img compare: true when both images hold the same guest data.</summary>
    public static bool Compare(string a, string aFormat, string b, string bFormat, out string output)
    {
        ToolResult r = QemuTools.Run("qemu-img", ["compare", "-f", aFormat, "-F", bFormat, a, b], Timeout);
        if (r.ExitCode is not (0 or 1))
        {
            throw new QemuToolException($"qemu-img compare {a} {b} failed (exit {r.ExitCode})\nstderr: {r.StandardError}");
        }

        output = r.AllOutput;
        return r.ExitCode == 0;
    }

    /// <summary>The JSON of qemu-img info.</summary>
    public static JsonDocument Info(string image) =>
        JsonDocument.Parse(Img("info", "--output=json", "-U", image).StandardOutput);

    private static string Failures(string stdout)
    {
        var sb = new StringBuilder();
        int n = 0;
        foreach (string line in stdout.Split('\n'))
        {
            if (line.Contains("failed", StringComparison.Ordinal) && n++ < 10)
            {
                sb.AppendLine(line);
            }
        }

        return n == 0 ? "(none reported)" : sb.Append(CultureInfo.InvariantCulture, $"({n} failure lines)").ToString();
    }

    private static string CommandLine(string tool, IEnumerable<string> arguments) => tool + " " + string.Join(' ', arguments);

    private static string Tail(string s) => s.Length <= 2000 ? s : s[^2000..];
}
