using System.Buffers.Binary;
using System.Diagnostics;
using System.Globalization;
using LibvirtStorage.Images.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace LibvirtStorage.Images.Tests.Fuzz;

/// <summary>
/// A bounded-time mutation fuzzer over the header and tables of a few seed images (byte flips, field
/// overwrites with interesting values, splices, truncation). Each mutant is opened and read (and
/// sometimes written) under a time limit: only <see cref="ImageException"/> may escape, nothing may
/// hang, nothing may allocate without bound.
/// </summary>
/// <remarks>
/// LVSTOR_FUZZ_SECONDS sets the budget (default 20); LVSTOR_FUZZ_SEED replays a run. Failing mutants
/// are kept under /tmp/lvstor-fuzz-failures with their seed and case number in the name.
/// </remarks>
public sealed class HeaderFuzzTests(ITestOutputHelper output)
{
    private static readonly TimeSpan PerCaseLimit = TimeSpan.FromSeconds(10);

    private static readonly int[] FieldOffsets = [4, 8, 12, 16, 20, 24, 32, 36, 40, 48, 56, 60, 64, 72, 80, 88, 96, 100, 104];

    [Fact]
    public void MutatedImagesOnlyEverRaiseImageException()
    {
        int seconds = int.TryParse(Environment.GetEnvironmentVariable("LVSTOR_FUZZ_SECONDS"), out int s) ? s : 20;
        int masterSeed = int.TryParse(Environment.GetEnvironmentVariable("LVSTOR_FUZZ_SEED"), out int m) ? m : Environment.TickCount & 0x7fffffff;
        output.WriteLine($"fuzz seed {masterSeed} (LVSTOR_FUZZ_SEED={masterSeed} replays), budget {seconds} s");

        using var dir = new TempDir();
        List<(string Name, byte[] Bytes, int Region)> seeds = MakeSeeds(dir);
        var failures = new Dictionary<string, (string First, int Count)>(StringComparer.Ordinal);
        var outcomes = new Dictionary<string, int>();
        var clock = Stopwatch.StartNew();
        int cases = 0;
        while (clock.Elapsed < TimeSpan.FromSeconds(seconds))
        {
            int caseSeed = (int)(Pattern.Mix((uint)masterSeed, cases) & 0x7fffffff);
            var rng = new Random(caseSeed);
            (string name, byte[] original, int region) = seeds[rng.Next(seeds.Count)];
            byte[] mutant = Mutate(original, region, rng, seeds);
            string path = dir.File(name);
            File.WriteAllBytes(path, mutant);
            bool write = rng.Next(4) == 0;
            long writeAt = rng.NextInt64(0, 4L << 20);

            Outcome o = Guard.Run(() => Exercise(path, write, writeAt), PerCaseLimit);
            string key = o.Kind == OutcomeKind.ImageError ? $"ImageException/{o.ImageErrorKind}" : o.Kind.ToString();
            outcomes[key] = outcomes.GetValueOrDefault(key) + 1;
            if (o.Kind is OutcomeKind.OtherException or OutcomeKind.Hang || o.AllocatedBytes >= Guard.AllocationLimit)
            {
                // One report per distinct failure (exception type and message), with its first mutant.
                string signature = o.Kind == OutcomeKind.OtherException ? $"{o.Error!.GetType().Name}: {o.Error.Message}" : o.Kind.ToString();
                if (failures.TryGetValue(signature, out (string First, int Count) seen))
                {
                    failures[signature] = (seen.First, seen.Count + 1);
                }
                else
                {
                    string kept = Keep(mutant, name, masterSeed, cases);
                    failures[signature] = ($"case {cases} (seed {masterSeed}, {name}, write={write} at {writeAt}): {o}\n  mutant kept at {kept}", 1);
                }

                if (o.Kind == OutcomeKind.Hang)
                {
                    break; // the hung thread still owns the file
                }
            }

            cases++;
        }

        output.WriteLine($"{cases} mutants in {clock.Elapsed.TotalSeconds:F1} s: " +
            string.Join(", ", outcomes.OrderBy(p => p.Key, StringComparer.Ordinal).Select(p => $"{p.Key}={p.Value}")));
        Assert.True(failures.Count == 0, $"{failures.Count} distinct failures:\n" +
            string.Join("\n", failures.Values.Select(f => $"[{f.Count} mutants] {f.First}")));
        Assert.True(cases > 0, "the fuzzer ran no case");
    }

    private static void Exercise(string path, bool write, long writeAt)
    {
        Guard.OpenAndRead(path, readOnly: !write, image =>
        {
            if (write && image.VirtualSize > 0)
            {
                long at = writeAt % image.VirtualSize;
                int len = (int)Math.Min(70_000, image.VirtualSize - at);
                image.Write(at, Pattern.Make(5, at, len));
                image.Flush();
                image.Read(at, new byte[len]);
            }
        });
    }

    /// <summary>Seed images with their mutation region: the header and the tables in the first clusters.</summary>
    private static List<(string, byte[], int)> MakeSeeds(TempDir dir)
    {
        var seeds = new List<(string, byte[], int)>();
        string a = dir.File("seed-v3.qcow2");
        Qemu.Create(a, "qcow2", 4L << 20, "cluster_size=65536");
        Qemu.Io(a, "qcow2", ["write -P 0x5a 0 131072", "write -P 0x6b 1048576 65536", "write -z 2097152 65536"]);
        seeds.Add(("v3.qcow2", File.ReadAllBytes(a), 0x50000));

        string b = dir.File("seed-v2.qcow2");
        Qemu.Create(b, "qcow2", 2L << 20, "cluster_size=512,compat=0.10");
        Qemu.Io(b, "qcow2", ["write -P 0x11 0 4096", "write -P 0x22 40960 2048", "write -P 0x33 1048576 512"]);
        seeds.Add(("v2.qcow2", File.ReadAllBytes(b), 8192));

        Qemu.Create(dir.File("base.raw"), "raw", 4L << 20);
        Qemu.Io(dir.File("base.raw"), "raw", ["write -P 0x44 0 4194304"]);
        string c = dir.File("seed-extl2.qcow2");
        Qemu.Create(c, "qcow2", -1, "cluster_size=16384,extended_l2=on", backing: "base.raw", backingFormat: "raw");
        Qemu.Io(c, "qcow2", ["write -P 0x55 1024 1024", "write -z 32768 16384", "write -P 0x66 100000 30000"]);
        seeds.Add(("extl2.qcow2", File.ReadAllBytes(c), 16384 * 6));

        string raw = dir.File("seed-src.raw");
        File.WriteAllBytes(raw, Enumerable.Range(0, 1 << 20).Select(i => (byte)(i >> 12)).ToArray());
        string d = dir.File("seed-zstd.qcow2");
        Qemu.Img("convert", "-c", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=4096,compression_type=zstd", raw, d);
        byte[] zstd = File.ReadAllBytes(d);
        seeds.Add(("zstd.qcow2", zstd, Math.Min(zstd.Length, 8 * 4096)));
        return seeds;
    }

    private static byte[] Mutate(byte[] original, int region, Random rng, List<(string Name, byte[] Bytes, int Region)> seeds)
    {
        byte[] m = (byte[])original.Clone();
        region = Math.Min(region, m.Length);
        int count = 1 + rng.Next(6);
        for (int i = 0; i < count; i++)
        {
            int at = rng.Next(2) == 0 ? rng.Next(Math.Min(512, region)) : rng.Next(region);
            switch (rng.Next(6))
            {
                case 0:
                    m[at] ^= (byte)(1 << rng.Next(8));
                    break;
                case 1:
                    m[at] = (byte)rng.Next(256);
                    break;
                case 2:
                    int field = FieldOffsets[rng.Next(FieldOffsets.Length)];
                    BinaryPrimitives.WriteUInt32BigEndian(m.AsSpan(field), (uint)Interesting(rng, m.Length));
                    break;
                case 3:
                    int word = Math.Min(at & ~7, m.Length - 8);
                    BinaryPrimitives.WriteUInt64BigEndian(m.AsSpan(word), Interesting(rng, m.Length) | (rng.Next(2) == 0 ? 1UL << 63 : 0));
                    break;
                case 4:
                    byte[] donor = seeds[rng.Next(seeds.Count)].Bytes;
                    int len = rng.Next(1, 256);
                    int from = rng.Next(Math.Max(1, donor.Length - len));
                    int to = Math.Min(at, m.Length - len);
                    Array.Copy(donor, from, m, Math.Max(0, to), Math.Min(len, donor.Length - from));
                    break;
                default:
                    if (rng.Next(8) == 0)
                    {
                        Array.Resize(ref m, rng.Next(m.Length));
                        return m;
                    }

                    m[at] = 0xff;
                    break;
            }
        }

        return m;
    }

    private static ulong Interesting(Random rng, long fileLength) => rng.Next(12) switch
    {
        0 => 0,
        1 => 1,
        2 => 0xffff_ffff,
        3 => 0x7fff_ffff,
        4 => 0x8000_0000,
        5 => (ulong)fileLength,
        6 => (ulong)fileLength + 65536,
        7 => 1UL << 62,
        8 => ulong.MaxValue,
        9 => (ulong)rng.Next(64),
        10 => (ulong)rng.Next(1 << 20) << 9,
        _ => (ulong)rng.NextInt64(),
    };

    private static string Keep(byte[] mutant, string name, int masterSeed, int index)
    {
        string folder = Path.Combine(Path.GetTempPath(), "lvstor-fuzz-failures");
        Directory.CreateDirectory(folder);
        string path = Path.Combine(folder, string.Create(CultureInfo.InvariantCulture, $"{masterSeed}-{index}-{name}"));
        File.WriteAllBytes(path, mutant);
        return path;
    }
}
