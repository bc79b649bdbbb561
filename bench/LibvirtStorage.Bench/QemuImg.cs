using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;

namespace LibvirtStorage.Bench;

/// <summary>
/// Runs qemu-img (the peer) and remembers every distinct command line it ran, with file paths shortened
/// to their names, for the report.
/// </summary>
internal sealed partial class QemuImg
{
    private readonly List<string> _commandLog = [];
    private readonly HashSet<string> _seen = new(StringComparer.Ordinal);

    /// <summary>Command lines in the order first used (scratch paths reduced to file names).</summary>
    public IReadOnlyList<string> CommandLog => _commandLog;

    /// <summary>The first line of <c>qemu-img --version</c>.</summary>
    public static string Version()
    {
        string output = RunRaw(["--version"], out _);
        return output.Split('\n', 2)[0].Trim();
    }

    /// <summary>Runs qemu-img with <paramref name="args"/>; throws with its stderr when it fails.</summary>
    /// <returns>Standard output, and the wall-clock time of the whole process.</returns>
    public string Run(IReadOnlyList<string> args, out TimeSpan elapsed, bool log = true)
    {
        if (log)
        {
            Remember(args);
        }

        return RunRaw(args, out elapsed);
    }

    /// <summary>Runs <c>qemu-img bench</c> and returns the time it reports ("Run completed in X seconds.").</summary>
    public TimeSpan Bench(string path, string format, IoPattern pattern, bool direct, string aio)
    {
        var args = new List<string>
        {
            "bench", "-f", format,
            "-c", pattern.Count.ToString(CultureInfo.InvariantCulture),
            "-d", pattern.Depth.ToString(CultureInfo.InvariantCulture),
            "-s", pattern.RequestSize.ToString(CultureInfo.InvariantCulture),
            "-S", pattern.Step.ToString(CultureInfo.InvariantCulture),
            "-o", pattern.Offset.ToString(CultureInfo.InvariantCulture),
            "-t", direct ? "none" : "writeback",
            // aio=native needs O_DIRECT; QEMU refuses it with cache=writeback.
            "-i", direct || aio != "native" ? aio : "threads",
        };
        if (pattern.Write)
        {
            args.Add("-w");
            args.Add($"--pattern={pattern.Fill}");
        }

        args.Add(path);
        string output = Run(args, out _);
        Match match = RunCompleted().Match(output);
        if (!match.Success)
        {
            throw new InvalidOperationException($"unexpected qemu-img bench output: {output}");
        }

        return TimeSpan.FromSeconds(double.Parse(match.Groups[1].Value, CultureInfo.InvariantCulture));
    }

    /// <summary>
    /// Offline stream: <c>qemu-img rebase -b ''</c> copies everything the overlay reads from its backing chain into
    /// it and drops the backing file (O_DIRECT on both: -t none -T none). Used by the operation and job sections.
    /// </summary>
    public TimeSpan Flatten(string overlayPath)
    {
        Run(["rebase", "-t", "none", "-T", "none", "-f", "qcow2", "-b", "", overlayPath], out TimeSpan elapsed);
        return elapsed;
    }

    /// <summary>Offline commit: <c>qemu-img commit -t none</c> of an overlay into its backing file (then emptied, qemu-img's default).</summary>
    public TimeSpan Commit(string overlayPath)
    {
        Run(["commit", "-t", "none", "-f", "qcow2", overlayPath], out TimeSpan elapsed);
        return elapsed;
    }

    /// <summary>
    /// <c>qemu-img compare</c> of two images' guest contents (-T none: what each side wrote must be on disk).
    /// </summary>
    /// <returns>Null when they are identical, else qemu-img's explanation.</returns>
    /// <param name="forceShare">-U: read images another process (an idle export) holds open.</param>
    public string? Compare(string first, string firstFormat, string second, string secondFormat, bool forceShare = false)
    {
        try
        {
            Run(forceShare
                ? ["compare", "-q", "-U", "-f", firstFormat, "-F", secondFormat, first, second]
                : ["compare", "-q", "-f", firstFormat, "-F", secondFormat, first, second], out _);
            return null;
        }
        catch (InvalidOperationException e)
        {
            return e.Message;
        }
    }

    private void Remember(IReadOnlyList<string> args)
    {
        string line = "qemu-img " + string.Join(' ', args.Select(ShortenArgument));
        if (_seen.Add(line))
        {
            _commandLog.Add(line);
        }
    }

    private static string ShortenArgument(string arg)
    {
        if (arg.Length == 0)
        {
            return "''";
        }

        return arg.StartsWith('/') ? Path.GetFileName(arg) : arg;
    }

    private static string RunRaw(IReadOnlyList<string> args, out TimeSpan elapsed)
    {
        var info = new ProcessStartInfo("qemu-img")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (string arg in args)
        {
            info.ArgumentList.Add(arg);
        }

        long began = Stopwatch.GetTimestamp();
        using Process process = Process.Start(info) ?? throw new InvalidOperationException("cannot start qemu-img");
        Task<string> stderr = process.StandardError.ReadToEndAsync();
        string stdout = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        elapsed = Stopwatch.GetElapsedTime(began);
        if (process.ExitCode != 0)
        {
            throw new InvalidOperationException($"qemu-img {string.Join(' ', args)} failed ({process.ExitCode}): {stderr.Result.Trim()}");
        }

        return stdout;
    }

    [GeneratedRegex(@"Run completed in ([0-9.]+) seconds")]
    private static partial Regex RunCompleted();
}
