using System.Globalization;

namespace LibvirtStorage.Bench;

/// <summary>Command line of the benchmark: <c>[engine] [--quick] [--size 1G] [--out docs/performance.md] ...</c>.</summary>
internal sealed record BenchOptions
{
    public const string Usage = """
        usage: LibvirtStorage.Bench [engine|jobs|vhost] [options]
          engine               image engine vs qemu-img (the default)
          jobs                 live stream and commit of an --op-size layer: StorageService (in-process, volume
                               exported) vs qemu-storage-daemon over QMP and qemu-img; --out replaces only its
                               section of the file (docs/performance.md)
          vhost                lvstor-vhost-blk vs qemu-storage-daemon through our C# vhost-user front-end
                               (no VM), with a host fio ceiling; --out then names docs/performance-vhost.md
          --quick              fewer requests and a smaller image (a short smoke run)
          --size SIZE          virtual size of the I/O images (default 1G; suffixes K, M, G)
          --op-size SIZE       size of the convert/commit/rebase images and of the jobs' layer (default 1G)
          --count-4k N         requests per 4 KiB row (default 40000)
          --count-64k N        requests per 64 KiB row (default 8192)
          --seconds T          size each strided row so QEMU takes about T s (default 1.5, quick 0.3;
                               0 = use the counts as given); the count stays within 1/4..8x the base
          --dir PATH           scratch folder for images (default /var/tmp/lvstor-bench-PID, removed
                               afterwards; must allow O_DIRECT, so not tmpfs)
          --out PATH           also write the markdown report there (e.g. docs/performance.md)
          --only TEXT          run only rows whose name contains TEXT (repeatable)
          --qemu-aio MODE      qemu-img bench -i: threads (default), native or io_uring
          --skip-io | --skip-ops | --skip-alloc   leave out a section
        jobs options: --repeat N (runs per side, median shown), --qsd-aio MODE, --only TEXT
        vhost options:
          --duration T         measured seconds per run (default 5, quick 1)
          --warmup T           seconds run and discarded before each measurement (default 1.5, quick 0.3)
          --repeat N           runs per side and row; the median is shown (default 1)
          --qsd-aio MODE       qemu-storage-daemon aio= for its file node: io_uring (default) or threads
          --ours-dll PATH      run this lvstor-vhost-blk.dll instead of building src/lvstor-vhost-blk (A/B runs
                               of a prototype)
          --ours-arg ARG       pass ARG to lvstor-vhost-blk too (repeatable; e.g. --ours-arg --parallel-requests=8)
          --skip-fio | --skip-fresh   leave out the fio ceiling or the fresh-qcow2 write rows
        """;

    public string Suite { get; init; } = "engine";

    public bool Quick { get; init; }

    public long ImageSize { get; init; } = 1L << 30;

    public long OperationImageSize { get; init; } = 1L << 30;

    public int Count4K { get; init; } = 40000;

    public int Count64K { get; init; } = 8192;

    public double TargetSeconds { get; init; } = 1.5;

    public string ScratchDir { get; init; } = $"/var/tmp/lvstor-bench-{Environment.ProcessId}";

    public string? OutputPath { get; init; }

    public IReadOnlyList<string> Only { get; init; } = [];

    public string QemuAio { get; init; } = "threads";

    public bool SkipIo { get; init; }

    public bool SkipOperations { get; init; }

    public bool SkipAllocation { get; init; }

    public double VhostSeconds { get; init; } = 5;

    public double VhostWarmupSeconds { get; init; } = 1.5;

    public int Repeat { get; init; } = 1;

    public string QsdAio { get; init; } = "io_uring";

    public bool SkipFio { get; init; }

    public bool SkipFresh { get; init; }

    public string? OursDll { get; init; }

    public IReadOnlyList<string> OursArgs { get; init; } = [];

    public bool Selects(string rowName) =>
        Only.Count == 0 || Only.Any(o => rowName.Contains(o, StringComparison.OrdinalIgnoreCase));

    /// <summary>Parses the arguments; returns null (after printing why) when they are wrong.</summary>
    public static BenchOptions? Parse(string[] args)
    {
        var options = new BenchOptions();
        var only = new List<string>();
        bool secondsGiven = false;
        bool sizeGiven = false, opSizeGiven = false, count4Given = false, count64Given = false;
        bool durationGiven = false, warmupGiven = false;
        for (int i = 0; i < args.Length; i++)
        {
            string arg = args[i];
            string Next() => i + 1 < args.Length ? args[++i] : throw new FormatException($"{arg} needs a value");
            try
            {
                switch (arg)
                {
                    case "engine" or "jobs" or "vhost":
                        options = options with { Suite = arg };
                        break;
                    case "--quick":
                        options = options with { Quick = true };
                        break;
                    case "--size":
                        options = options with { ImageSize = ParseSize(Next()) };
                        sizeGiven = true;
                        break;
                    case "--op-size":
                        options = options with { OperationImageSize = ParseSize(Next()) };
                        opSizeGiven = true;
                        break;
                    case "--count-4k":
                        options = options with { Count4K = int.Parse(Next(), CultureInfo.InvariantCulture) };
                        count4Given = true;
                        break;
                    case "--count-64k":
                        options = options with { Count64K = int.Parse(Next(), CultureInfo.InvariantCulture) };
                        count64Given = true;
                        break;
                    case "--seconds":
                        options = options with { TargetSeconds = double.Parse(Next(), CultureInfo.InvariantCulture) };
                        secondsGiven = true;
                        break;
                    case "--dir":
                        options = options with { ScratchDir = Next() };
                        break;
                    case "--out":
                        options = options with { OutputPath = Next() };
                        break;
                    case "--only":
                        only.Add(Next());
                        break;
                    case "--qemu-aio":
                        options = options with { QemuAio = Next() };
                        break;
                    case "--skip-io":
                        options = options with { SkipIo = true };
                        break;
                    case "--skip-ops":
                        options = options with { SkipOperations = true };
                        break;
                    case "--skip-alloc":
                        options = options with { SkipAllocation = true };
                        break;
                    case "--duration":
                        options = options with { VhostSeconds = double.Parse(Next(), CultureInfo.InvariantCulture) };
                        durationGiven = true;
                        break;
                    case "--warmup":
                        options = options with { VhostWarmupSeconds = double.Parse(Next(), CultureInfo.InvariantCulture) };
                        warmupGiven = true;
                        break;
                    case "--repeat":
                        options = options with { Repeat = Math.Max(1, int.Parse(Next(), CultureInfo.InvariantCulture)) };
                        break;
                    case "--qsd-aio":
                        options = options with { QsdAio = Next() };
                        break;
                    case "--skip-fio":
                        options = options with { SkipFio = true };
                        break;
                    case "--ours-dll":
                        options = options with { OursDll = Path.GetFullPath(Next()) };
                        break;
                    case "--ours-arg":
                        options = options with { OursArgs = [.. options.OursArgs, Next()] };
                        break;
                    case "--skip-fresh":
                        options = options with { SkipFresh = true };
                        break;
                    case "-h" or "--help":
                        Console.WriteLine(Usage);
                        return null;
                    default:
                        throw new FormatException($"unknown argument '{arg}'");
                }
            }
            catch (FormatException e)
            {
                Console.Error.WriteLine(e.Message);
                Console.Error.WriteLine(Usage);
                return null;
            }
        }

        if (options.Quick)
        {
            options = options with
            {
                ImageSize = sizeGiven ? options.ImageSize : 256L << 20,
                OperationImageSize = opSizeGiven ? options.OperationImageSize : 256L << 20,
                Count4K = count4Given ? options.Count4K : 5000,
                Count64K = count64Given ? options.Count64K : 1000,
                TargetSeconds = secondsGiven ? options.TargetSeconds : 0.3,
                VhostSeconds = durationGiven ? options.VhostSeconds : 1,
                VhostWarmupSeconds = warmupGiven ? options.VhostWarmupSeconds : 0.3,
            };
        }

        return options with { Only = only };
    }

    /// <summary>"4096", "64K", "256M", "1G" to bytes.</summary>
    public static long ParseSize(string text)
    {
        long unit = char.ToUpperInvariant(text[^1]) switch
        {
            'K' => 1L << 10,
            'M' => 1L << 20,
            'G' => 1L << 30,
            _ => 1,
        };
        string digits = unit == 1 ? text : text[..^1];
        return long.Parse(digits, CultureInfo.InvariantCulture) * unit;
    }
}
