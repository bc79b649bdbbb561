using System.Globalization;
using System.Text.Json;
using Xunit;

namespace LibvirtStorage.Libvirt.Tests;

/// <summary>
/// vol-upload/vol-download --sparse through the module: an unlinked temporary file carries the holes between
/// libvirt's hole-aware fd stream and lvstord (native-shim/README.md, "Sparse streams").
/// </summary>
[Collection(LibvirtCollection.Name)]
public sealed class SparseStreamTests(LibvirtWorld world)
{
    private const long MiB = 1024 * 1024;
    private const byte Old = 0x5a;

    [LibvirtFact]
    public void Sparse_upload_writes_the_data_and_leaves_the_holes_unallocated_in_raw_and_qcow2()
    {
        world.Up();
        string pool = world.StartPool();
        string source = SparseFile();
        foreach (string format in new[] { "raw", "qcow2" })
        {
            string vol = $"up.{format}";
            world.VirshOk("vol-create-as", pool, vol, "64M", "--format", format);
            FillWithOldData(pool, vol, 64 * MiB);

            VirshOkWhenIdle("vol-upload", "--pool", pool, vol, source, "--sparse");

            // Where the file has holes the volume now reads zeroes; past the file's end it keeps its data.
            byte[] expected = Bytes(Old, 64 * MiB);
            File.ReadAllBytes(source).CopyTo(expected, 0);
            Assert.True(expected.AsSpan().SequenceEqual(DownloadWhenIdle(pool, vol)), $"{format}: the volume differs from the sparse file");

            var map = Map(pool, vol, format);
            Assert.True(IsData(map, 0, MiB) && IsData(map, 40 * MiB, MiB) && IsData(map, 48 * MiB, 16 * MiB), $"{format}: data expected:\n{Show(map)}");
            Assert.True(IsHole(map, MiB, 39 * MiB) && IsHole(map, 41 * MiB, 7 * MiB), $"{format}: the file's holes should be unallocated:\n{Show(map)}");
            WaitForNoTransferFiles();
        }
    }

    [LibvirtFact]
    public void Sparse_download_writes_holes_as_holes_whole_and_in_a_range()
    {
        world.Up();
        string pool = world.StartPool();
        world.VirshOk("vol-create-as", pool, "down.qcow2", "64M", "--format", "qcow2");
        string source = SparseFile();
        VirshOkWhenIdle("vol-upload", "--pool", pool, "down.qcow2", source, "--sparse");
        byte[] expected = new byte[64 * MiB];
        File.ReadAllBytes(source).CopyTo(expected, 0);

        string whole = Path.Combine(world.Work, world.Unique("sparse-down"));
        VirshOkWhenIdle("vol-download", "--pool", pool, "down.qcow2", whole, "--sparse");
        Assert.Equal(64 * MiB, new FileInfo(whole).Length);
        Assert.True(expected.AsSpan().SequenceEqual(File.ReadAllBytes(whole)), "the sparse download differs from the volume");
        long allocated = AllocatedBytes(whole);
        Assert.True(allocated <= 3 * MiB, $"the 2 MiB of data should be all that is allocated, not {allocated} bytes");

        string part = Path.Combine(world.Work, world.Unique("sparse-down"));
        world.VirshOk("vol-download", "--pool", pool, "down.qcow2", part, "--sparse", "--offset", (39 * MiB).ToString(CultureInfo.InvariantCulture),
            "--length", (4 * MiB).ToString(CultureInfo.InvariantCulture));
        Assert.Equal(4 * MiB, new FileInfo(part).Length);
        Assert.True(expected.AsSpan((int)(39 * MiB), (int)(4 * MiB)).SequenceEqual(File.ReadAllBytes(part)), "the ranged sparse download differs");
        Assert.True(AllocatedBytes(part) <= 2 * MiB, $"a range with 1 MiB of data allocated {AllocatedBytes(part)} bytes");

        // Outside the volume: lvstord's range error, no file content.
        CommandResult outside = world.Virsh("vol-download", "--pool", pool, "down.qcow2", Path.Combine(world.Work, world.Unique("sparse-down")), "--sparse",
            "--offset", (60 * MiB).ToString(CultureInfo.InvariantCulture), "--length", (8 * MiB).ToString(CultureInfo.InvariantCulture));
        Assert.True(outside.ExitCode != 0, $"expected a range error:\n{outside}");
        Assert.Contains("outside volume 'down.qcow2'", outside.Stderr);
        WaitForNoTransferFiles();
    }

    [LibvirtFact]
    public void Bad_and_short_sparse_uploads_change_only_what_they_sent()
    {
        world.Up();
        string pool = world.StartPool();
        world.VirshOk("vol-create-as", pool, "v.qcow2", "16M", "--format", "qcow2");
        FillWithOldData(pool, "v.qcow2", 16 * MiB);
        byte[] volume = Bytes(Old, 16 * MiB);

        // More data than the volume holds: libvirt's stream stops the client at the end, the aborted stream imports nothing.
        string big = Path.Combine(world.Work, world.Unique("big"));
        File.WriteAllBytes(big, Bytes(0x77, 20 * MiB));
        CommandResult tooBig = world.Virsh("vol-upload", "--pool", pool, "v.qcow2", big, "--sparse");
        Assert.True(tooBig.ExitCode != 0, $"expected an error:\n{tooBig}");
        Assert.Contains("cannot write to stream", tooBig.Stderr);
        Assert.True(volume.AsSpan().SequenceEqual(DownloadWhenIdle(pool, "v.qcow2")), "a stream that overran the volume must not change it");

        // A range outside the volume is refused before anything is sent.
        CommandResult outside = world.Virsh("vol-upload", "--pool", pool, "v.qcow2", SparseFile(), "--sparse", "--offset", (17 * MiB).ToString(CultureInfo.InvariantCulture));
        Assert.True(outside.ExitCode != 0, $"expected a range error:\n{outside}");
        Assert.Contains("outside volume 'v.qcow2'", outside.Stderr);

        // A short file at an offset: 1 MiB of data and a 1 MiB hole replace exactly 8..10 MiB.
        string shortFile = Path.Combine(world.Work, world.Unique("short"));
        using (FileStream f = File.Create(shortFile))
        {
            f.Write(Bytes(0x33, MiB));
            f.SetLength(2 * MiB);
        }

        VirshOkWhenIdle("vol-upload", "--pool", pool, "v.qcow2", shortFile, "--sparse", "--offset", (8 * MiB).ToString(CultureInfo.InvariantCulture));
        Bytes(0x33, MiB).CopyTo(volume, 8 * MiB);
        Array.Clear(volume, (int)(9 * MiB), (int)MiB);
        Assert.True(volume.AsSpan().SequenceEqual(DownloadWhenIdle(pool, "v.qcow2")), "a short sparse upload must change only its own range");

        // A base of another volume is read-only: refused at once, as a plain upload is.
        VirshOkWhenIdle("vol-create-as", pool, "top.qcow2", "16M", "--format", "qcow2", "--backing-vol", "v.qcow2", "--backing-vol-format", "qcow2");
        CommandResult readOnly = world.Virsh("vol-upload", "--pool", pool, "v.qcow2", shortFile, "--sparse");
        Assert.True(readOnly.ExitCode != 0, $"expected a refusal:\n{readOnly}");
        Assert.Contains("read-only", readOnly.Stderr);
        Assert.True(volume.AsSpan().SequenceEqual(DownloadWhenIdle(pool, "v.qcow2")), "a refused upload must not change the volume");
        WaitForNoTransferFiles();
    }

    [LibvirtFact]
    public void A_sparse_stream_claims_the_volume_at_once_and_an_aborted_one_imports_nothing()
    {
        world.Up();
        string pool = world.StartPool();
        world.VirshOk("vol-create-as", pool, "a.qcow2", "16M", "--format", "qcow2");
        FillWithOldData(pool, "a.qcow2", 16 * MiB);
        int ns = world.Pid("ns") ?? throw new InvalidOperationException("no namespace");
        string other = SparseFile();

        using (var stream = new LibvirtUploadStream(ns, pool, "a.qcow2", 0, 0))
        {
            stream.Send(Bytes(0x11, MiB));
            stream.SendHole(2 * MiB);
            stream.Send(Bytes(0x22, MiB));
            Assert.True(TransferFiles("libvirtd").Count > 0, "libvirtd should hold the stream's temporary file");

            // lvstord's job started with the stream: the volume is busy for everyone else meanwhile.
            CommandResult second = world.Virsh("vol-upload", "--pool", pool, "a.qcow2", other, "--sparse");
            Assert.True(second.ExitCode != 0, $"expected busy:\n{second}");
            Assert.Contains("busy with upload", second.Stderr);

            stream.Abort();
        }

        WaitForNoTransferFiles();
        Assert.True(Bytes(Old, 16 * MiB).AsSpan().SequenceEqual(DownloadWhenIdle(pool, "a.qcow2")), "an aborted sparse upload must not change the volume");

        // The same stream finished: its data and holes land.
        using (var stream = new LibvirtUploadStream(ns, pool, "a.qcow2", 0, 0))
        {
            stream.Send(Bytes(0x11, MiB));
            stream.SendHole(2 * MiB);
            stream.Send(Bytes(0x22, MiB));
            Assert.Null(stream.Finish());
        }

        byte[] expected = Bytes(Old, 16 * MiB);
        Bytes(0x11, MiB).CopyTo(expected, 0);
        Array.Clear(expected, (int)MiB, (int)(2 * MiB));
        Bytes(0x22, MiB).CopyTo(expected, 3 * MiB);
        Assert.True(expected.AsSpan().SequenceEqual(DownloadWhenIdle(pool, "a.qcow2")), "a finished sparse stream should land as sent");
        WaitForNoTransferFiles();
    }

    /// <summary>48 MiB: 1 MiB of 0xc3 at 0, 1 MiB of 0xd4 at 40 MiB, holes between and after (a trailing hole).</summary>
    private string SparseFile()
    {
        string path = Path.Combine(world.Work, world.Unique("sparse"));
        using (FileStream f = File.Create(path))
        {
            f.Write(Bytes(0xc3, MiB));
            f.Position = 40 * MiB;
            f.Write(Bytes(0xd4, MiB));
            f.SetLength(48 * MiB);
        }

        Assert.True(AllocatedBytes(path) <= 3 * MiB, "the test file system should keep the source sparse");
        return path;
    }

    private void FillWithOldData(string pool, string vol, long size)
    {
        string path = Path.Combine(world.Work, world.Unique("old"));
        File.WriteAllBytes(path, Bytes(Old, size));
        VirshOkWhenIdle("vol-upload", "--pool", pool, vol, path);
    }

    private static byte[] Bytes(byte value, long length)
    {
        byte[] b = new byte[length];
        Array.Fill(b, value);
        return b;
    }

    private byte[] DownloadWhenIdle(string pool, string vol)
    {
        string path = Path.Combine(world.Work, world.Unique("check"));
        VirshOkWhenIdle("vol-download", "--pool", pool, vol, path);
        return File.ReadAllBytes(path);
    }

    /// <summary>
    /// virsh that must succeed, after lvstord's jobs have ended, and waiting for the jobs it starts: an upload's last
    /// writes (all of a sparse upload's import) run in lvstord's job after virsh has returned.
    /// </summary>
    private string VirshOkWhenIdle(params string[] args)
    {
        WaitForJobs();
        string output = world.VirshOk(args);
        WaitForJobs();
        return output;
    }

    /// <summary>Waits until none of lvstord's jobs (org.lvstor.Storage1.Job objects) is running.</summary>
    private void WaitForJobs()
    {
        for (int attempt = 0; ; attempt++)
        {
            CommandResult tree = world.Exec("busctl", "--system", "--list", "tree", "org.lvstor.Storage1");
            Assert.True(tree.ExitCode == 0, $"busctl tree failed:\n{tree}");
            List<string> running = tree.Stdout.Split('\n').Select(l => l.Trim()).Where(l => l.Contains("/job/", StringComparison.Ordinal))
                .Where(job => world.Exec("busctl", "--system", "get-property", "org.lvstor.Storage1", job, "org.lvstor.Storage1.Job", "State")
                    .Stdout.Contains("\"running\"", StringComparison.Ordinal))
                .ToList();
            if (running.Count == 0)
                return;
            Assert.True(attempt < 300, $"lvstord's jobs still running: {string.Join(", ", running)}");
            Thread.Sleep(100);
        }
    }

    private static long AllocatedBytes(string path) => new FileInfo(path).Length == 0 ? 0 : StatBlocks(path) * 512;

    private static long StatBlocks(string path)
    {
        using var p = System.Diagnostics.Process.Start(new System.Diagnostics.ProcessStartInfo("stat", ["--format=%b", path]) { RedirectStandardOutput = true })!;
        string output = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        return long.Parse(output.Trim(), CultureInfo.InvariantCulture);
    }

    /// <summary>qemu-img map of the volume's image (shared lock: lvstord holds it).</summary>
    private List<(long Start, long Length, bool Data)> Map(string pool, string vol, string format)
    {
        CommandResult r = world.Exec("qemu-img", "map", "-U", "--output=json", "-f", format, Path.Combine(world.PoolDir(pool), vol));
        Assert.True(r.ExitCode == 0, $"qemu-img map failed:\n{r}");
        using JsonDocument doc = JsonDocument.Parse(r.Stdout);
        return doc.RootElement.EnumerateArray()
            .Select(e => (e.GetProperty("start").GetInt64(), e.GetProperty("length").GetInt64(), e.GetProperty("data").GetBoolean()))
            .ToList();
    }

    private static IEnumerable<(long Start, long Length, bool Data)> Overlapping(List<(long Start, long Length, bool Data)> map, long start, long length) =>
        map.Where(e => e.Start < start + length && start < e.Start + e.Length);

    private static bool IsData(List<(long Start, long Length, bool Data)> map, long start, long length) => Overlapping(map, start, length).All(e => e.Data);

    private static bool IsHole(List<(long Start, long Length, bool Data)> map, long start, long length) => Overlapping(map, start, length).All(e => !e.Data);

    private static string Show(List<(long Start, long Length, bool Data)> map) =>
        string.Join('\n', map.Select(e => $"{e.Start / MiB} MiB +{e.Length / 1024} KiB {(e.Data ? "data" : "hole")}"));

    /// <summary>The unlinked temporary files (in /var/tmp, the module's default) a daemon holds open.</summary>
    private List<string> TransferFiles(string daemon)
    {
        int pid = world.Pid(daemon) ?? throw new InvalidOperationException($"{daemon} is not running");
        var files = new List<string>();
        foreach (string fd in Directory.EnumerateFiles($"/proc/{pid}/fd"))
        {
            try
            {
                string? target = new FileInfo(fd).LinkTarget;
                if (target is not null && target.StartsWith("/var/tmp/", StringComparison.Ordinal) && target.EndsWith("(deleted)", StringComparison.Ordinal))
                    files.Add(target);
            }
            catch (IOException)
            {
                // The fd closed while we looked.
            }
        }

        return files;
    }

    /// <summary>Waits until neither libvirtd nor lvstord holds a temporary file: every stream and import has ended.</summary>
    private void WaitForNoTransferFiles()
    {
        for (int attempt = 0; ; attempt++)
        {
            List<string> held = [.. TransferFiles("libvirtd").Select(f => $"libvirtd: {f}"), .. TransferFiles("lvstord").Select(f => $"lvstord: {f}")];
            if (held.Count == 0)
                return;
            Assert.True(attempt < 300, $"temporary files still open:\n{string.Join('\n', held)}");
            Thread.Sleep(100);
        }
    }
}
