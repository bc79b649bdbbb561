using System.Diagnostics;
using System.Globalization;
using System.Text.Json;

namespace LibvirtStorage.Bench.Vhost;

/// <summary>The host ceiling: fio with io_uring and O_DIRECT on the same raw file, the same pattern, one job per
/// queue (sequential jobs each start at their own share of the file, like our queues).</summary>
internal static class FioCeiling
{
    public static bool Available => File.Exists("/usr/bin/fio") || File.Exists("/usr/local/bin/fio");

    public static (double Iops, double MibPerSecond)? Run(string file, long size, VhostPattern pattern, TimeSpan warmup, TimeSpan duration, List<string> commandLog)
    {
        var args = new List<string>
        {
            "--name=ceiling", $"--filename={file}", "--ioengine=io_uring", "--direct=1",
            $"--rw={pattern.FioRw}", $"--bs={pattern.RequestSize}", $"--iodepth={pattern.Depth}",
            $"--numjobs={pattern.Queues}", "--time_based",
            $"--ramp_time={Seconds(warmup)}", $"--runtime={Seconds(duration)}",
            "--group_reporting", "--output-format=json", "--randrepeat=0", "--norandommap",
        };
        if (!pattern.Random && pattern.Queues > 1)
        {
            args.Add($"--size={size / pattern.Queues}");
            args.Add($"--offset_increment={size / pattern.Queues}");
        }
        else
        {
            args.Add($"--size={size}");
        }

        string shown = "fio " + string.Join(' ', args).Replace(file, Path.GetFileName(file), StringComparison.Ordinal);
        if (!commandLog.Contains(shown))
            commandLog.Add(shown);
        var info = new ProcessStartInfo("fio") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string a in args)
            info.ArgumentList.Add(a);
        using Process fio = Process.Start(info) ?? throw new InvalidOperationException("could not start fio");
        Task<string> err = fio.StandardError.ReadToEndAsync();
        string output = fio.StandardOutput.ReadToEnd();
        fio.WaitForExit();
        if (fio.ExitCode != 0)
        {
            Console.Error.WriteLine($"fio failed ({fio.ExitCode}): {err.Result}");
            return null;
        }

        // fio may print warnings before the JSON object.
        using JsonDocument json = JsonDocument.Parse(output[output.IndexOf('{', StringComparison.Ordinal)..]);
        JsonElement job = json.RootElement.GetProperty("jobs")[0].GetProperty(pattern.IsWrite ? "write" : "read");
        return (job.GetProperty("iops").GetDouble(), job.GetProperty("bw_bytes").GetDouble() / (1 << 20));
    }

    private static string Seconds(TimeSpan t) => Math.Max(100, (int)t.TotalMilliseconds).ToString(CultureInfo.InvariantCulture) + "ms";
}
