namespace LibvirtStorage.Images.Tests.Infrastructure;

/// <summary>
/// Operation scripts that touch every interesting shape for a given geometry: whole clusters, partial
/// clusters, writes across a cluster boundary, subclusters, byte-unaligned writes, zeroes with and
/// without unmap inside written data, discards, and the last bytes of the disk.
/// </summary>
internal static class FillScripts
{
    /// <summary>
    /// A script of qemu-io-expressible operations (constant-byte writes) for a disk of
    /// <paramref name="size"/> bytes. <paramref name="seed"/> varies the bytes and, slightly, the places.
    /// </summary>
    public static List<DiskOp> Standard(int clusterSize, int allocationUnit, long size, uint seed, bool constant = true)
    {
        long cs = clusterSize;
        long mid = (size / 2) & ~(cs - 1);
        uint s = seed * 100;
        var ops = new List<DiskOp>
        {
            new WriteOp(0, clusterSize, s + 1, constant),
            new WriteOp(cs + 512, 1024, s + 2, constant),
            new WriteOp((3 * cs) - 512, 1024, s + 3, constant),
            new WriteOp((5 * cs) + 7, 1000, s + 4, constant),
            new WriteOp(mid, (int)Math.Min(3 * cs, size - mid), s + 5, constant),
            new ZeroOp(mid + cs, cs, Unmap: false),
            new ZeroOp(mid + (2 * cs) + 512, 1024, Unmap: true),
            new DiscardOp(0, cs),
            new WriteOp(size - 1536, 1536, s + 6, constant),
            new WriteOp(0, 512, s + 7, constant),
            new ZeroOp(size - cs, 100, Unmap: false),
        };
        if (allocationUnit < clusterSize)
        {
            long u = allocationUnit;
            long c = 6 * cs;
            ops.Add(new WriteOp(c + u, (int)u, s + 8, constant));
            ops.Add(new WriteOp(c + (5 * u), (int)(3 * u), s + 9, constant));
            ops.Add(new WriteOp(c + (10 * u) + 100, 200, s + 10, constant));
            ops.Add(new ZeroOp(c + (5 * u), u, Unmap: false));
            ops.Add(new ZeroOp(c + (20 * u), 2 * u, Unmap: true));
        }

        ops.Add(new FlushOp());
        return ops;
    }

    /// <summary>The qemu-io command lines for <paramref name="ops"/> (all must be expressible).</summary>
    public static List<string> ToQemuIo(IEnumerable<DiskOp> ops) =>
        ops.Select(o => o.ToQemuIo() ?? throw new ArgumentException($"{o} has no qemu-io form", nameof(ops))).ToList();
}
