using System.Diagnostics;
using LibvirtStorage.Vhost.Frontend;

namespace LibvirtStorage.Bench.Vhost;

/// <summary>One measured run of a pattern against one back-end.</summary>
internal sealed record VhostMeasurement(double Iops, double MibPerSecond, long Requests, long Failed, double KicksPerRequest, double WaitsPerRequest, double BackendCpuUsPerRequest)
{
    public double Rate(Unit unit) => unit == Unit.Iops ? Iops : MibPerSecond;

    /// <summary>
    /// Connects a fresh front-end (N queues, depth slots of the request size), runs one <see cref="QueueLoad"/>
    /// thread per queue, discards the warm-up, then counts completions over <paramref name="duration"/>.
    /// </summary>
    public static VhostMeasurement Run(BackendProcess backend, VhostPattern pattern, TimeSpan warmup, TimeSpan duration)
    {
        var options = new VhostUserBlkFrontendOptions
        {
            Queues = pattern.Queues,
            QueueSize = 128,
            Depth = pattern.Depth,
            MaxRequestBytes = Math.Max(4096, pattern.RequestSize),
            CompletionTimeoutMs = 30_000,
        };
        using var frontend = VhostUserBlkFrontend.Connect(backend.SocketPath, options);
        var loads = new QueueLoad[pattern.Queues];
        var threads = new Thread[pattern.Queues];
        for (int q = 0; q < pattern.Queues; q++)
        {
            QueueLoad load = loads[q] = new QueueLoad(frontend.Queues[q], pattern, frontend.Device.CapacityBytes, q);
            threads[q] = new Thread(load.Run) { IsBackground = true, Name = $"vhost-bench-q{q}" };
            threads[q].Start();
        }

        Thread.Sleep(warmup);
        long before = Sum(loads), kicksBefore = Kicks(frontend), waitsBefore = Waits(frontend);
        TimeSpan cpuBefore = backend.CpuTime;
        var clock = Stopwatch.StartNew();
        Thread.Sleep(duration);
        long after = Sum(loads), kicksAfter = Kicks(frontend), waitsAfter = Waits(frontend);
        double seconds = clock.Elapsed.TotalSeconds;
        TimeSpan cpuAfter = backend.CpuTime;
        foreach (QueueLoad load in loads)
            load.Stop();
        foreach (Thread thread in threads)
            thread.Join();
        foreach (QueueLoad load in loads)
        {
            if (load.Error is { } error)
                throw new InvalidOperationException($"{backend.Name}: {error.Message}", error);
        }

        long requests = after - before;
        long failed = 0;
        foreach (QueueLoad load in loads)
            failed += load.Failed;
        double perRequest = Math.Max(requests, 1);
        return new VhostMeasurement(
            requests / seconds,
            requests * (double)pattern.RequestSize / (1 << 20) / seconds,
            requests,
            failed,
            (kicksAfter - kicksBefore) / perRequest,
            (waitsAfter - waitsBefore) / perRequest,
            (cpuAfter - cpuBefore).TotalMicroseconds / perRequest);
    }

    private static long Sum(QueueLoad[] loads)
    {
        long total = 0;
        foreach (QueueLoad load in loads)
            total += load.Completed;
        return total;
    }

    // Read from the coordinating thread while the queue threads run: approximate, only used as a ratio.
    private static long Kicks(VhostUserBlkFrontend frontend)
    {
        long total = 0;
        foreach (VhostUserBlkQueue q in frontend.Queues)
            total += q.Kicks;
        return total;
    }

    private static long Waits(VhostUserBlkFrontend frontend)
    {
        long total = 0;
        foreach (VhostUserBlkQueue q in frontend.Queues)
            total += q.CallWaits;
        return total;
    }
}
