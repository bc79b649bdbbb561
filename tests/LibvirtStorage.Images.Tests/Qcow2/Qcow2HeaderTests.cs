using LibvirtStorage.Images.Qcow2;
using Xunit;

namespace LibvirtStorage.Images.Tests.Qcow2;

public sealed class Qcow2HeaderTests
{
    private static Qcow2Header Sample() => new Qcow2Header
    {
        Version = 3,
        ClusterBits = 16,
        Size = 1 << 30,
        L1Size = 2,
        L1TableOffset = 3 * 65536,
        RefcountTableOffset = 65536,
        RefcountTableClusters = 1,
        RefcountOrder = 4,
        HeaderLength = 112,
        Extensions = [new Qcow2HeaderExtension(0x12345678, [1, 2, 3])],
    }.WithBacking("base.raw", "raw");

    [Fact]
    public void WriteThenParseRoundTripsEveryField()
    {
        var bytes = new byte[65536];
        Assert.True(Sample().TryWrite(bytes));

        Qcow2Header parsed = Qcow2Header.Parse("t", bytes, 4 * 65536);

        Assert.Equal(1UL << 30, parsed.Size);
        Assert.Equal("base.raw", parsed.BackingFile);
        Assert.Equal("raw", parsed.BackingFormat);
        Assert.Contains(parsed.Extensions, e => e.Type == 0x12345678 && e.Data.SequenceEqual(new byte[] { 1, 2, 3 }));
        Assert.Equal(3 * 65536UL, parsed.L1TableOffset);
    }

    [Fact]
    public void RemovingTheBackingFileDropsItsFormatExtension()
    {
        Qcow2Header without = Sample().WithBacking(null, null);
        var bytes = new byte[65536];
        Assert.True(without.TryWrite(bytes));

        Qcow2Header parsed = Qcow2Header.Parse("t", bytes, 4 * 65536);

        Assert.Null(parsed.BackingFile);
        Assert.Null(parsed.BackingFormat);
        Assert.Single(parsed.Extensions);
    }

    [Theory]
    [InlineData(4, 2u, ErrorKind.UnsupportedFeature)]        // version 2 -> patched to 4 below
    [InlineData(20, 8u, ErrorKind.InvalidFormat)]            // cluster bits 8
    [InlineData(20, 22u, ErrorKind.InvalidFormat)]           // cluster bits 22
    [InlineData(32, 1u, ErrorKind.UnsupportedFeature)]       // encrypted (AES)
    [InlineData(36, 0x7fffffffu, ErrorKind.Corrupt)]         // absurd L1 size
    [InlineData(56, 0x10000000u, ErrorKind.Corrupt)]         // absurd refcount table
    [InlineData(60, 100000u, ErrorKind.Corrupt)]             // too many snapshots
    public void HostileFieldsAreRefusedWithATypedError(int offset, uint value, ErrorKind kind)
    {
        var bytes = new byte[65536];
        Assert.True(Sample().TryWrite(bytes));
        if (offset == 4)
        {
            value = 4;
        }

        System.Buffers.Binary.BinaryPrimitives.WriteUInt32BigEndian(bytes.AsSpan(offset), value);

        var e = Assert.ThrowsAny<ImageException>(() => Qcow2Header.Parse("t", bytes, 4 * 65536));
        Assert.Equal(kind, e.Kind);
    }

    [Fact]
    public void UnknownIncompatibleBitsAndExternalDataFilesAreRefused()
    {
        foreach (ulong bit in new[] { 1UL << 40, Qcow2Header.IncompatDataFile })
        {
            var bytes = new byte[65536];
            Assert.True((Sample() with { IncompatibleFeatures = bit }).TryWrite(bytes));
            var e = Assert.ThrowsAny<ImageException>(() => Qcow2Header.Parse("t", bytes, 4 * 65536));
            Assert.Equal(ErrorKind.UnsupportedFeature, e.Kind);
        }
    }

    [Fact]
    public void TablesPastTheEndOfTheFileAreCorruption()
    {
        var bytes = new byte[65536];
        Assert.True(Sample().TryWrite(bytes));

        var e = Assert.ThrowsAny<ImageException>(() => Qcow2Header.Parse("t", bytes, 2 * 65536));

        Assert.Equal(ErrorKind.Corrupt, e.Kind);
    }

    [Fact]
    public void ExtensionLongerThanTheClusterIsRefused()
    {
        var bytes = new byte[65536];
        Assert.True(Sample().TryWrite(bytes));
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32BigEndian(bytes.AsSpan(112 + 4), 0x00ffffff);

        var e = Assert.ThrowsAny<ImageException>(() => Qcow2Header.Parse("t", bytes, 4 * 65536));

        Assert.Equal(ErrorKind.InvalidFormat, e.Kind);
    }
}
