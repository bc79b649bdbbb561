using System.Diagnostics;
using System.Globalization;
using LibvirtStorage.CrashWriter;
using LibvirtStorage.Images.Qcow2;
using LibvirtStorage.Images.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace LibvirtStorage.Images.Tests.Crash;

/// <summary>
/// Kills (SIGKILL) a writer process doing allocating writes at random points, many times. After every
/// kill the image must pass <c>qemu-img check</c> without corruption (leaks are allowed, as in QEMU),
/// and every write completed before the last reported flush must read back, through our engine and
/// through QEMU.
/// </summary>
/// <remarks>
/// Each iteration has its own seed, printed with any failure; LVSTOR_CRASH_SEED=&lt;seed&gt; with
/// LVSTOR_CRASH_ITERATIONS=1 replays one. The image geometry, flush interval and kill point derive
/// from the seed (the kill point also from scheduling, which is the point of the test).
/// </remarks>
public sealed class CrashSafetyTests(ITestOutputHelper output)
{
    private sealed record Scenario(int Seed, ImageVariant Variant, bool WithBacking, int FlushEvery, int KillAfterFlushes, int ExtraDelayMs)
    {
        public static Scenario From(int seed)
        {
            var rng = new Random(seed);
            ImageVariant[] variants =
            [
                new("c512", ClusterSize: 512),
                new("c4096-rc1", ClusterSize: 4096, RefcountBits: 1),
                new("c65536", ClusterSize: 65536),
                new("c65536-v2", ClusterSize: 65536, Version: 2),
                new("c16384-extl2", ClusterSize: 16384, ExtendedL2: true),
                new("c4096-rc64", ClusterSize: 4096, RefcountBits: 64),
                new("c65536-lazy", ClusterSize: 65536, LazyRefcounts: true),
            ];
            return new Scenario(seed, variants[rng.Next(variants.Length)], rng.Next(3) == 0, rng.Next(1, 40), rng.Next(0, 5), rng.Next(0, 150));
        }
    }

    [Fact]
    public void KilledWriterLeavesAConsistentImageWithEveryFlushedWrite()
    {
        int iterations = int.TryParse(Environment.GetEnvironmentVariable("LVSTOR_CRASH_ITERATIONS"), out int n) ? n : 15;
        int first = int.TryParse(Environment.GetEnvironmentVariable("LVSTOR_CRASH_SEED"), out int s) ? s : Environment.TickCount & 0xfffff;
        var failures = new List<string>();
        for (int i = 0; i < iterations; i++)
        {
            var scenario = Scenario.From(first + i);
            try
            {
                string summary = RunOnce(scenario);
                output.WriteLine($"seed {scenario.Seed}: {summary}");
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                failures.Add($"seed {scenario.Seed} ({scenario}): {e.Message}");
                output.WriteLine($"seed {scenario.Seed} FAILED: {e}");
            }
        }

        Assert.True(failures.Count == 0, $"{failures.Count} of {iterations} kills left a bad image (replay with LVSTOR_CRASH_SEED=<seed> LVSTOR_CRASH_ITERATIONS=1 LVSTOR_KEEP_SCRATCH=1):\n" + string.Join("\n", failures));
    }

    private string RunOnce(Scenario sc)
    {
        using var dir = new TempDir();
        long size = 8L << 20;
        string img = dir.File("img.qcow2");
        var model = new DiskModel(size);
        if (sc.WithBacking)
        {
            string raw = dir.File("base.raw");
            model.Write(0, Pattern.Make((uint)sc.Seed, 0, (int)size));
            model.SaveRaw(raw);
            ImageOpener.Create(img, sc.Variant.ToCreateOptions(null, "base.raw", ImageFormat.Raw));
        }
        else
        {
            ImageOpener.Create(img, sc.Variant.ToCreateOptions(size));
        }

        (int flushed, bool done, string log) = RunAndKill(img, sc);
        int maybe = done ? 0 : sc.FlushEvery;
        foreach (PlannedWrite w in WritePlan.Generate(sc.Seed, size, sc.Variant.ClusterSize).Take(flushed + maybe))
        {
            if (w.Seq < flushed)
            {
                model.Write(w.Offset, w.Data());
            }
            else
            {
                model.Discard(w.Offset, w.Length); // in flight at the kill: old or new data, either is fine
            }
        }

        if (sc.Variant.LazyRefcounts)
        {
            // With lazy refcounts a killed writer leaves the dirty bit and stale refcounts by design;
            // like QEMU, our engine repairs them when it opens the image read-write.
            ImageOpener.Open(img).Dispose();
        }

        QemuCheckReport check = Qemu.Check(img);
        Assert.True(check.HasNoCorruption, $"qemu-img check after the kill (flushed {flushed}; writer said: {log}):\n{check.Json}");
        ImageAssert.EngineMatchesModel(img, model, $"after kill at flush {flushed}");
        ImageAssert.QemuMatchesModel(img, "qcow2", model, dir.Path, $"after kill at flush {flushed}");

        // Our own check and leak repair must agree with QEMU's: afterwards qemu-img check is clean.
        using (IBlockImage image = ImageOpener.Open(img))
        {
            ImageCheckResult ours = ((Qcow2Image)image).Check(CheckRepair.Leaks);
            Assert.True(ours.Corruptions == 0, $"our check finds corruption QEMU does not: {string.Join("; ", ours.Messages)}");
        }

        ImageAssert.QemuCheckClean(img, "after our leak repair");
        return $"{sc.Variant} backing={sc.WithBacking} flush-every={sc.FlushEvery}: killed after {flushed} flushed writes{(done ? " (writer finished)" : "")}, qemu leaks {check.Leaks}";
    }

    /// <summary>Starts the writer, kills it after the chosen number of flushes plus a delay; returns the last flushed count.</summary>
    private static (int Flushed, bool Done, string Log) RunAndKill(string img, Scenario sc)
    {
        var psi = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "LibvirtStorage.CrashWriter.dll"));
        psi.ArgumentList.Add(img);
        psi.ArgumentList.Add(sc.Seed.ToString(CultureInfo.InvariantCulture));
        psi.ArgumentList.Add(sc.FlushEvery.ToString(CultureInfo.InvariantCulture));
        psi.ArgumentList.Add("20000");
        using Process p = Process.Start(psi) ?? throw new InvalidOperationException("cannot start the crash writer");
        Task<string> stderr = p.StandardError.ReadToEndAsync();

        // A writer that never reaches its kill point (an engine hang) is killed here, and the case fails.
        bool timedOut = false;
        using var watchdog = new Timer(_ =>
        {
            timedOut = true;
            try
            {
                p.Kill();
            }
            catch (InvalidOperationException)
            {
                // it exited meanwhile
            }
        }, null, TimeSpan.FromSeconds(90), Timeout.InfiniteTimeSpan);

        int flushed = 0;
        int flushes = 0;
        bool done = false;
        string? line;
        while ((line = p.StandardOutput.ReadLine()) is not null)
        {
            if (Parse(line, "FLUSHED ", ref flushed))
            {
                if (++flushes > sc.KillAfterFlushes)
                {
                    Thread.Sleep(sc.ExtraDelayMs);
                    p.Kill(); // SIGKILL on Linux
                    break;
                }
            }
            else if (Parse(line, "DONE ", ref flushed))
            {
                done = true;
            }
        }

        // Lines the writer printed before it died are still in the pipe.
        while ((line = p.StandardOutput.ReadLine()) is not null)
        {
            done |= Parse(line, "DONE ", ref flushed);
            Parse(line, "FLUSHED ", ref flushed);
        }

        if (!p.WaitForExit(60_000))
        {
            p.Kill();
            throw new InvalidOperationException("the crash writer did not exit");
        }

        if (timedOut && !done && flushes <= sc.KillAfterFlushes)
        {
            throw new InvalidOperationException($"the writer hung: no {sc.KillAfterFlushes + 1}th flush within 90 s (last flushed {flushed})");
        }

        string err = stderr.Result;
        if (err.Contains("ERROR", StringComparison.Ordinal) || err.Contains("Unhandled", StringComparison.Ordinal) || (p.ExitCode != 0 && p.ExitCode != 137 && !done && flushes <= sc.KillAfterFlushes))
        {
            throw new InvalidOperationException($"the writer failed on its own (exit {p.ExitCode}): {err}");
        }

        return (flushed, done, $"exit {p.ExitCode}, {flushes} flushes seen");
    }

    private static bool Parse(string line, string prefix, ref int value)
    {
        if (!line.StartsWith(prefix, StringComparison.Ordinal))
        {
            return false;
        }

        value = Math.Max(value, int.Parse(line.AsSpan(prefix.Length), CultureInfo.InvariantCulture));
        return true;
    }
}
