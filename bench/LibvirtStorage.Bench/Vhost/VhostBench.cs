using System.Diagnostics;
using System.Globalization;

namespace LibvirtStorage.Bench.Vhost;

/// <summary>
/// <c>LibvirtStorage.Bench vhost</c>: lvstor-vhost-blk against qemu-storage-daemon through the same C# front-end,
/// on fully allocated raw and qcow2 images (so the figures are I/O, not allocation), plus a host fio ceiling and
/// optional fresh-qcow2 write rows. Both back-ends serve their own copy of each image and stay up together; per
/// row the side that runs first alternates.
/// </summary>
internal sealed class VhostBench(BenchOptions options, QemuImg qemu)
{
    private const int ServedQueues = 2;
    private readonly List<string> _commands = [];

    public List<VhostRow> Rows { get; } = [];

    public IReadOnlyList<string> CommandLog => [.. qemu.CommandLog, .. _commands];

    private TimeSpan Warmup => TimeSpan.FromSeconds(options.VhostWarmupSeconds);

    private TimeSpan Duration => TimeSpan.FromSeconds(options.VhostSeconds);

    public void RunAll()
    {
        string dll = options.OursDll ?? BuildOurBackend();
        Directory.CreateDirectory(options.ScratchDir);
        var ceilings = new Dictionary<string, double?>();
        int rowNumber = 0;
        foreach (string format in new[] { "raw", "qcow2" })
        {
            var patterns = VhostPattern.Standard().Where(p => options.Selects(p.Name(format))).ToList();
            if (patterns.Count == 0)
                continue;
            string oursImage = CreateAllocated(format, "ours"), qsdImage = CreateAllocated(format, "qsd");
            try
            {
                using BackendProcess ours = StartOurs(dll, oursImage, format, "ours.sock");
                using BackendProcess qsd = StartQsd(qsdImage, format, "qsd.sock");
                foreach (VhostPattern pattern in patterns)
                {
                    bool oursFirst = rowNumber++ % 2 == 0;
                    (VhostMeasurement? o, VhostMeasurement? q, string? note) = MeasureBoth(ours, qsd, pattern, oursFirst);
                    string key = pattern.Name("");
                    if (!options.SkipFio && FioCeiling.Available && !ceilings.ContainsKey(key))
                    {
                        // The ceiling runs on the raw copy (writing into a qcow2 file would corrupt it); it serves both formats.
                        string ceilingFile = format == "raw" ? oursImage : CreateAllocated("raw", "fio");
                        var fio = FioCeiling.Run(ceilingFile, options.ImageSize, pattern, Warmup, Duration, _commands);
                        ceilings[key] = fio is { } f ? (pattern.Unit == Unit.Iops ? f.Iops : f.MibPerSecond) : null;
                    }

                    Add(new VhostRow(pattern.Name(format), pattern.Unit, o, q, ceilings.GetValueOrDefault(key), Load1(), note));
                }
            }
            finally
            {
                File.Delete(oursImage);
                File.Delete(qsdImage);
                File.Delete(Path.Combine(options.ScratchDir, "fio.raw"));
            }
        }

        if (!options.SkipFresh)
            RunFreshRows(dll);
    }

    /// <summary>Writes into a just-created qcow2: every cluster is allocated during the run (each side gets its own
    /// new image and a back-end started for it).</summary>
    private void RunFreshRows(string dll)
    {
        VhostPattern[] fresh =
        [
            new("randwrite", LibvirtStorage.Vhost.Frontend.BlkRequestType.Write, 4096, true, 32, 1),
            new("seqwrite", LibvirtStorage.Vhost.Frontend.BlkRequestType.Write, 1 << 20, false, 8, 1),
        ];
        foreach (VhostPattern pattern in fresh.Where(p => options.Selects(p.Name("qcow2-fresh"))))
        {
            VhostMeasurement? Side(bool isOurs)
            {
                string image = Path.Combine(options.ScratchDir, isOurs ? "fresh-ours.qcow2" : "fresh-qsd.qcow2");
                qemu.Run(["create", "-q", "-f", "qcow2", image, options.ImageSize.ToString(CultureInfo.InvariantCulture)], out _);
                try
                {
                    using BackendProcess backend = isOurs ? StartOurs(dll, image, "qcow2", "fresh.sock") : StartQsd(image, "qcow2", "fresh.sock");
                    // No warm-up: the first writes are the allocating ones this row is about.
                    return VhostMeasurement.Run(backend, pattern, TimeSpan.Zero, Duration);
                }
                finally
                {
                    File.Delete(image);
                }
            }

            VhostMeasurement? o = null, q = null;
            string? note = null;
            try
            {
                o = Side(isOurs: true);
                q = Side(isOurs: false);
            }
            catch (InvalidOperationException e)
            {
                note = e.Message;
            }

            Add(new VhostRow(pattern.Name("qcow2-fresh"), pattern.Unit, o, q, null, Load1(), note ?? "no warm-up; new image per side"));
        }
    }

    private (VhostMeasurement? Ours, VhostMeasurement? Qsd, string? Note) MeasureBoth(BackendProcess ours, BackendProcess qsd, VhostPattern pattern, bool oursFirst)
    {
        var oursRuns = new List<VhostMeasurement>();
        var qsdRuns = new List<VhostMeasurement>();
        string? note = null;
        for (int i = 0; i < options.Repeat; i++)
        {
            foreach (bool isOurs in oursFirst ? new[] { true, false } : [false, true])
            {
                try
                {
                    (isOurs ? oursRuns : qsdRuns).Add(VhostMeasurement.Run(isOurs ? ours : qsd, pattern, Warmup, Duration));
                }
                catch (Exception e) when (e is InvalidOperationException or IOException or TimeoutException or System.Net.Sockets.SocketException)
                {
                    BackendProcess side = isOurs ? ours : qsd;
                    note = $"{(isOurs ? "ours" : "QSD")} failed: {e.Message}";
                    Console.Error.WriteLine($"{side.Name} failed on {pattern.Name("")}: {e}\n{side.Log}");
                }
            }
        }

        long failed = oursRuns.Sum(r => r.Failed) + qsdRuns.Sum(r => r.Failed);
        if (failed > 0)
            note = $"{failed} requests completed with an error status; {note}";
        if (options.Repeat > 1)
            note = $"{Spread(oursRuns, pattern.Unit)} / {Spread(qsdRuns, pattern.Unit)} spread (ours / QSD){(note is null ? "" : "; " + note)}";
        return (Median(oursRuns, pattern.Unit), Median(qsdRuns, pattern.Unit), note);
    }

    private static VhostMeasurement? Median(List<VhostMeasurement> runs, Unit unit) =>
        runs.Count == 0 ? null : runs.OrderBy(r => r.Rate(unit)).ElementAt(runs.Count / 2);

    private static string Spread(List<VhostMeasurement> runs, Unit unit)
    {
        if (runs.Count < 2)
            return "-";
        double min = runs.Min(r => r.Rate(unit)), max = runs.Max(r => r.Rate(unit));
        return ((max - min) / Median(runs, unit)!.Rate(unit)).ToString("0%", CultureInfo.InvariantCulture);
    }

    private void Add(VhostRow row)
    {
        if (Rows.Count == 0)
            VhostReport.PrintHeader(Console.Out);
        Rows.Add(row);
        VhostReport.PrintRow(Console.Out, row);
    }

    private BackendProcess StartOurs(string dll, string image, string format, string socket)
    {
        BackendProcess p = BackendProcess.StartOurs(dll, image, format, Path.Combine(options.ScratchDir, socket), ServedQueues, options.OursArgs);
        Remember(p.CommandLine);
        return p;
    }

    private BackendProcess StartQsd(string image, string format, string socket)
    {
        BackendProcess p = BackendProcess.StartQsd(image, format, Path.Combine(options.ScratchDir, socket), ServedQueues, options.QsdAio);
        Remember(p.CommandLine);
        return p;
    }

    private void Remember(string commandLine)
    {
        if (!_commands.Contains(commandLine))
            _commands.Add(commandLine);
    }

    private string CreateAllocated(string format, string side)
    {
        string path = Path.Combine(options.ScratchDir, $"{side}.{format}");
        if (!File.Exists(path))
            qemu.Run(["create", "-q", "-f", format, "-o", "preallocation=full", path, options.ImageSize.ToString(CultureInfo.InvariantCulture)], out _);
        return path;
    }

    private static string Load1() => MachineInfo.ReadFirstLine("/proc/loadavg").Split(' ')[0];

    /// <summary>Builds lvstor-vhost-blk in Release (a no-op when up to date) and returns its dll.</summary>
    private static string BuildOurBackend()
    {
        string root = AppContext.BaseDirectory;
        while (!File.Exists(Path.Combine(root, "LibvirtStorage.sln")))
            root = Path.GetDirectoryName(root.TrimEnd('/')) ?? throw new InvalidOperationException("LibvirtStorage.sln not found above the bench");
        string project = Path.Combine(root, "src", "lvstor-vhost-blk");
        var info = new ProcessStartInfo("dotnet", ["build", "-c", "Release", "--nologo", "-v", "q", project]) { UseShellExecute = false, RedirectStandardOutput = true };
        using Process build = Process.Start(info) ?? throw new InvalidOperationException("could not start dotnet build");
        string output = build.StandardOutput.ReadToEnd();
        build.WaitForExit();
        if (build.ExitCode != 0)
            throw new InvalidOperationException($"dotnet build -c Release src/lvstor-vhost-blk failed:\n{output}");
        return Path.Combine(project, "bin", "Release", "net10.0", "lvstor-vhost-blk.dll");
    }
}
