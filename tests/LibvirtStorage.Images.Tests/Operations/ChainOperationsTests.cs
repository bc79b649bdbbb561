using LibvirtStorage.Images.Operations;
using LibvirtStorage.Images.Tests.Infrastructure;
using Xunit;

namespace LibvirtStorage.Images.Tests.Operations;

/// <summary>Map, convert and compare over in-memory chains: the chain logic alone, independent of qcow2.</summary>
public sealed class ChainOperationsTests
{
    private const int Cluster = 4096;

    /// <summary>base (8 clusters): data in 0-1, zero in 5. top (10 clusters): data in 1-2, zero in 3, data in 9.</summary>
    private static (MemoryImage Base, MemoryImage Top) Chain()
    {
        var bottom = new MemoryImage("/m/base", 8 * Cluster, Cluster);
        bottom.Write(0, Fill(2 * Cluster, 1));
        bottom.WriteZeroes(5 * Cluster, Cluster, false);
        var top = new MemoryImage("/m/top", 10 * Cluster, Cluster, bottom);
        top.Write(Cluster + 100, Fill(Cluster, 2));
        top.WriteZeroes(3 * Cluster, Cluster, false);
        top.Write(9 * Cluster, Fill(Cluster, 3));
        return (bottom, top);
    }

    private static byte[] Fill(int length, byte value)
    {
        byte[] b = new byte[length];
        Array.Fill(b, value);
        return b;
    }

    [Fact]
    public void Map_names_the_deciding_layer_and_merges_like_qemu_img()
    {
        (_, MemoryImage top) = Chain();
        IReadOnlyList<MapExtent> map = ImageMap.Get(top);
        MapExtent[] expected =
        [
            new(0, Cluster, 1, true, false, true, MemoryImage.HostBase, "/m/base"),
            new(Cluster, 2 * Cluster, 0, true, false, true, Cluster + MemoryImage.HostBase, "/m/top"),
            new(3 * Cluster, Cluster, 0, true, true, false, null, null),
            new(4 * Cluster, Cluster, 1, false, true, false, null, null),
            new(5 * Cluster, Cluster, 1, true, true, false, null, null),
            new(6 * Cluster, 2 * Cluster, 1, false, true, false, null, null),
            new(8 * Cluster, Cluster, 0, false, true, false, null, null),
            new(9 * Cluster, Cluster, 0, true, false, true, (9 * Cluster) + MemoryImage.HostBase, "/m/top"),
        ];
        Assert.Equal(expected, map);
    }

    [Fact]
    public void Map_does_not_merge_runs_whose_host_offsets_do_not_continue()
    {
        var image = new MemoryImage("/m/a", 4 * Cluster, Cluster);
        image.Write(0, Fill(4 * Cluster, 1));
        // Contiguous host offsets: one extent.
        Assert.Single(ImageMap.Get(image));
        var top = new MemoryImage("/m/b", 4 * Cluster, Cluster, image);
        top.Write(Cluster, Fill(Cluster, 2));
        Assert.Equal(3, ImageMap.Get(top).Count);
    }

    [Fact]
    public void Convert_of_a_chain_reads_only_data_and_equals_it()
    {
        (MemoryImage bottom, MemoryImage top) = Chain();
        using var dir = new ScratchDir();
        int readsBefore = bottom.Reads;
        ImageConvert.Run(top, dir["out.raw"], new ImageCreateOptions { Format = ImageFormat.Raw });
        // Unallocated-everywhere and zero runs were never read: only cluster 0 comes from the base.
        Assert.Equal(1, bottom.Reads - readsBefore);
        using IBlockImage output = ImageOpener.Open(dir["out.raw"], new ImageOpenOptions { ReadOnly = true });
        Assert.Equal(top.VirtualSize, output.VirtualSize);
        Assert.Null(ImageCompare.FirstDifference(top, output));
    }

    [Fact]
    public void Compare_finds_the_first_differing_byte_and_treats_a_zero_tail_as_equal()
    {
        (_, MemoryImage top) = Chain();
        var copy = new MemoryImage("/m/copy", 12 * Cluster, Cluster);
        byte[] all = new byte[top.VirtualSize];
        top.Read(0, all);
        copy.Write(0, all);
        Assert.Null(ImageCompare.FirstDifference(top, copy));
        Assert.Equal(10L * Cluster, ImageCompare.FirstDifference(top, copy, strict: true));
        copy.Write((2 * Cluster) + 7, [0xEE]);
        Assert.Equal((2L * Cluster) + 7, ImageCompare.FirstDifference(top, copy));
        copy.Write((2 * Cluster) + 7, [all[(2 * Cluster) + 7]]);
        copy.Write((11 * Cluster) + 5, [1]);
        Assert.Equal((11L * Cluster) + 5, ImageCompare.FirstDifference(copy, top));
    }

    [Fact]
    public void Chain_status_never_reports_past_the_top()
    {
        (_, MemoryImage top) = Chain();
        ChainExtent e = ChainStatus.Get(top, 7 * Cluster, long.MaxValue / 2);
        Assert.Equal(Cluster, e.Length);
        Assert.False(e.Present);
        Assert.Throws<ArgumentOutOfRangeException>(() => ChainStatus.Get(top, 10 * Cluster, 1));
    }
}
