using System.CommandLine;
using System.Diagnostics;
using LibvirtStorage.Images;
using LibvirtStorage.Images.Operations;
using LibvirtStorage.Images.Qcow2;

namespace LibvirtStorage.Cli.Commands;

/// <summary>
/// <c>lvstor demo [folder]</c>: builds a three-level chain (raw base, qcow2 middle, qcow2 top), writes
/// patterns through the engine, and runs info, map, check, convert, commit and rebase on it, printing each
/// result and verifying the guest-visible contents after every step.
/// </summary>
internal static class DemoCommand
{
    private const long MiB = 1 << 20;
    private const long Size = 64 * MiB;

    public static Command Build(CliContext context)
    {
        var folder = new Argument<string?>("folder") { Description = "Where to build the chain (default: ./lvstor-demo)", Arity = ArgumentArity.ZeroOrOne };
        var command = new Command("demo", "Build a demo chain and run every image command on it") { folder };
        command.SetAction(r => CliErrors.Guard(context, () => Run(context, r.GetValue(folder) ?? "lvstor-demo")));
        return command;
    }

    private static int Run(CliContext context, string folder)
    {
        TextWriter o = context.Out;
        Directory.CreateDirectory(folder);
        string Fp(string name) => Path.Combine(folder, name);
        string basePath = Fp("base.raw"), mid = Fp("mid.qcow2"), top = Fp("top.qcow2");
        string flatRaw = Fp("flat.raw"), flatZ = Fp("flat-compressed.qcow2");
        foreach (string f in new[] { basePath, mid, top, flatRaw, flatZ })
        {
            File.Delete(f);
        }

        Step(o, "create base.raw (64 MiB), mid.qcow2 over it, top.qcow2 over mid; write patterns through the engine");
        ImageOpener.Create(basePath, new ImageCreateOptions { Format = ImageFormat.Raw, Size = Size });
        Fill(basePath, 0, 8 * MiB, 0x11);
        Fill(basePath, 32 * MiB, MiB, 0x12);
        ImageOpener.Create(mid, new ImageCreateOptions { BackingFile = "base.raw", BackingFormat = ImageFormat.Raw });
        Fill(mid, 4 * MiB, 2 * MiB, 0x21);
        using (IBlockImage m = ImageOpener.Open(mid))
        {
            m.WriteZeroes((32 * MiB) + (512 * 1024), MiB, unmap: false);
            m.Flush();
        }

        ImageOpener.Create(top, new ImageCreateOptions { BackingFile = "mid.qcow2", BackingFormat = ImageFormat.Qcow2 });
        Fill(top, (5 * MiB) + 1000, 100 * 1024, 0x31);
        Fill(top, 60 * MiB, MiB, 0x32);

        Step(o, "info --backing-chain top.qcow2");
        IReadOnlyList<ImageInfo> chain = ImageInfo.GetChain(top);
        for (int i = 0; i < chain.Count; i++)
        {
            o.Write((i > 0 ? "\n" : string.Empty) + chain[i].ToHuman());
        }

        Step(o, "map --output=json top.qcow2");
        using (IBlockImage t = ImageOpener.Open(top, new ImageOpenOptions { ReadOnly = true }))
        {
            o.Write(ImageMap.ToJson(ImageMap.Get(t)));
        }

        Step(o, "check top.qcow2 and mid.qcow2");
        bool ok = CheckClean(o, top) & CheckClean(o, mid);

        Step(o, "convert top.qcow2 -> flat.raw, and -c -O qcow2 -> flat-compressed.qcow2");
        using (IBlockImage t = ImageOpener.Open(top, new ImageOpenOptions { ReadOnly = true }))
        {
            ImageConvert.Run(t, flatRaw, new ImageCreateOptions { Format = ImageFormat.Raw });
            ImageConvert.Run(t, flatZ, new ImageCreateOptions { Format = ImageFormat.Qcow2 }, new ImageConvertOptions { Compress = true });
        }

        ok &= Same(o, top, flatRaw) & Same(o, flatZ, flatRaw) & CheckClean(o, flatZ);
        o.Write(ImageInfo.Get(flatZ).ToHuman());

        Step(o, "commit top.qcow2 into mid.qcow2");
        ImageCommitResult commit = ImageCommit.Run(top);
        o.WriteLine($"Image committed: {commit.BytesCommitted} bytes into {commit.BackingPath}; top emptied: {commit.TopEmptied}");
        ok &= Same(o, mid, flatRaw) & Same(o, top, flatRaw) & CheckClean(o, mid);
        using (IBlockImage m = ImageOpener.Open(mid, new ImageOpenOptions { ReadOnly = true }))
        {
            o.Write(ImageMap.ToJson(ImageMap.Get(m)));
        }

        Step(o, "rebase -b '' mid.qcow2 (copy the base's data in; mid becomes standalone)");
        long copied = ImageRebase.Run(mid, null);
        o.WriteLine($"copied {copied} bytes; backing file now: {ImageInfo.Get(mid).BackingFilename ?? "(none)"}");
        ok &= Same(o, mid, flatRaw) & Same(o, top, flatRaw);

        Step(o, "rebase -b flat.raw -F raw top.qcow2 (safe: same contents, so nothing is copied)");
        copied = ImageRebase.Run(top, "flat.raw", ImageFormat.Raw);
        o.WriteLine($"copied {copied} bytes; backing file now: {ImageInfo.Get(top).BackingFilename}");
        ok &= Same(o, top, flatRaw) & CheckClean(o, top);

        Step(o, "cross-check with QEMU's own tools (qemu-img check and compare), when installed");
        ok &= QemuCrossCheck(o, folder, ["check", "top.qcow2"], ["check", "mid.qcow2"], ["check", "flat-compressed.qcow2"],
            ["compare", "top.qcow2", "flat.raw"], ["compare", "flat-compressed.qcow2", "flat.raw"]);

        o.WriteLine();
        o.WriteLine(ok ? "demo: every step verified" : "demo: FAILED (see above)");
        return ok ? 0 : 1;
    }

    /// <summary>Runs each qemu-img command in the demo folder and prints its verdict; true when all succeed (or qemu-img is absent).</summary>
    private static bool QemuCrossCheck(TextWriter o, string folder, params string[][] commands)
    {
        bool ok = true;
        foreach (string[] args in commands)
        {
            var psi = new ProcessStartInfo("qemu-img")
            {
                WorkingDirectory = folder,
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            };
            foreach (string a in args)
            {
                psi.ArgumentList.Add(a);
            }

            Process? process;
            try
            {
                process = Process.Start(psi);
            }
            catch (System.ComponentModel.Win32Exception)
            {
                o.WriteLine("qemu-img is not installed: skipped (apt-get install qemu-utils)");
                return true;
            }

            using (process)
            {
                string output = process!.StandardOutput.ReadToEnd() + process.StandardError.ReadToEnd();
                process.WaitForExit();
                string first = output.Split('\n', 2)[0];
                o.WriteLine($"qemu-img {string.Join(' ', args)}: {first} (exit {process.ExitCode})");
                ok &= process.ExitCode == 0;
            }
        }

        return ok;
    }

    private static void Step(TextWriter o, string title)
    {
        o.WriteLine();
        o.WriteLine($"== {title}");
    }

    private static void Fill(string path, long offset, long length, byte value)
    {
        using IBlockImage image = ImageOpener.Open(path);
        byte[] data = new byte[length];
        Array.Fill(data, value);
        image.Write(offset, data);
        image.Flush();
    }

    private static bool Same(TextWriter o, string a, string b)
    {
        var ro = new ImageOpenOptions { ReadOnly = true };
        using IBlockImage ia = ImageOpener.Open(a, ro);
        using IBlockImage ib = ImageOpener.Open(b, ro);
        long? diff = ImageCompare.FirstDifference(ia, ib);
        o.WriteLine(diff is null
            ? $"compare {Path.GetFileName(a)} {Path.GetFileName(b)}: identical"
            : $"compare {Path.GetFileName(a)} {Path.GetFileName(b)}: MISMATCH at offset {diff}");
        return diff is null;
    }

    private static bool CheckClean(TextWriter o, string path)
    {
        using IBlockImage image = ImageOpener.Open(path, new ImageOpenOptions { ReadOnly = true, OpenBacking = false });
        ImageCheckResult result = ((Qcow2Image)image).Check(CheckRepair.None);
        o.Write($"check {Path.GetFileName(path)}: ");
        o.Write(CheckReport.ToHuman(result));
        return result.IsClean;
    }
}
