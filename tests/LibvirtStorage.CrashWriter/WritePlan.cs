using LibvirtStorage.Images.Tests.Infrastructure;

namespace LibvirtStorage.CrashWriter;

/// <summary>One write of the plan: sequence number, place, and the data it carries.</summary>
public sealed record PlannedWrite(int Seq, long Offset, int Length, uint Seed, bool Constant)
{
    /// <summary>The bytes written: a constant (checkable with qemu-io read -P) or the offset-dependent pattern.</summary>
    public byte[] Data() => Pattern.WriteData(Seed, Offset, Length, Constant);
}

/// <summary>
/// The deterministic sequence of allocating writes the crash writer performs for a seed; the test
/// regenerates it to know what must be on disk after a kill.
/// </summary>
public static class WritePlan
{
    public static IEnumerable<PlannedWrite> Generate(int seed, long virtualSize, int clusterSize)
    {
        var rng = new Random(seed);
        for (int seq = 0; ; seq++)
        {
            int length;
            long offset;
            switch (rng.Next(8))
            {
                case < 5:
                    // Whole clusters: fresh allocations (L2 tables, refcount blocks as the file grows).
                    length = clusterSize * rng.Next(1, 4);
                    offset = rng.NextInt64(0, virtualSize / clusterSize) * clusterSize;
                    break;
                case < 7:
                    // Partial clusters at unaligned offsets: copy-on-write from the backing or zero-fill.
                    length = rng.Next(1, 3 * clusterSize);
                    offset = rng.NextInt64(0, virtualSize);
                    break;
                default:
                    length = rng.Next(64 * 1024, 512 * 1024);
                    offset = rng.NextInt64(0, virtualSize);
                    break;
            }

            length = (int)Math.Min(length, virtualSize - offset);
            if (length == 0)
            {
                length = 1;
                offset = virtualSize - 1;
            }

            yield return new PlannedWrite(seq, offset, length, (uint)((seed * 1_000_003L) + seq), Constant: seq % 2 == 0);
        }
    }
}
