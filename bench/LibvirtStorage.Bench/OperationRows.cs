using System.Diagnostics;

namespace LibvirtStorage.Bench;

/// <summary>
/// The operation section: convert, commit and rebase on images of the operation size, each side on its
/// own identical inputs made by qemu-img. Both sides are timed by wall clock around the whole job: the
/// qemu-img process from start to exit, ours from the call to its return (open, copy, flush, close).
/// Both use O_DIRECT (qemu-img -t none / -T none; ours Direct=true).
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

    public void RunAll()
    {
        long size = _options.OperationImageSize;
        string sizeText = $"{size >> 20} MiB";
        string source = Path.Combine(_dir, "source.raw");
        string target = Path.Combine(_dir, "converted.qcow2");
        string name = $"convert raw→qcow2 {sizeText} data";
        if (_options.Selects(name))
        {
            _images.CreateRawWithData(source, size);
            Measure(
                name,
                () => _qemu.Run(["convert", "-t", "none", "-T", "none", "-f", "raw", "-O", "qcow2", source, target], out _),
                () => _ours.ConvertRawToQcow2(source, target),
                before: () => File.Delete(target));
        }

        string commitBase = Path.Combine(_dir, "commit-base.raw");
        string commitTop = Path.Combine(_dir, "commit-top.qcow2");
        name = $"commit {size >> 22} MiB qcow2 → {sizeText} raw";
        if (_options.Selects(name))
        {
            Measure(
                name,
                () => _qemu.Run(["commit", "-t", "none", "-f", "qcow2", commitTop], out _),
                () => _ours.Commit(commitTop),
                before: () => MakeChain(commitBase, commitTop, size));
        }

        string rebaseBase = Path.Combine(_dir, "rebase-base.raw");
        string rebaseTop = Path.Combine(_dir, "rebase-top.qcow2");
        name = $"rebase -b '' (flatten) {sizeText} chain";
        if (_options.Selects(name))
        {
            _images.CreateRawWithData(rebaseBase, size);
            Measure(
                name,
                () => _qemu.Run(["rebase", "-t", "none", "-T", "none", "-f", "qcow2", "-b", "", rebaseTop], out _),
                () => _ours.Flatten(rebaseTop),
                before: () =>
                {
                    _images.CreateOverlay(rebaseTop, rebaseBase);
                    _images.WriteQuarter(rebaseTop, size);
                });
        }

        File.Delete(source);
        File.Delete(target);
        File.Delete(commitBase);
        File.Delete(commitTop);
        File.Delete(rebaseBase);
        File.Delete(rebaseTop);
    }

    private void MakeChain(string basePath, string topPath, long size)
    {
        _images.CreateRawWithData(basePath, size);
        _images.CreateOverlay(topPath, basePath);
        _images.WriteQuarter(topPath, size);
    }

    private void Measure(string name, Action qemu, Action ours, Action before)
    {
        try
        {
            MeasureCore(name, qemu, ours, before);
        }
        catch (Exception e) when (e is InvalidOperationException or IOException or LibvirtStorage.Images.ImageException)
        {
            _report(new ResultRow(Section, name, Unit.Seconds, null, null, $"failed: {e.Message}"));
        }
    }

    private void MeasureCore(string name, Action qemu, Action ours, Action before)
    {
        before();
        TimeSpan qemuTime = Time(qemu);
        if (_ours.Unavailable is { } reason)
        {
            _report(new ResultRow(Section, name, Unit.Seconds, null, qemuTime.TotalSeconds, reason));
            return;
        }

        before();
        TimeSpan ourTime = Time(ours);
        _report(new ResultRow(Section, name, Unit.Seconds, ourTime.TotalSeconds, qemuTime.TotalSeconds));
    }

    private static TimeSpan Time(Action action)
    {
        long began = Stopwatch.GetTimestamp();
        action();
        return Stopwatch.GetElapsedTime(began);
    }
}
