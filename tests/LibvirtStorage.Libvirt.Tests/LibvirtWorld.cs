using System.Diagnostics;
using System.Text;
using Xunit;

namespace LibvirtStorage.Libvirt.Tests;

/// <summary>What a command printed and how it ended.</summary>
public sealed record CommandResult(string Command, int ExitCode, string Stdout, string Stderr)
{
    /// <summary>Everything, for assertion messages.</summary>
    public override string ToString() => $"$ {Command}\n[exit {ExitCode}]\n{Stdout}{(Stderr.Length > 0 ? "\n[stderr]\n" + Stderr : "")}";
}

/// <summary>
/// One private libvirt world for the whole test project (tests/libvirt/harness.sh): a mount + network namespace with
/// its own system bus, lvstord and libvirtd. Started by the first test that needs it, stopped (by PID) at the end.
/// </summary>
public sealed class LibvirtWorld : IDisposable
{
    private static readonly TimeSpan CommandTimeout = TimeSpan.FromMinutes(3);
    private readonly object _gate = new();
    private bool _up;
    private int _counter;

    /// <summary>The harness's work folder (logs, pids, pool directories, the /etc/libvirt copy).</summary>
    public string Work { get; } = Directory.CreateTempSubdirectory("lvstor-libvirt-tests.").FullName;

    /// <summary>lvstord's runtime directory inside the namespace: volume sockets are <c>RuntimeDir/pool/volume.sock</c>.</summary>
    public const string RuntimeDir = "/run/lvstor";

    /// <summary>Starts whatever part of the world is not running (namespace, bus, lvstord, libvirtd).</summary>
    public void Up()
    {
        lock (_gate)
        {
            if (_up && Harness("pid", "libvirtd").ExitCode == 0 && Harness("pid", "lvstord").ExitCode == 0)
                return;
            CommandResult r = Harness("up");
            Assert.True(r.ExitCode == 0, $"harness up failed:\n{r}\n{Logs()}");
            _up = true;
        }
    }

    /// <summary>A name unique within this run, for pools and volumes of one test.</summary>
    public string Unique(string prefix) => $"{prefix}{Interlocked.Increment(ref _counter)}";

    /// <summary>A pool directory under the work folder (not created: lvstord creates it).</summary>
    public string PoolDir(string pool) => Path.Combine(Work, "pools", pool);

    /// <summary>virsh -c qemu:///system ARGS inside the namespace.</summary>
    public CommandResult Virsh(params string[] args) => Harness(["virsh", .. args]);

    /// <summary>virsh that must succeed; returns its standard output.</summary>
    public string VirshOk(params string[] args)
    {
        CommandResult r = Virsh(args);
        Assert.True(r.ExitCode == 0, $"virsh failed:\n{r}");
        return r.Stdout;
    }

    /// <summary>
    /// The volume names of a pool, one per line, sorted (virsh 9.0's vol-list has no --name: the first column of
    /// the table below its dashed line).
    /// </summary>
    public string VolumeNames(string pool) =>
        string.Join('\n', VirshOk("vol-list", pool).Split('\n')
            .SkipWhile(l => !l.StartsWith("---", StringComparison.Ordinal)).Skip(1)
            .Select(l => l.Trim()).Where(l => l.Length > 0)
            .Select(l => l.Split(' ', 2)[0]).Order(StringComparer.Ordinal));

    /// <summary>A command inside the namespace.</summary>
    public CommandResult Exec(params string[] args) => Harness(["exec", .. args]);

    /// <summary>Defines and starts a vstorage pool on a fresh directory; returns its name.</summary>
    public string StartPool(string prefix = "pool")
    {
        string pool = Unique(prefix);
        VirshOk("pool-define-as", pool, "vstorage", "--target", PoolDir(pool));
        VirshOk("pool-start", pool);
        return pool;
    }

    /// <summary>The PID of a harness process (ns, bus, lvstord, libvirtd), or null if it is not running.</summary>
    public int? Pid(string name)
    {
        CommandResult r = Harness("pid", name);
        return r.ExitCode == 0 ? int.Parse(r.Stdout.Trim(), System.Globalization.CultureInfo.InvariantCulture) : null;
    }

    /// <summary>Any harness command (see tests/libvirt/harness.sh).</summary>
    public CommandResult Harness(params string[] args)
    {
        var info = new ProcessStartInfo("bash")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        info.ArgumentList.Add(LibvirtEnvironment.Harness);
        foreach (string a in args)
            info.ArgumentList.Add(a);
        info.Environment["LVH_WORK"] = Work;
        info.Environment["LVSTORD"] = LibvirtEnvironment.Daemon;
        info.Environment["LVH_MODULE"] = LibvirtEnvironment.Module;

        var stdout = new StringBuilder();
        var stderr = new StringBuilder();
        using var process = new Process { StartInfo = info };
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (stdout) stdout.AppendLine(e.Data); };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (stderr) stderr.AppendLine(e.Data); };
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        string command = string.Join(' ', args);
        if (!process.WaitForExit(CommandTimeout))
        {
            process.Kill(entireProcessTree: true);
            process.WaitForExit();
            return new CommandResult(command, 124, stdout.ToString(), stderr + $"\nkilled after {CommandTimeout.TotalMinutes} minutes");
        }

        process.WaitForExit();
        lock (stdout)
            lock (stderr)
                return new CommandResult(command, process.ExitCode, stdout.ToString(), stderr.ToString());
    }

    /// <summary>The tail of every daemon log, for failure messages.</summary>
    public string Logs()
    {
        var sb = new StringBuilder();
        string logs = Path.Combine(Work, "logs");
        if (!Directory.Exists(logs))
            return "";
        foreach (string f in Directory.GetFiles(logs, "*.log"))
        {
            string[] lines = File.ReadAllLines(f);
            sb.AppendLine($"--- {Path.GetFileName(f)} (last 30 lines)");
            foreach (string l in lines.Skip(Math.Max(0, lines.Length - 30)))
                sb.AppendLine(l);
        }

        return sb.ToString();
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        Harness("down");
        // Keep the logs of a run for a look afterwards only when asked; the images are the bulk.
        if (Environment.GetEnvironmentVariable("LVH_KEEP") is not { Length: > 0 })
        {
            try { Directory.Delete(Work, recursive: true); }
            catch (IOException) { }
            catch (UnauthorizedAccessException) { }
        }
    }
}

/// <summary>Every libvirt test shares the one world, one test at a time.</summary>
[CollectionDefinition(Name)]
public sealed class LibvirtCollection : ICollectionFixture<LibvirtWorld>
{
    /// <summary>The collection's name.</summary>
    public const string Name = "libvirt";
}
