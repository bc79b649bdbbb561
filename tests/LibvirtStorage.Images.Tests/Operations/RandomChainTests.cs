using System.Globalization;
using LibvirtStorage.Images.Operations;
using LibvirtStorage.Images.Tests.Infrastructure;
using Xunit;

namespace LibvirtStorage.Images.Tests.Operations;

/// <summary>
/// Seeded random chains (formats, cluster sizes, subclusters, sizes, unaligned writes, zeroes and
/// discards made by qemu-io) on which map, convert, commit and rebase must agree with qemu-img.
/// </summary>
public sealed class RandomChainTests
{
    private const int Seeds = 6;

    public static IEnumerable<object[]> SeedList()
    {
        for (int seed = 1; seed <= Seeds; seed++)
        {
            yield return [seed];
        }
    }

    /// <summary>Builds base, mid and top from <paramref name="seed"/>; returns the base's name.</summary>
    private static string Build(ScratchDir dir, int seed)
    {
        var rng = new Random(seed);
        int cluster = rng.Next(3) switch { 0 => 4096, 1 => 16384, _ => 65536 };
        string opts = $"cluster_size={cluster}" + (cluster >= 16384 && rng.Next(2) == 0 ? ",extended_l2=on" : string.Empty)
            + (rng.Next(4) == 0 ? ",compat=0.10" : string.Empty);
        if (opts.Contains("compat=0.10", StringComparison.Ordinal))
        {
            opts = opts.Replace(",extended_l2=on", string.Empty, StringComparison.Ordinal);
        }

        bool rawBase = rng.Next(2) == 0;
        string baseName = rawBase ? "base.raw" : "base.qcow2";
        long[] sizes = [rng.Next(2, 6) << 20, rng.Next(2, 6) << 20, rng.Next(2, 7) << 20];
        if (rawBase)
        {
            ProcessRunner.QemuImg(dir.Path, "create", "-q", "-f", "raw", baseName, Size(sizes[0]));
        }
        else
        {
            ProcessRunner.QemuImg(dir.Path, "create", "-q", "-f", "qcow2", "-o", opts, baseName, Size(sizes[0]));
        }

        Scribble(dir, baseName, rawBase ? "raw" : "qcow2", sizes[0], rng, allowDiscard: !rawBase);
        ProcessRunner.QemuImg(dir.Path, "create", "-q", "-f", "qcow2", "-o", opts, "-b", baseName, "-F", rawBase ? "raw" : "qcow2", "mid.qcow2", Size(sizes[1]));
        Scribble(dir, "mid.qcow2", "qcow2", sizes[1], rng, allowDiscard: true);
        ProcessRunner.QemuImg(dir.Path, "create", "-q", "-f", "qcow2", "-o", opts, "-b", "mid.qcow2", "-F", "qcow2", "top.qcow2", Size(sizes[2]));
        Scribble(dir, "top.qcow2", "qcow2", sizes[2], rng, allowDiscard: true);
        return baseName;
    }

    private static string Size(long bytes) => bytes.ToString(CultureInfo.InvariantCulture);

    private static void Scribble(ScratchDir dir, string name, string format, long size, Random rng, bool allowDiscard)
    {
        var commands = new List<string>();
        for (int i = 0; i < 12; i++)
        {
            long length = rng.Next(1, 300 * 1024);
            long offset = rng.NextInt64(0, size - length);
            int kind = rng.Next(allowDiscard ? 4 : 3);
            commands.Add(kind switch
            {
                0 or 1 => $"write -P {rng.Next(1, 255)} {offset} {length}",
                2 => $"write -z {offset / 512 * 512} {Math.Max(512, length / 512 * 512)}",
                _ => $"discard {offset / 512 * 512} {Math.Max(512, length / 512 * 512)}",
            });
        }

        ProcessRunner.QemuIo(dir.Path, name, format, [.. commands]);
    }

    [Theory]
    [MemberData(nameof(SeedList))]
    public void Map_agrees_with_qemu_img_at_every_level(int seed)
    {
        using var dir = new ScratchDir();
        string baseName = Build(dir, seed);
        if (Environment.GetEnvironmentVariable("LVSTOR_KEEP") is string keep)
        {
            // Keeps the chain for a look with qemu-img when a seed fails.
            ProcessRunner.Run("cp", ["-a", dir.Path, $"{keep}/seed{seed}"]).Expect();
        }

        foreach (string name in new[] { baseName, "mid.qcow2", "top.qcow2" })
        {
            using IBlockImage image = ImageOpener.Open(dir[name], new ImageOpenOptions { ReadOnly = true });
            Assert.Equal(ProcessRunner.QemuImg(dir.Path, "map", "--output=json", name), ImageMap.ToJson(ImageMap.Get(image)));
        }
    }

    [Theory]
    [MemberData(nameof(SeedList))]
    public void Convert_equals_the_chain_and_passes_check(int seed)
    {
        using var dir = new ScratchDir();
        Build(dir, seed);
        using (IBlockImage top = ImageOpener.Open(dir["top.qcow2"], new ImageOpenOptions { ReadOnly = true }))
        {
            ImageConvert.Run(top, dir["flat.qcow2"], new ImageCreateOptions { ClusterSize = 65536 });
            ImageConvert.Run(top, dir["flat.raw"], new ImageCreateOptions { Format = ImageFormat.Raw });
        }

        Assert.True(QemuChains.SameContents(dir, "top.qcow2", dir, "flat.qcow2", sameSize: true));
        Assert.True(QemuChains.SameContents(dir, "top.qcow2", dir, "flat.raw", sameSize: true));
        QemuChains.AssertClean(dir, "flat.qcow2");
    }

    [Theory]
    [MemberData(nameof(SeedList))]
    public void Commit_and_rebase_agree_with_qemu_img(int seed)
    {
        using var ours = new ScratchDir();
        string baseName = Build(ours, seed);
        string[] files = [baseName, "mid.qcow2", "top.qcow2"];
        using ScratchDir theirs = ours.CopyOf(files);

        // Safe rebase of the top onto the base, then commit of the top into the base.
        string fmt = baseName.EndsWith(".raw", StringComparison.Ordinal) ? "raw" : "qcow2";
        ImageRebase.Run(ours["top.qcow2"], baseName, ImageFormatNames.Parse(fmt));
        ProcessRunner.QemuImg(theirs.Path, "rebase", "-b", baseName, "-F", fmt, "top.qcow2");
        Assert.True(QemuChains.SameContents(ours, "top.qcow2", theirs, "top.qcow2", sameSize: true));
        QemuChains.AssertClean(ours, "top.qcow2");

        ImageCommit.Run(ours["top.qcow2"]);
        ProcessRunner.QemuImg(theirs.Path, "commit", "-q", "top.qcow2");
        Assert.True(QemuChains.SameContents(ours, baseName, theirs, baseName, sameSize: true));
        Assert.True(QemuChains.SameContents(ours, "top.qcow2", theirs, "top.qcow2", sameSize: true));
        QemuChains.AssertClean(ours, "top.qcow2");
        if (fmt == "qcow2")
        {
            QemuChains.AssertClean(ours, baseName);
        }

        // Stream the middle: rebase onto nothing.
        ImageRebase.Run(ours["mid.qcow2"], null);
        ProcessRunner.QemuImg(theirs.Path, "rebase", "-b", "", "mid.qcow2");
        Assert.True(QemuChains.SameContents(ours, "mid.qcow2", theirs, "mid.qcow2", sameSize: true));
        QemuChains.AssertClean(ours, "mid.qcow2");
    }
}
