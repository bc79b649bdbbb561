using FsCheck;
using FsCheck.Fluent;
using LibvirtStorage.Images.Tests.Infrastructure;

namespace LibvirtStorage.Images.Tests.Properties;

/// <summary>
/// One generated operation before it is placed: <see cref="Kind"/> picks the operation, A and B pick
/// offset, length and alignment once the current disk size and cluster size are known.
/// </summary>
public readonly record struct OpSeed(int Kind, int A, int B, bool Flag)
{
    public const int Write = 0, Zero = 1, Discard = 2, Resize = 3, Flush = 4, Reopen = 5;
}

/// <summary>One layer of a generated chain: its format, geometry and the operations applied to it.</summary>
public sealed record LayerSpec(ImageFormat Format, int ClusterSize, int Version, bool ExtendedL2, int RefcountBits, OpSeed[] Ops)
{
    internal ImageVariant Variant => new(
        $"{Format.ToName()}-c{ClusterSize}-v{Version}{(ExtendedL2 ? "-extl2" : "")}-rc{RefcountBits}",
        Format, ClusterSize, Version, ExtendedL2, RefcountBits);

    public override string ToString() => $"{Variant.Name} with {Ops.Length} ops";

    /// <summary>Places <paramref name="op"/> on a disk of <paramref name="size"/> bytes.</summary>
    internal DiskOp Materialize(OpSeed op, long size)
    {
        long a = (uint)op.A;
        long b = (uint)op.B;
        int cs = ClusterSize;
        long unit = (b % 4) switch
        {
            0 => cs,
            1 => 512,
            2 => 1,
            _ => ExtendedL2 ? cs / 32 : 512,
        };
        long offset = a % size / unit * unit;
        long length = (b / 4 % 4) switch
        {
            0 => unit * (1 + (b / 16 % 4)),
            1 => 1 + (b / 16 % (2L * cs)),
            2 => cs * (1 + (b / 16 % 8)),
            _ => 1 + (b / 16 % 300_000),
        };
        length = Math.Max(1, Math.Min(length, size - offset));
        return op.Kind switch
        {
            OpSeed.Write => new WriteOp(offset, (int)length, (uint)op.A ^ (uint)op.B, Constant: op.Flag),
            OpSeed.Zero => new ZeroOp(offset, length, Unmap: op.Flag),
            OpSeed.Discard => new DiscardOp(offset, length),
            OpSeed.Resize => new ResizeOp(size + ((1 + (a % 2048)) * 512)),
            OpSeed.Flush => new FlushOp(),
            _ => new ReopenOp(),
        };
    }
}

/// <summary>A chain of 1 to 3 layers (base first) over a disk of <see cref="Size"/> bytes.</summary>
public sealed record ChainScenario(long Size, LayerSpec[] Layers)
{
    public override string ToString() => $"size {Size}: " + string.Join(" <- ", Layers.Select(l => l.ToString()));
}

/// <summary>FsCheck generators for <see cref="ChainScenario"/> (no shrinking: each case runs QEMU tools).</summary>
public static class ChainArbitraries
{
    private static readonly Gen<OpSeed> OpGen =
        from kind in Gen.Frequency(
            (45, Gen.Constant(OpSeed.Write)),
            (15, Gen.Constant(OpSeed.Zero)),
            (12, Gen.Constant(OpSeed.Discard)),
            (5, Gen.Constant(OpSeed.Resize)),
            (13, Gen.Constant(OpSeed.Flush)),
            (10, Gen.Constant(OpSeed.Reopen)))
        from a in Gen.Choose(0, int.MaxValue)
        from b in Gen.Choose(0, int.MaxValue)
        from flag in Gen.Elements(true, false)
        select new OpSeed(kind, a, b, flag);

    private static Gen<LayerSpec> LayerGen(bool allowRaw, int maxOps) =>
        from raw in allowRaw ? Gen.Frequency((1, Gen.Constant(true)), (3, Gen.Constant(false))) : Gen.Constant(false)
        from cs in Gen.Elements(512, 4096, 16384, 65536, 2 << 20)
        from version in Gen.Elements(2, 3, 3)
        from extl2 in Gen.Elements(false, true)
        from bits in Gen.Elements(1, 4, 16, 16, 64)
        from n in Gen.Choose(3, maxOps)
        from ops in Gen.ArrayOf(OpGen, n)
        select raw
            ? new LayerSpec(ImageFormat.Raw, 4096, 3, false, 16, ops)
            : new LayerSpec(ImageFormat.Qcow2, cs, version, extl2 && version == 3 && cs >= 16384, version == 2 ? 16 : bits, ops);

    /// <summary>Chains of depth 1 to 3; the base may be raw.</summary>
    public static Arbitrary<ChainScenario> Chains() => Arb.From(
        from size in Gen.Elements(1L << 20, 2L << 20, (3L << 20) + 512)
        from depth in Gen.Choose(1, 3)
        from baseLayer in LayerGen(allowRaw: true, maxOps: 12)
        from overlays in Gen.ArrayOf(LayerGen(allowRaw: false, maxOps: 12), depth - 1)
        select new ChainScenario(size, [baseLayer, .. overlays]));

    /// <summary>One qcow2 image, longer sequences.</summary>
    internal static Arbitrary<ChainScenario> Single() => Arb.From(
        from size in Gen.Elements(1L << 20, 4L << 20)
        from layer in LayerGen(allowRaw: false, maxOps: 40)
        select new ChainScenario(size, [layer]));
}

/// <summary>FsCheck generator registration for single-image scenarios.</summary>
public static class SingleImageArbitraries
{
    public static Arbitrary<ChainScenario> Scenarios() => ChainArbitraries.Single();
}
