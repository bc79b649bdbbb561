using LibvirtStorage.Bench.Jobs;

namespace LibvirtStorage.Bench;

/// <summary>
/// The benchmarks behind <c>make bench</c>: <c>engine</c> (our image engine against qemu-img on the same files,
/// writing docs/performance.md), <c>jobs</c> (live stream and commit through the storage service against
/// qemu-storage-daemon and qemu-img, one section of docs/performance.md) and <c>vhost</c> (our vhost-user-blk
/// back-end against qemu-storage-daemon through the C# front-end, writing docs/performance-vhost.md).
/// </summary>
internal static class Program
{
    private static int Main(string[] args)
    {
        BenchOptions? options = BenchOptions.Parse(args);
        if (options is null)
        {
            return args.Contains("--help") || args.Contains("-h") ? 0 : 2;
        }

        var qemu = new QemuImg();
        MachineInfo machine = MachineInfo.Collect(QemuImg.Version());
        if (options.Suite == "vhost")
        {
            return RunVhost(options, qemu, machine);
        }

        if (options.Suite == "jobs")
        {
            return RunJobs(options, qemu, machine);
        }

        Console.WriteLine($"{machine.QemuVersion}; {machine.Runtime}; nproc {machine.Cores}; kernel {machine.Kernel}; load {machine.LoadAtStart}");
        Console.WriteLine($"scratch {options.ScratchDir}; image {options.ImageSize >> 20} MiB; {options.Count4K} x 4K, {options.Count64K} x 64K requests per row");
        Console.WriteLine();

        var rows = new List<ResultRow>();
        string? section = null;
        void Add(ResultRow row)
        {
            if (row.Section != section)
            {
                section = row.Section;
                Console.WriteLine();
                Console.WriteLine($"## {section}");
                Report.PrintHeader(Console.Out);
            }

            rows.Add(row);
            Report.PrintRow(Console.Out, row);
        }

        var images = new ScratchImages(qemu, options.ScratchDir, options.ImageSize);
        IReadOnlyList<AllocationResult> allocations = [];
        try
        {
            if (!options.SkipIo)
            {
                new IoRows(options, qemu, images, Add).RunAll();
            }

            if (!options.SkipOperations)
            {
                new OperationRows(options, qemu, images, new EngineOperations(), Add).RunAll();
            }

            if (!options.SkipAllocation)
            {
                allocations = AllocationCheck.Run(images, options.Quick ? 2000 : 20000);
                Console.WriteLine();
                Console.WriteLine("## Managed allocation per request (warmed image, one thread)");
                foreach (AllocationResult a in allocations)
                {
                    Console.WriteLine($"{a.Name,-66} {a.ThreadBytesPerRequest,8:0.##} B/request (thread)  {a.ProcessBytesPerRequest,8:0.##} B/request (process)");
                }
            }
        }
        finally
        {
            foreach (string file in new[] { images.FreshPath, images.AllocatedPath, images.BasePath, images.OverlayPath })
            {
                File.Delete(file);
            }

            RemoveIfEmpty(Path.Combine(options.ScratchDir, "ops"));
            RemoveIfEmpty(options.ScratchDir);
        }

        if (options.OutputPath is { } output)
        {
            string loadAtEnd = MachineInfo.ReadFirstLine("/proc/loadavg");
            string markdown = Report.Markdown(machine, options, rows, allocations, qemu.CommandLog, loadAtEnd);
            // The jobs section is written by the jobs mode; a rewrite of the engine's tables keeps it.
            if (File.Exists(output) && MarkdownSections.Find(File.ReadAllText(output), JobsReport.Heading) is { } jobs)
            {
                markdown = MarkdownSections.Put(markdown, JobsReport.Heading, jobs, Report.MethodHeading);
            }

            Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(output)) ?? ".");
            File.WriteAllText(output, markdown);
            Console.WriteLine();
            Console.WriteLine($"wrote {output}");
        }

        return 0;
    }

    private static int RunJobs(BenchOptions options, QemuImg qemu, MachineInfo machine)
    {
        string qsdVersion = QsdVersion();
        Console.WriteLine($"{machine.QemuVersion}; {qsdVersion}; {machine.Runtime}; nproc {machine.Cores}; load {machine.LoadAtStart}");
        Console.WriteLine($"scratch {options.ScratchDir}; layer {options.OperationImageSize >> 20} MiB; {options.Repeat} run(s) per side; QSD aio={options.QsdAio}");
        Console.WriteLine();
        Console.WriteLine(JobsReport.Heading);
        JobsReport.PrintHeader(Console.Out);
        var bench = new JobsBench(options, qemu, new ServiceChainJobs());
        try
        {
            bench.RunAllAsync(row => JobsReport.PrintRow(Console.Out, row)).GetAwaiter().GetResult();
        }
        finally
        {
            RemoveIfEmpty(options.ScratchDir);
        }

        if (options.OutputPath is { } output)
        {
            string section = JobsReport.Section(machine, qsdVersion, options, bench.Rows, qemu.CommandLog, bench.CommandLog,
                MachineInfo.ReadFirstLine("/proc/loadavg"));
            string document = File.Exists(output) ? File.ReadAllText(output) : string.Empty;
            Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(output)) ?? ".");
            File.WriteAllText(output, MarkdownSections.Put(document, JobsReport.Heading, section, Report.MethodHeading));
            Console.WriteLine();
            Console.WriteLine($"wrote the jobs section of {output}");
        }

        return 0;
    }

    private static string QsdVersion()
    {
        var info = new System.Diagnostics.ProcessStartInfo("qemu-storage-daemon", ["--version"]) { RedirectStandardOutput = true };
        using System.Diagnostics.Process process = System.Diagnostics.Process.Start(info) ?? throw new InvalidOperationException("cannot start qemu-storage-daemon");
        string first = process.StandardOutput.ReadToEnd().Split('\n', 2)[0].Trim();
        process.WaitForExit();
        return first;
    }

    private static int RunVhost(BenchOptions options, QemuImg qemu, MachineInfo machine)
    {
        Console.WriteLine($"{machine.QemuVersion}; {machine.Runtime}; nproc {machine.Cores}; load {machine.LoadAtStart}");
        Console.WriteLine($"scratch {options.ScratchDir}; image {options.ImageSize >> 20} MiB; warm-up {options.VhostWarmupSeconds} s, measure {options.VhostSeconds} s, QSD aio={options.QsdAio}");
        Console.WriteLine();
        var bench = new Vhost.VhostBench(options, qemu);
        try
        {
            bench.RunAll();
        }
        finally
        {
            RemoveIfEmpty(options.ScratchDir);
        }

        if (options.OutputPath is { } output)
        {
            string markdown = Vhost.VhostReport.Markdown(machine, options, bench.Rows, bench.CommandLog, MachineInfo.ReadFirstLine("/proc/loadavg"));
            Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(output)) ?? ".");
            File.WriteAllText(output, markdown);
            Console.WriteLine();
            Console.WriteLine($"wrote {output}");
        }

        return 0;
    }

    private static void RemoveIfEmpty(string directory)
    {
        if (Directory.Exists(directory) && !Directory.EnumerateFileSystemEntries(directory).Any())
        {
            Directory.Delete(directory);
        }
    }
}
