using LibvirtStorage.Images.Qcow2;
using Xunit;

namespace LibvirtStorage.Images.Tests.Qcow2;

public sealed class Qcow2LayoutTests
{
    [Theory]
    [InlineData(9)]
    [InlineData(16)]
    [InlineData(21)]
    public void CompressedDescriptorsRoundTrip(int clusterBits)
    {
        var layout = new Qcow2Layout(clusterBits, extendedL2: false, refcountOrder: 4, version: 3);
        long offset = (5L << clusterBits) + 1234;
        int size = Math.Min(1 << clusterBits, 700);

        ulong entry = layout.CompressedEntry(offset, size);
        (long parsedOffset, int parsedSize) = layout.CompressedExtent(entry);

        Assert.NotEqual(0UL, entry & Qcow2Layout.FlagCompressed);
        Assert.Equal(offset, parsedOffset);
        Assert.True(parsedSize >= size, "the descriptor covers at least the compressed bytes");
        Assert.Equal(0, (parsedOffset + parsedSize) % 512);
    }

    [Fact]
    public void ExtendedL2HalvesTheEntriesPerTableAndHasThirtyTwoSubclusters()
    {
        var plain = new Qcow2Layout(16, extendedL2: false, refcountOrder: 4, version: 3);
        var extended = new Qcow2Layout(16, extendedL2: true, refcountOrder: 4, version: 3);

        Assert.Equal(8192, plain.L2Entries);
        Assert.Equal(4096, extended.L2Entries);
        Assert.Equal(2048, extended.SubclusterSize);
        Assert.Equal(65536, plain.SubclusterSize);
    }

    [Theory]
    [InlineData(0, 1UL)]
    [InlineData(1, 3UL)]
    [InlineData(2, 15UL)]
    [InlineData(3, 255UL)]
    [InlineData(4, 65535UL)]
    [InlineData(5, 0xffffffffUL)]
    [InlineData(6, ulong.MaxValue)]
    public void RefcountEntriesOfEveryWidthAreIndependent(int order, ulong max)
    {
        var block = new byte[512];
        int entries = 512 * 8 >> order;
        for (int i = 0; i < entries; i++)
        {
            Qcow2Refcounts.WriteRefcount(block, i, (ulong)i & max, order);
        }

        for (int i = 0; i < entries; i++)
        {
            Assert.Equal((ulong)i & max, Qcow2Refcounts.ReadRefcount(block, i, order));
        }

        Qcow2Refcounts.WriteRefcount(block, 1, max, order);
        Assert.Equal(0UL, Qcow2Refcounts.ReadRefcount(block, 0, order));
        Assert.Equal(max, Qcow2Refcounts.ReadRefcount(block, 1, order));
        Assert.Equal(2UL & max, Qcow2Refcounts.ReadRefcount(block, 2, order));
    }
}
