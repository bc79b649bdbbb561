using System.Diagnostics;
using LibvirtStorage.Images;
using LibvirtStorage.Service;

namespace LibvirtStorage.Bench.Jobs;

/// <summary>
/// The job section: stream and commit of a layer of the operation size (1 GiB), ours (the live service path,
/// <see cref="IServiceChainJobs"/>) against qemu-storage-daemon over QMP (the live peer) and qemu-img (the offline
/// peer), in one run. Every side gets its own chain with the same content (qcow2, 64 KiB clusters, every cluster
/// of the copied layer written), dropped from the page cache before its clock starts. Each repetition rotates
/// which side goes first; QSD's result of the first repetition is the reference that the other sides' results
/// must equal (qemu-img compare).
/// </summary>
internal sealed class JobsBench
{
    private const byte BaseFill = 0x5A;
    private const byte TopFill = 0xA5;
    private readonly BenchOptions _options;
    private readonly QemuImg _qemu;
    private readonly ScratchImages _images;
    private readonly IServiceChainJobs _ours;
    private readonly QsdChainJobs _qsd;
    private readonly string _dir;
    private readonly string _peerDir;
    private readonly List<string> _commandLog = [];

    public JobsBench(BenchOptions options, QemuImg qemu, IServiceChainJobs ours)
    {
        _options = options;
        _qemu = qemu;
        _ours = ours;
        _dir = Path.Combine(options.ScratchDir, "jobs");
        _peerDir = Path.Combine(_dir, "peers");
        Directory.CreateDirectory(_peerDir);
        _images = new ScratchImages(qemu, _peerDir, options.OperationImageSize);
        _qsd = new QsdChainJobs(_peerDir, options.QsdAio, _commandLog);
    }

    /// <summary>qemu-storage-daemon command lines and QMP commands, scratch paths shortened to names.</summary>
    public IReadOnlyList<string> CommandLog => _commandLog;

    public List<JobRow> Rows { get; } = [];

    private enum Kind
    {
        Stream,
        Commit,
    }

    private enum Side
    {
        Qsd,
        QemuImg,
        Ours,
    }

    /// <summary>What one side did in one repetition: seconds, or why not; and the file holding its result.</summary>
    private sealed record Outcome(double? Seconds, string? Failure, string? ResultPath, bool ResultHeldByExport);

    public async Task RunAllAsync(Action<JobRow> report)
    {
        long size = _options.OperationImageSize;
        var cases = new[]
        {
            (Kind.Stream, $"stream {size >> 20} MiB backing layer into the top"),
            (Kind.Commit, $"commit {size >> 20} MiB top into its base (active, pivot)"),
        };
        ServicePool? pool = null;
        try
        {
            if (_ours.Unavailable is null)
            {
                pool = ServicePool.Open(Path.Combine(_dir, "service"));
            }

            foreach ((Kind kind, string name) in cases.Where(c => _options.Selects(c.Item2)))
            {
                JobRow row = await MeasureAsync(kind, name, pool).ConfigureAwait(false);
                Rows.Add(row);
                report(row);
            }
        }
        finally
        {
            if (pool is not null)
            {
                await pool.DisposeAsync().ConfigureAwait(false);
            }

            if (Directory.Exists(_dir))
            {
                Directory.Delete(_dir, recursive: true);
            }
        }
    }

    private async Task<JobRow> MeasureAsync(Kind kind, string name, ServicePool? pool)
    {
        var times = new Dictionary<Side, List<double>> { [Side.Qsd] = [], [Side.QemuImg] = [], [Side.Ours] = [] };
        var failures = new Dictionary<Side, string>();
        var notes = new List<string>();
        var uncompared = new HashSet<Side>();
        var differs = new HashSet<Side>();
        string reference = Path.Combine(_peerDir, $"{VolumeName(kind)}-reference.qcow2");
        string upload = Path.Combine(_peerDir, "top-data.raw");
        if (kind == Kind.Commit && pool is not null)
        {
            _images.CreateRawWithData(upload, _options.OperationImageSize, TopFill);
        }

        Side[] order = [Side.Qsd, Side.QemuImg, Side.Ours];
        for (int repetition = 0; repetition < _options.Repeat; repetition++)
        {
            var outcomes = new Dictionary<Side, Outcome>();
            for (int i = 0; i < order.Length; i++)
            {
                Side side = order[(i + repetition) % order.Length];
                Outcome outcome = side switch
                {
                    Side.Qsd => Peer(kind, "qsd", (b, t) => kind == Kind.Stream ? _qsd.Stream(b, t) : _qsd.Commit(b, t)),
                    Side.QemuImg => Peer(kind, "img", (_, t) => kind == Kind.Stream ? _qemu.Flatten(t) : _qemu.Commit(t)),
                    _ => pool is null
                        ? new Outcome(null, _ours.Unavailable, null, false)
                        : await OursAsync(kind, pool, VolumeName(kind), upload).ConfigureAwait(false),
                };
                outcomes[side] = outcome;
                if (outcome.Seconds is { } seconds)
                {
                    times[side].Add(seconds);
                }
                else
                {
                    failures.TryAdd(side, outcome.Failure ?? "failed");
                }
            }

            if (!File.Exists(reference) && outcomes[Side.Qsd].ResultPath is { } qsdResult)
            {
                File.Move(qsdResult, reference);
            }

            foreach (Side side in new[] { Side.QemuImg, Side.Ours })
            {
                if (outcomes[side].ResultPath is not { } result)
                {
                    continue;
                }

                if (!File.Exists(reference))
                {
                    uncompared.Add(side);
                }
                else if (_qemu.Compare(result, "qcow2", reference, "qcow2", outcomes[side].ResultHeldByExport) is { } difference)
                {
                    // A side whose result differs from QSD's (in any run) gets no figure.
                    differs.Add(side);
                    failures[side] = $"result differs from QSD's: {difference}";
                }
            }

            Cleanup(pool, kind);
        }

        File.Delete(reference);
        File.Delete(upload);
        foreach (Side side in differs)
        {
            times[side].Clear();
        }

        notes.AddRange(failures.Select(f => $"{Label(f.Key)}: {f.Value}"));
        var identical = new[] { Side.QemuImg, Side.Ours }.Where(s => times[s].Count > 0 && !uncompared.Contains(s)).Select(Label).ToList();
        if (identical.Count > 0)
        {
            notes.Add($"{string.Join(" and ", identical)}: result identical to QSD's (qemu-img compare)");
        }

        if (uncompared.Count > 0)
        {
            notes.Add($"{string.Join(" and ", uncompared.Select(Label))}: result not compared (no QSD result)");
        }

        if (_options.Repeat > 1)
        {
            notes.Add($"median of {_options.Repeat}; " + string.Join(", ", times.Where(t => t.Value.Count > 1)
                .Select(t => $"{Label(t.Key)} {t.Value.Min():0.000}–{t.Value.Max():0.000} s")));
        }

        return new JobRow(name, Median(times[Side.Ours]), Median(times[Side.Qsd]), Median(times[Side.QemuImg]), string.Join("; ", notes));
    }

    /// <summary>A peer's run on its own chain: base.qcow2 (full of data) ← top.qcow2 (empty, or full for commit).</summary>
    private Outcome Peer(Kind kind, string prefix, Func<string, string, TimeSpan> job)
    {
        string basePath = Path.Combine(_peerDir, $"{prefix}-base.qcow2");
        string topPath = Path.Combine(_peerDir, $"{prefix}-top.qcow2");
        try
        {
            _images.CreateWithData(basePath, "qcow2", _options.OperationImageSize, BaseFill);
            _images.CreateOverlay(topPath, basePath, "qcow2");
            if (kind == Kind.Commit)
            {
                _images.Fill(topPath, "qcow2", _options.OperationImageSize, TopFill);
            }

            PageCache.Evict([basePath, topPath]);
            TimeSpan elapsed = job(basePath, topPath);
            return new Outcome(elapsed.TotalSeconds, null, kind == Kind.Stream ? topPath : basePath, false);
        }
        catch (Exception e) when (e is InvalidOperationException or IOException)
        {
            return new Outcome(null, $"failed: {e.Message}", null, false);
        }
    }

    /// <summary>
    /// Our run: the base file (made by qemu-img like the peers' base) is adopted by a pool refresh and snapshotted by
    /// the service, which makes the empty top; for commit the top is then filled through UploadAsync.
    /// </summary>
    private async Task<Outcome> OursAsync(Kind kind, ServicePool pool, string volume, string upload)
    {
        try
        {
            _images.CreateWithData(pool.PathOf(volume), "qcow2", _options.OperationImageSize, BaseFill);
            pool.AdoptAndSnapshot(volume);
            if (kind == Kind.Commit)
            {
                await pool.UploadAsync(volume, upload).ConfigureAwait(false);
            }

            PageCache.Evict(pool.Files(volume));
            long began = Stopwatch.GetTimestamp();
            await (kind == Kind.Stream
                ? _ours.StreamAsync(pool.Service, ServicePool.PoolName, volume)
                : _ours.CommitAsync(pool.Service, ServicePool.PoolName, volume)).ConfigureAwait(false);
            TimeSpan elapsed = Stopwatch.GetElapsedTime(began);
            VolumeInfo after = pool.Service.GetVolume(ServicePool.PoolName, volume);
            if (after.Chain.Count != 0 || after.Snapshots.Count != 0)
            {
                return new Outcome(null, $"after the job the volume still has {after.Chain.Count} backing layers and {after.Snapshots.Count} snapshots", null, false);
            }

            return new Outcome(elapsed.TotalSeconds, null, after.File, true);
        }
        catch (Exception e) when (e is StorageServiceException or ImageException or InvalidOperationException or IOException or NotSupportedException)
        {
            return new Outcome(null, $"failed: {e.Message}", null, false);
        }
    }

    /// <summary>Our volume of a case; it is deleted after every repetition, so the name is reused.</summary>
    private static string VolumeName(Kind kind) => kind == Kind.Stream ? "stream-layer" : "commit-layer";

    private void Cleanup(ServicePool? pool, Kind kind)
    {
        foreach (string file in Directory.GetFiles(_peerDir, "*-*.qcow2").Where(f => !f.EndsWith("-reference.qcow2", StringComparison.Ordinal)))
        {
            File.Delete(file);
        }

        string volume = VolumeName(kind);
        if (pool is not null && pool.Service.ListVolumes(ServicePool.PoolName).Any(v => v.Name == volume))
        {
            pool.Service.DeleteVolume(ServicePool.PoolName, volume);
        }
        else if (pool is not null)
        {
            File.Delete(pool.PathOf(volume)); // a base file the refresh did not adopt
        }
    }

    private static string Label(Side side) => side switch
    {
        Side.Qsd => "QSD",
        Side.QemuImg => "qemu-img",
        _ => "ours",
    };

    private static double? Median(List<double> values)
    {
        if (values.Count == 0)
        {
            return null;
        }

        var sorted = values.Order().ToList();
        int middle = sorted.Count / 2;
        return sorted.Count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
    }
}
