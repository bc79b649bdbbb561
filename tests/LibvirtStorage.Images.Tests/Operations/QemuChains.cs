using LibvirtStorage.Images.Tests.Infrastructure;

namespace LibvirtStorage.Images.Tests.Operations;

/// <summary>
/// Backing chains built by qemu-img and written by qemu-io, so the engine's operations can be compared
/// with QEMU's on images QEMU made. Every chain has base, mid and top; the top is larger than the rest
/// and holds data past the end of its backing file.
/// </summary>
public static class QemuChains
{
    public const long MiB = 1 << 20;

    /// <summary>Layer kinds: "raw" or qcow2 with the given -o options.</summary>
    public sealed record Layout(string Name, string BaseFormat, string Qcow2Options)
    {
        public override string ToString() => Name;
    }

    public static readonly Layout RawBase = new("raw base, 64k clusters", "raw", "cluster_size=65536");
    public static readonly Layout Qcow2Base = new("qcow2 base, 64k clusters", "qcow2", "cluster_size=65536");
    public static readonly Layout SmallClusters = new("qcow2 base, 4k clusters, refcount_bits=1", "qcow2", "cluster_size=4096,refcount_bits=1");
    public static readonly Layout ExtendedL2 = new("raw base, extended_l2, 64k clusters", "raw", "cluster_size=65536,extended_l2=on");
    public static readonly Layout Compat010 = new("qcow2 base, compat=0.10", "qcow2", "compat=0.10");

    public static IEnumerable<object[]> All() =>
        [[RawBase], [Qcow2Base], [SmallClusters], [ExtendedL2], [Compat010]];

    /// <summary>Names of the files <see cref="Build"/> makes.</summary>
    public static string BaseName(Layout l) => l.BaseFormat == "raw" ? "base.raw" : "base.qcow2";

    public static string[] Files(Layout l) => [BaseName(l), "mid.qcow2", "top.qcow2"];

    /// <summary>Builds base (8 MiB), mid (8 MiB) and top (10 MiB) in <paramref name="dir"/>; returns the top's name.</summary>
    public static string Build(ScratchDir dir, Layout l)
    {
        string b = BaseName(l);
        if (l.BaseFormat == "raw")
        {
            ProcessRunner.QemuImg(dir.Path, "create", "-q", "-f", "raw", b, "8M");
        }
        else
        {
            ProcessRunner.QemuImg(dir.Path, "create", "-q", "-f", "qcow2", "-o", l.Qcow2Options, b, "8M");
        }

        ProcessRunner.QemuIo(dir.Path, b, l.BaseFormat, "write -P 1 0 64k", "write -P 2 1M 128k", "write -P 7 6M 1M");
        ProcessRunner.QemuImg(dir.Path, "create", "-q", "-f", "qcow2", "-o", l.Qcow2Options, "-b", b, "-F", l.BaseFormat, "mid.qcow2");
        ProcessRunner.QemuIo(dir.Path, "mid.qcow2", "qcow2", "write -P 3 64k 64k", "write -z 2M 64k", "write -P 8 6M 4k", "write -P 9 7M 100k");
        ProcessRunner.QemuImg(dir.Path, "create", "-q", "-f", "qcow2", "-o", l.Qcow2Options, "-b", "mid.qcow2", "-F", "qcow2", "top.qcow2", "10M");
        ProcessRunner.QemuIo(dir.Path, "top.qcow2", "qcow2",
            "write -P 4 3M 4k", "discard 1M 64k", "write -P 5 5000 1000", "write -P 6 9M 64k", "write -z 6M 8k", "write -P 10 7M 4k");
        return "top.qcow2";
    }

    /// <summary>
    /// qemu-img compare's verdict (exit 0 identical, 1 different) on what the guest sees; with
    /// <paramref name="sameSize"/> the virtual sizes must be equal too. (qemu-img compare -s would also
    /// demand the same allocation, which a sparse copy rightly does not have.)
    /// </summary>
    public static bool SameContents(ScratchDir dirA, string a, ScratchDir dirB, string b, bool sameSize = false)
    {
        if (sameSize && VirtualSize(dirA, a) != VirtualSize(dirB, b))
        {
            return false;
        }

        ProcessResult r = ProcessRunner.Run("qemu-img", ["compare", dirA[a], dirB[b]], dirA.Path);
        if (r.ExitCode > 1)
        {
            throw new InvalidOperationException($"qemu-img compare failed: {r.StdErr}");
        }

        return r.ExitCode == 0;
    }

    public static long VirtualSize(ScratchDir dir, string name)
    {
        string json = ProcessRunner.QemuImg(dir.Path, "info", "--output=json", "-U", name);
        using var doc = System.Text.Json.JsonDocument.Parse(json);
        return doc.RootElement.GetProperty("virtual-size").GetInt64();
    }

    /// <summary>Asserts that qemu-img check finds no corruption and no leak.</summary>
    public static void AssertClean(ScratchDir dir, string name)
    {
        ProcessResult r = ProcessRunner.Run("qemu-img", ["check", name], dir.Path);
        Xunit.Assert.True(r.ExitCode == 0, $"qemu-img check {name}: exit {r.ExitCode}\n{r.StdOut}{r.StdErr}");
    }
}
