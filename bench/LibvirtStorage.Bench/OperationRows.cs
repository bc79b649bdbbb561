using System.Diagnostics;
using LibvirtStorage.Images;

namespace LibvirtStorage.Bench;

/// <summary>
/// The operation section: convert, commit and rebase on images of the operation size, each side on its
/// own identical inputs made by qemu-img. Both sides are timed by wall clock around the whole job: the
/// qemu-img process from start to exit, ours from the call to its return (open, copy, flush, close).
/// Both use O_DIRECT (qemu-img -t none / -T none; ours Direct=true). Afterwards our result is compared
/// with QEMU's (<c>qemu-img compare</c>): a row whose results differ says so instead of counting as a win.
/// </summary>
internal sealed class OperationRows
{
    private const string Section = "Operations (wall clock, O_DIRECT)";
    private readonly BenchOptions _options;
    private readonly QemuImg _qemu;
    private readonly ScratchImages _images;
    private readonly IEngineOperations _ours;
    private readonly Action<ResultRow> _report;
    private readonly string _dir;

    public OperationRows(BenchOptions options, QemuImg qemu, ScratchImages images, IEngineOperations ours, Action<ResultRow> report)
    {
        _options = options;
        _qemu = qemu;
        _images = images;
        _ours = ours;
        _report = report;
        _dir = Path.Combine(options.ScratchDir, "ops");
        Directory.CreateDirectory(_dir);
    }

    /// <summary>One operation row: how to make its inputs, each side's job, and the file holding the result.</summary>
    private sealed record OperationCase(string Name, Action Prepare, Action Qemu, Action Ours, string ResultPath, string ResultFormat);

    public void RunAll()
    {
        long size = _options.OperationImageSize;
        string sizeText = $"{size >> 20} MiB";
        string source = InDir("source.raw");
        string converted = InDir("converted.qcow2");
        string commitBase = InDir("commit-base.raw");
        string commitTop = InDir("commit-top.qcow2");
        string rebaseBase = InDir("rebase-base.raw");
        string rebaseTop = InDir("rebase-top.qcow2");
        var cases = new[]
        {
            new OperationCase(
                $"convert raw→qcow2 {sizeText} data",
                () =>
                {
                    if (!File.Exists(source))
                    {
                        _images.CreateRawWithData(source, size);
                    }

                    File.Delete(converted);
                },
                () => _qemu.Run(["convert", "-t", "none", "-T", "none", "-f", "raw", "-O", "qcow2", source, converted], out _),
                () => _ours.ConvertRawToQcow2(source, converted),
                converted,
                "qcow2"),
            new OperationCase(
                $"commit {size >> 22} MiB qcow2 → {sizeText} raw",
                () => MakeChain(commitBase, commitTop, size),
                () => _qemu.Commit(commitTop),
                () => _ours.Commit(commitTop),
                commitBase,
                "raw"),
            new OperationCase(
                $"rebase -b '' (flatten) {sizeText} chain",
                () =>
                {
                    if (!File.Exists(rebaseBase))
                    {
                        _images.CreateRawWithData(rebaseBase, size);
                    }

                    _images.CreateOverlay(rebaseTop, rebaseBase);
                    _images.WriteQuarter(rebaseTop, size);
                },
                () => _qemu.Flatten(rebaseTop),
                () => _ours.Flatten(rebaseTop),
                rebaseTop,
                "qcow2"),
        };

        try
        {
            foreach (OperationCase c in cases.Where(c => _options.Selects(c.Name)))
            {
                Measure(c);
            }
        }
        finally
        {
            foreach (string file in Directory.GetFiles(_dir))
            {
                File.Delete(file);
            }
        }
    }

    private string InDir(string name) => Path.Combine(_dir, name);

    private void MakeChain(string basePath, string topPath, long size)
    {
        _images.CreateRawWithData(basePath, size);
        _images.CreateOverlay(topPath, basePath);
        _images.WriteQuarter(topPath, size);
    }

    private void Measure(OperationCase c)
    {
        try
        {
            _report(MeasureCore(c));
        }
        catch (Exception e) when (e is InvalidOperationException or IOException or ImageException)
        {
            _report(new ResultRow(Section, c.Name, Unit.Seconds, null, null, $"failed: {e.Message}"));
        }
    }

    private ResultRow MeasureCore(OperationCase c)
    {
        c.Prepare();
        TimeSpan qemuTime = Time(c.Qemu);
        if (_ours.Unavailable is { } reason)
        {
            return new ResultRow(Section, c.Name, Unit.Seconds, null, qemuTime.TotalSeconds, reason);
        }

        string qemuResult = c.ResultPath + ".qemu";
        File.Move(c.ResultPath, qemuResult, overwrite: true);
        c.Prepare();
        TimeSpan ourTime = Time(c.Ours);
        string? difference = _qemu.Compare(c.ResultPath, c.ResultFormat, qemuResult, c.ResultFormat);
        File.Delete(qemuResult);
        return difference is null
            ? new ResultRow(Section, c.Name, Unit.Seconds, ourTime.TotalSeconds, qemuTime.TotalSeconds, "result identical to QEMU's (qemu-img compare)")
            : new ResultRow(Section, c.Name, Unit.Seconds, null, qemuTime.TotalSeconds, $"ours differs from QEMU's result: {difference}");
    }

    private static TimeSpan Time(Action action)
    {
        long began = Stopwatch.GetTimestamp();
        action();
        return Stopwatch.GetElapsedTime(began);
    }
}
