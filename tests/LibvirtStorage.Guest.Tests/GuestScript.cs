using System.Diagnostics;
using System.Text;

namespace LibvirtStorage.Guest.Tests;

/// <summary>The outcome of one guest script: its exit code (0 ok, 1 fail, 2 guest hang) and everything it printed.</summary>
internal sealed record GuestScriptResult(int ExitCode, string Output)
{
    public string Verdict => ExitCode switch { 0 => "ok", 2 => "HANG (the guest watchdog fired)", _ => $"FAIL (exit {ExitCode})" };
}

/// <summary>Runs a script of tests/guest against our back-end, with a generous watchdog.</summary>
internal static class GuestScript
{
    // The suite's other projects run in parallel with these guests on 2 cores: a TCG boot that takes 20 s alone
    // can take several times that under load. The watchdog only has to tell a hang from a slow run.
    private const string GuestWatchdogSeconds = "300";
    private static readonly TimeSpan ScriptTimeout = TimeSpan.FromMinutes(20);

    public static GuestScriptResult Run(string script, IReadOnlyDictionary<string, string>? env = null, params string[] args)
    {
        var info = new ProcessStartInfo("bash")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = GuestEnvironment.ScriptDir,
        };
        info.ArgumentList.Add(Path.Combine(GuestEnvironment.ScriptDir, script));
        foreach (string a in args)
            info.ArgumentList.Add(a);
        info.Environment["LVSTOR_SMOKE_BACKEND"] = "lvstor";
        info.Environment["LVSTOR_VHOST_BLK"] = GuestEnvironment.Backend;
        info.Environment["LVSTORD"] = GuestEnvironment.Daemon;
        info.Environment["LVSTOR"] = GuestEnvironment.Cli;
        info.Environment["LVSTOR_GUEST_TIMEOUT"] = GuestWatchdogSeconds;
        info.Environment["LVSTOR_NO_APT"] = "1";
        foreach (var (key, value) in env ?? new Dictionary<string, string>())
            info.Environment[key] = value;

        var output = new StringBuilder();
        using var process = new Process { StartInfo = info };
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (output) output.AppendLine(e.Data); };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (output) output.AppendLine(e.Data); };
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        if (!process.WaitForExit(ScriptTimeout))
        {
            process.Kill(entireProcessTree: true);
            process.WaitForExit();
            lock (output)
                return new GuestScriptResult(124, output + $"\n{script} did not finish within {ScriptTimeout.TotalMinutes} minutes: killed");
        }

        process.WaitForExit(); // flushes the asynchronous readers
        lock (output)
            return new GuestScriptResult(process.ExitCode, output.ToString());
    }
}
