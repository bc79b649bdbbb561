using LibvirtStorage.Images.Tests.Infrastructure;
using Xunit;

namespace LibvirtStorage.Cli.Tests;

/// <summary>Runs lvstor in-process (Program.Run) with captured output and compares with qemu-img.</summary>
public sealed class CliTests
{
    private static (int Code, string Out, string Err) Lvstor(params string[] args)
    {
        using var output = new StringWriter();
        using var error = new StringWriter();
        int code = Program.Run(args, output, error, isTerminal: false);
        return (code, output.ToString(), error.ToString());
    }

    private static void AssertNoStackTrace(string stderr)
    {
        Assert.DoesNotContain("   at ", stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("Exception", stderr, StringComparison.Ordinal);
    }

    [Fact]
    public void Create_raw_then_info_json_equals_qemu_img()
    {
        using var dir = new ScratchDir();
        var r = Lvstor("image", "create", "-f", "raw", dir["disk.raw"], "3M");
        Assert.Equal(0, r.Code);
        Assert.Contains("fmt=raw", r.Out, StringComparison.Ordinal);
        ProcessRunner.QemuIo(dir.Path, "disk.raw", "raw", "write -P 1 1M 64k");
        r = Lvstor("image", "info", "--output=json", dir["disk.raw"]);
        Assert.Equal(0, r.Code);
        Assert.Equal(ProcessRunner.QemuImg(dir.Path, "info", "--output=json", dir["disk.raw"]), r.Out);
        Assert.Equal(r.Out, Lvstor("image", "info", "--json", dir["disk.raw"]).Out);
        Assert.Equal(ProcessRunner.QemuImg(dir.Path, "info", dir["disk.raw"]), Lvstor("image", "info", dir["disk.raw"]).Out);
    }

    [Fact]
    public void Map_json_equals_qemu_img()
    {
        using var dir = new ScratchDir();
        ProcessRunner.QemuImg(dir.Path, "create", "-q", "-f", "raw", "disk.raw", "4M");
        ProcessRunner.QemuIo(dir.Path, "disk.raw", "raw", "write -P 1 0 4k", "write -P 2 2M 1M");
        var r = Lvstor("image", "map", "--output=json", dir["disk.raw"]);
        Assert.Equal(0, r.Code);
        Assert.Equal(ProcessRunner.QemuImg(dir.Path, "map", "--output=json", "disk.raw"), r.Out);
    }

    [Fact]
    public void Chain_info_and_map_in_both_formats_equal_qemu_img()
    {
        using var dir = new ScratchDir();
        ProcessRunner.QemuImg(dir.Path, "create", "-q", "-f", "raw", "base.raw", "4M");
        ProcessRunner.QemuIo(dir.Path, "base.raw", "raw", "write -P 1 0 1M");
        ProcessRunner.QemuImg(dir.Path, "create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", "mid.qcow2");
        ProcessRunner.QemuIo(dir.Path, "mid.qcow2", "qcow2", "write -P 2 512k 64k", "write -z 2M 64k");
        ProcessRunner.QemuImg(dir.Path, "create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", "top.qcow2", "6M");
        ProcessRunner.QemuIo(dir.Path, "top.qcow2", "qcow2", "write -P 3 3M 4k");
        string top = dir["top.qcow2"];
        foreach (string[] command in new[]
        {
            new[] { "info", "--backing-chain", top },
            new[] { "info", "--backing-chain", "--output=json", top },
            new[] { "map", top },
            new[] { "map", "--output=json", top },
        })
        {
            var r = Lvstor(["image", .. command]);
            Assert.Equal(0, r.Code);
            Assert.Equal(ProcessRunner.QemuImg(dir.Path, command), r.Out);
        }
    }

    [Fact]
    public void Check_of_raw_is_unsupported_like_qemu_img()
    {
        using var dir = new ScratchDir();
        ProcessRunner.QemuImg(dir.Path, "create", "-q", "-f", "raw", "disk.raw", "1M");
        var r = Lvstor("image", "check", dir["disk.raw"]);
        Assert.Equal(ProcessRunner.Run("qemu-img", ["check", dir["disk.raw"]]).ExitCode, r.Code);
        Assert.Contains("does not support checks", r.Err, StringComparison.Ordinal);
    }

    [Fact]
    public void Expected_errors_are_one_line_on_stderr_with_exit_1()
    {
        using var dir = new ScratchDir();
        var r = Lvstor("image", "info", dir["missing.qcow2"]);
        Assert.Equal(1, r.Code);
        Assert.StartsWith("lvstor: ", r.Err, StringComparison.Ordinal);
        Assert.Contains("missing.qcow2", r.Err, StringComparison.Ordinal);
        AssertNoStackTrace(r.Err);

        r = Lvstor("image", "create", "-o", "bogus=1", dir["x.qcow2"], "1M");
        Assert.Equal(1, r.Code);
        Assert.Contains("invalid option 'bogus'", r.Err, StringComparison.Ordinal);
        AssertNoStackTrace(r.Err);

        r = Lvstor("image", "create", "-f", "raw", dir["x.raw"], "12Q");
        Assert.Equal(1, r.Code);
        AssertNoStackTrace(r.Err);

        r = Lvstor("image", "commit", dir["x.raw"]);
        Assert.Equal(1, r.Code);
        AssertNoStackTrace(r.Err);
    }

    [Fact]
    public void Convert_and_compare_raw()
    {
        using var dir = new ScratchDir();
        ProcessRunner.QemuImg(dir.Path, "create", "-q", "-f", "raw", "src.raw", "8M");
        ProcessRunner.QemuIo(dir.Path, "src.raw", "raw", "write -P 3 1M 300k");
        Assert.Equal(0, Lvstor("image", "convert", "-O", "raw", "-p", dir["src.raw"], dir["dst.raw"]).Code);
        var r = Lvstor("image", "compare", dir["src.raw"], dir["dst.raw"]);
        Assert.Equal(0, r.Code);
        Assert.Equal(0, ProcessRunner.Run("qemu-img", ["compare", dir["src.raw"], dir["dst.raw"]]).ExitCode);
        ProcessRunner.QemuIo(dir.Path, "dst.raw", "raw", "write -P 4 7M 1");
        Assert.Equal(1, Lvstor("image", "compare", dir["src.raw"], dir["dst.raw"]).Code);
    }

    [Fact]
    public void Resize_grows_and_shrinks_only_when_asked()
    {
        using var dir = new ScratchDir();
        ProcessRunner.QemuImg(dir.Path, "create", "-q", "-f", "raw", "disk.raw", "1M");
        Assert.Equal(0, Lvstor("image", "resize", dir["disk.raw"], "+1M").Code);
        Assert.Equal(2L << 20, new FileInfo(dir["disk.raw"]).Length);
        Assert.Equal(1, Lvstor("image", "resize", dir["disk.raw"], "1M").Code);
        Assert.Equal(0, Lvstor("image", "resize", "--shrink", dir["disk.raw"], "1M").Code);
        Assert.Equal(1L << 20, new FileInfo(dir["disk.raw"]).Length);
    }

    [Fact]
    public void Create_qcow2_records_every_option_as_qemu_img_reads_it()
    {
        using var dir = new ScratchDir();
        var r = Lvstor("image", "create", "-f", "qcow2", "-o", "cluster_size=16k,compression_type=zstd,extended_l2=on", "-o", "lazy_refcounts=on,refcount_bits=64",
            dir["disk.qcow2"], "1G");
        Assert.Equal(0, r.Code);
        string info = ProcessRunner.QemuImg(dir.Path, "info", "--output=json", "disk.qcow2");
        Assert.Contains("\"cluster-size\": 16384", info, StringComparison.Ordinal);
        Assert.Contains("\"compression-type\": \"zstd\"", info, StringComparison.Ordinal);
        Assert.Contains("\"extended-l2\": true", info, StringComparison.Ordinal);
        Assert.Contains("\"lazy-refcounts\": true", info, StringComparison.Ordinal);
        Assert.Contains("\"refcount-bits\": 64", info, StringComparison.Ordinal);
        Assert.Equal(0, ProcessRunner.Run("qemu-img", ["check", dir["disk.qcow2"]]).ExitCode);
        Assert.Equal(ProcessRunner.QemuImg(dir.Path, "info", "--output=json", dir["disk.qcow2"]), Lvstor("image", "info", "--output=json", dir["disk.qcow2"]).Out);
    }

    [Fact]
    public void Check_of_clean_qcow2_exits_0_with_qemu_img_json()
    {
        using var dir = new ScratchDir();
        ProcessRunner.QemuImg(dir.Path, "create", "-q", "-f", "qcow2", "disk.qcow2", "16M");
        ProcessRunner.QemuIo(dir.Path, "disk.qcow2", "qcow2", "write -P 1 0 1M");
        var r = Lvstor("image", "check", "--output=json", dir["disk.qcow2"]);
        Assert.Equal(0, r.Code);
        Assert.Equal(ProcessRunner.QemuImg(dir.Path, "check", "--output=json", dir["disk.qcow2"]), r.Out);
        r = Lvstor("image", "check", dir["disk.qcow2"]);
        Assert.Equal(ProcessRunner.QemuImg(dir.Path, "check", dir["disk.qcow2"]), r.Out);
    }

    /// <summary>Unhooks guest cluster 0's data cluster from its L2 table: a leak of one cluster.</summary>
    private static void LeakFirstCluster(string path)
    {
        using var f = new FileStream(path, FileMode.Open, FileAccess.ReadWrite);
        byte[] b = new byte[8];
        f.Position = 40;
        f.ReadExactly(b);
        long l1 = (long)System.Buffers.Binary.BinaryPrimitives.ReadUInt64BigEndian(b);
        f.Position = l1;
        f.ReadExactly(b);
        long l2 = (long)(System.Buffers.Binary.BinaryPrimitives.ReadUInt64BigEndian(b) & 0x00fffffffffffe00UL);
        f.Position = l2;
        f.Write(new byte[8]);
    }

    [Fact]
    public void Check_reports_and_repairs_leaks_like_qemu_img()
    {
        using var ours = new ScratchDir();
        ProcessRunner.QemuImg(ours.Path, "create", "-q", "-f", "qcow2", "disk.qcow2", "16M");
        ProcessRunner.QemuIo(ours.Path, "disk.qcow2", "qcow2", "write -P 1 0 256k");
        LeakFirstCluster(ours["disk.qcow2"]);
        using ScratchDir theirs = ours.CopyOf("disk.qcow2");

        var r = Lvstor("image", "check", ours["disk.qcow2"]);
        ProcessResult q = ProcessRunner.Run("qemu-img", ["check", ours["disk.qcow2"]]);
        Assert.Equal(3, q.ExitCode);
        Assert.Equal(q.ExitCode, r.Code);
        Assert.Equal(q.StdOut, r.Out);
        r = Lvstor("image", "check", "--output=json", ours["disk.qcow2"]);
        Assert.Equal(3, r.Code);
        Assert.Equal(ProcessRunner.Run("qemu-img", ["check", "--output=json", ours["disk.qcow2"]]).StdOut, r.Out);

        r = Lvstor("image", "check", "-r", "leaks", ours["disk.qcow2"]);
        q = ProcessRunner.Run("qemu-img", ["check", "-r", "leaks", theirs["disk.qcow2"]]);
        Assert.Equal(q.ExitCode, r.Code);
        Assert.Equal(0, r.Code);
        Assert.Equal(q.StdOut, r.Out);
        Assert.Equal(0, ProcessRunner.Run("qemu-img", ["check", ours["disk.qcow2"]]).ExitCode);
    }

    [Fact]
    public void Create_chain_commit_and_rebase_through_the_cli()
    {
        using var dir = new ScratchDir();
        Assert.Equal(0, Lvstor("image", "create", "-q", "-f", "raw", dir["base.raw"], "4M").Code);
        ProcessRunner.QemuIo(dir.Path, "base.raw", "raw", "write -P 1 0 1M");
        Assert.Equal(0, Lvstor("image", "create", "-q", "-b", "base.raw", "-F", "raw", dir["top.qcow2"]).Code);
        ProcessRunner.QemuIo(dir.Path, "top.qcow2", "qcow2", "write -P 2 512k 1M");
        ProcessRunner.QemuImg(dir.Path, "convert", "-O", "raw", "top.qcow2", "expected.raw");

        Assert.Equal(0, Lvstor("image", "rebase", "-b", "", dir["top.qcow2"]).Code);
        Assert.Equal(0, ProcessRunner.Run("qemu-img", ["compare", dir["top.qcow2"], dir["expected.raw"]]).ExitCode);
        Assert.Equal(0, Lvstor("image", "rebase", "-u", "-b", "base.raw", "-F", "raw", dir["top.qcow2"]).Code);
        Assert.Equal(0, Lvstor("image", "commit", dir["top.qcow2"]).Code);
        Assert.Equal(0, ProcessRunner.Run("qemu-img", ["compare", dir["base.raw"], dir["expected.raw"]]).ExitCode);
        Assert.Equal(0, ProcessRunner.Run("qemu-img", ["check", dir["top.qcow2"]]).ExitCode);
    }

    [Fact]
    public void Bench_runs_qemu_img_bench_pattern_and_writes_the_pattern()
    {
        using var dir = new ScratchDir();
        ProcessRunner.QemuImg(dir.Path, "create", "-q", "-f", "qcow2", "disk.qcow2", "4M");
        var r = Lvstor("image", "bench", "-w", "-c", "300", "-d", "4", "-s", "4k", "-S", "8k", "--pattern", "7", dir["disk.qcow2"]);
        Assert.True(r.Code == 0, r.Err);
        Assert.StartsWith("Sending 300 write requests, 4096 bytes each, 4 in parallel (starting at offset 0, step size 8192)", r.Out, StringComparison.Ordinal);
        Assert.Contains("Run completed in ", r.Out, StringComparison.Ordinal);
        // Requests 0..299 at 8 KiB steps wrap at 4 MiB - 4 KiB: every even 4 KiB block below 2.4 MiB holds the pattern.
        ProcessRunner.QemuIo(dir.Path, "disk.qcow2", "qcow2", "read -P 7 0 4k", "read -P 7 8k 4k", "read -P 0 4k 4k");
        Assert.Equal(0, ProcessRunner.Run("qemu-img", ["check", dir["disk.qcow2"]]).ExitCode);
        Assert.Equal(0, Lvstor("image", "bench", "-c", "100", "-d", "2", dir["disk.qcow2"]).Code);
    }

    [Fact]
    public void Demo_runs_every_step_and_verifies_it()
    {
        using var dir = new ScratchDir();
        var r = Lvstor("demo", dir.Path);
        Assert.True(r.Code == 0, r.Out + r.Err);
        Assert.Contains("demo: every step verified", r.Out, StringComparison.Ordinal);
        foreach (string name in new[] { "base.raw", "mid.qcow2", "top.qcow2", "flat-compressed.qcow2" })
        {
            Assert.True(ProcessRunner.Run("qemu-img", ["check", dir[name]]).ExitCode is 0 or 63, name);
        }
    }
}
