using LibvirtStorage.Images;

namespace LibvirtStorage.Bench;

/// <summary>One row of the I/O matrix.</summary>
internal sealed record IoCase(ImageKind Image, bool Write, int RequestSize, int Depth, bool Direct, AccessOrder Order = AccessOrder.Strided)
{
    public string Name =>
        $"{(Order == AccessOrder.Random ? "rand" : "seq")}{(Write ? "write" : "read")} {RequestSize / 1024}K QD{Depth} " +
        $"{(Direct ? "none" : "writeback")} {Image.ToString().ToLowerInvariant()}";
}

/// <summary>
/// The image-I/O section: every strided row runs qemu-img bench and our engine on the same file with the
/// same -s/-S/-o/-c/-d; rows on an empty or overlay image recreate it before each side. Which side
/// goes first alternates from row to row so neither always gets the warmer page cache.
/// </summary>
internal sealed class IoRows
{
    private const byte WriteFill = 165;
    private const string StridedSection = "I/O (strided, same pattern as qemu-img bench)";
    private const string RandomSection = "I/O (random, ours only)";
    private readonly BenchOptions _options;
    private readonly QemuImg _qemu;
    private readonly ScratchImages _images;
    private readonly Action<ResultRow> _report;
    private int _rowNumber;

    public IoRows(BenchOptions options, QemuImg qemu, ScratchImages images, Action<ResultRow> report)
    {
        _options = options;
        _qemu = qemu;
        _images = images;
        _report = report;
    }

    public static IEnumerable<IoCase> StridedCases()
    {
        foreach (ImageKind image in new[] { ImageKind.Fresh, ImageKind.Allocated, ImageKind.Overlay })
        {
            foreach (bool direct in new[] { true, false })
            {
                foreach (bool write in new[] { false, true })
                {
                    foreach (int size in new[] { 4096, 65536 })
                    {
                        foreach (int depth in new[] { 1, 32 })
                        {
                            yield return new IoCase(image, write, size, depth, direct);
                        }
                    }
                }
            }
        }
    }

    public static IEnumerable<IoCase> RandomCases()
    {
        foreach (bool write in new[] { false, true })
        {
            foreach (int depth in new[] { 1, 32 })
            {
                yield return new IoCase(ImageKind.Allocated, write, 4096, depth, Direct: true, AccessOrder.Random);
            }
        }

        yield return new IoCase(ImageKind.Fresh, true, 4096, 1, Direct: true, AccessOrder.Random);
        yield return new IoCase(ImageKind.Fresh, true, 4096, 32, Direct: true, AccessOrder.Random);
    }

    public void RunAll()
    {
        foreach (IoCase c in StridedCases().Where(c => _options.Selects(c.Name)))
        {
            RunGuarded(c, withPeer: true);
        }

        foreach (IoCase c in RandomCases().Where(c => _options.Selects(c.Name)))
        {
            RunGuarded(c, withPeer: false);
        }
    }

    /// <summary>One failing row (either side) is reported as such and the run goes on.</summary>
    private void RunGuarded(IoCase c, bool withPeer)
    {
        try
        {
            Run(c, withPeer);
        }
        catch (Exception e) when (e is InvalidOperationException or IOException or ImageException)
        {
            string section = withPeer ? StridedSection : RandomSection;
            _report(new ResultRow(section, c.Name, c.RequestSize < 65536 ? Unit.Iops : Unit.MibPerSecond, null, null, $"failed: {e.Message}"));
        }
    }

    private void Run(IoCase c, bool withPeer)
    {
        // an empty or overlay image is recreated for every side of every row (cheap), so a read row never
        // sees what an earlier write row left behind; the allocated image is shared and only overwritten
        bool recreate = c.Image != ImageKind.Allocated;
        IoPattern pattern = PatternFor(c);
        if (withPeer && _options.TargetSeconds > 0)
        {
            pattern = Calibrate(c, pattern, recreate);
        }

        bool qemuFirst = _rowNumber++ % 2 == 0;
        TimeSpan? qemuTime = null;
        TimeSpan ours;
        if (withPeer && qemuFirst)
        {
            qemuTime = RunQemu(c, pattern, recreate);
        }

        ours = RunOurs(c, pattern, recreate);
        if (withPeer && !qemuFirst)
        {
            qemuTime = RunQemu(c, pattern, recreate);
        }

        string section = withPeer ? StridedSection : RandomSection;
        _report(ResultRow.FromRun(section, c.Name, pattern, ours, qemuTime) with
        {
            Note = withPeer ? $"-c {pattern.Count}" : $"-c {pattern.Count}; qemu-img bench has no random mode",
        });
    }

    /// <summary>
    /// Sizes the row so QEMU's side takes about <see cref="BenchOptions.TargetSeconds"/>: a pilot qemu-img bench
    /// run with an eighth of the base count gives its rate. The count stays between a quarter and eight times
    /// the base, and allocating writes (fresh or overlay) never exceed the base, so both sides always run the
    /// same count and a slow allocator cannot turn one row into minutes.
    /// </summary>
    private IoPattern Calibrate(IoCase c, IoPattern pattern, bool recreate)
    {
        int baseCount = pattern.Count;
        IoPattern pilot = pattern with { Count = Math.Max(256, baseCount / 8) };
        double seconds = Math.Max(RunQemu(c, pilot, recreate).TotalSeconds, 1e-4);
        double wanted = pilot.Count / seconds * _options.TargetSeconds;
        int max = c.Write && c.Image != ImageKind.Allocated ? baseCount : baseCount * 8;
        int count = (int)Math.Clamp(wanted, baseCount / 4, max);
        return pattern with { Count = count };
    }

    private TimeSpan RunQemu(IoCase c, IoPattern pattern, bool recreate)
    {
        string path = _images.Prepare(c.Image, recreate);
        return _qemu.Bench(path, "qcow2", pattern, c.Direct, _options.QemuAio);
    }

    private TimeSpan RunOurs(IoCase c, IoPattern pattern, bool recreate)
    {
        string path = _images.Prepare(c.Image, recreate);
        using IBlockImage image = ImageOpener.Open(path, new ImageOpenOptions { Direct = c.Direct, Format = ImageFormat.Qcow2 });
        return EngineIoRunner.Run(image, pattern);
    }

    private IoPattern PatternFor(IoCase c)
    {
        int count = c.RequestSize < 65536 ? _options.Count4K : _options.Count64K;
        return new IoPattern(count, c.RequestSize, c.RequestSize, 0, c.Depth, c.Write, WriteFill, c.Order);
    }
}
