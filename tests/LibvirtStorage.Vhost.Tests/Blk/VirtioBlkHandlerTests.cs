using LibvirtStorage.Vhost.Blk;
using Xunit;
using static LibvirtStorage.Vhost.Tests.Blk.BlkHarness;

namespace LibvirtStorage.Vhost.Tests.Blk;

/// <summary>VirtioBlkHandler: IN/OUT/FLUSH/GET_ID, range and alignment checks, read-only, device failures.</summary>
public sealed class VirtioBlkHandlerTests
{
    [Fact]
    public void Read_CopiesDeviceDataIntoGuestMemory()
    {
        using var h = new BlkHarness();
        VirtioBlkCompletion c = h.Simple(VirtioBlkRequestType.In, 8, 4096, dataWritable: true);
        Assert.Equal(VirtioBlkStatus.Ok, c.Status);
        Assert.Equal(4097u, c.Written);
        Assert.Equal(0, h.StatusByte);
        Assert.True(h.Fake.Bytes(Data, 4096).SequenceEqual(h.Device.Data.AsSpan(8 * 512, 4096)));
    }

    [Fact]
    public void ReadAcrossARegionBoundary_IsSplitIntoTwoDeviceCalls()
    {
        using var h = new BlkHarness();
        h.WriteHeader(Header, 0, 2);
        VirtioBlkCompletion c = h.Run((Header, 16, false), (0xFF00, 0x400, true), (Status, 1, true));
        Assert.Equal(VirtioBlkStatus.Ok, c.Status);
        Assert.Equal(2, h.Device.Reads);
        Assert.True(h.Fake.Bytes(0xFF00, 0x100).SequenceEqual(h.Device.Data.AsSpan(1024, 0x100)));
        Assert.True(h.Fake.Bytes(0x10000, 0x300).SequenceEqual(h.Device.Data.AsSpan(1024 + 0x100, 0x300)));
    }

    [Fact]
    public void ScatteredRead_FillsEverySegmentInOrder()
    {
        using var h = new BlkHarness();
        h.WriteHeader(Header, 0, 0);
        VirtioBlkCompletion c = h.Run((Header, 16, false), (0x100000, 512, true), (Data, 1024, true), (0x101000, 513, true));
        Assert.Equal(VirtioBlkStatus.Ok, c.Status);
        Assert.Equal(2049u, c.Written);
        Assert.True(h.Fake.Bytes(0x100000, 512).SequenceEqual(h.Device.Data.AsSpan(0, 512)));
        Assert.True(h.Fake.Bytes(Data, 1024).SequenceEqual(h.Device.Data.AsSpan(512, 1024)));
        Assert.True(h.Fake.Bytes(0x101000, 512).SequenceEqual(h.Device.Data.AsSpan(1536, 512)));
        Assert.Equal(0, h.Fake.Bytes(0x101000 + 512, 1)[0]);
    }

    [Fact]
    public void Write_StoresGuestDataOnTheDevice()
    {
        using var h = new BlkHarness();
        h.Fake.Bytes(Data, 1024).Fill(0x5A);
        VirtioBlkCompletion c = h.Simple(VirtioBlkRequestType.Out, 4, 1024, dataWritable: false);
        Assert.Equal(VirtioBlkStatus.Ok, c.Status);
        Assert.Equal(1u, c.Written);
        Assert.All(h.Device.Data.AsSpan(2048, 1024).ToArray(), b => Assert.Equal(0x5A, b));
        Assert.NotEqual(0x5A, h.Device.Data[2048 + 1024]);
    }

    [Fact]
    public void WriteOnAReadOnlyDevice_IsIoErrorAndWritesNothing()
    {
        using var h = new BlkHarness(new FakeBlockDevice(readOnly: true));
        byte[] before = h.Device.Data.ToArray();
        VirtioBlkCompletion c = h.Simple(VirtioBlkRequestType.Out, 0, 512, dataWritable: false);
        Assert.Equal(VirtioBlkStatus.IoError, c.Status);
        Assert.Equal(1u, c.Written);
        Assert.Equal((byte)VirtioBlkStatus.IoError, h.StatusByte);
        Assert.Equal(before, h.Device.Data);
        Assert.Equal(0, h.Device.Writes);
    }

    [Fact]
    public void ReadOnAReadOnlyDevice_Works()
    {
        using var h = new BlkHarness(new FakeBlockDevice(readOnly: true));
        Assert.Equal(VirtioBlkStatus.Ok, h.Simple(VirtioBlkRequestType.In, 0, 512, dataWritable: true).Status);
    }

    [Fact]
    public void Flush_FlushesTheDevice()
    {
        using var h = new BlkHarness();
        VirtioBlkCompletion c = h.Simple(VirtioBlkRequestType.Flush, 0, 0, false);
        Assert.Equal(VirtioBlkStatus.Ok, c.Status);
        Assert.Equal(1u, c.Written);
        Assert.Equal(1, h.Device.Flushes);
    }

    [Fact]
    public void Writethrough_FlushesAfterEverySuccessfulWriteAndNothingElse()
    {
        using var h = new BlkHarness(settings: new VirtioBlkSettings { Writeback = false });
        Assert.Equal(VirtioBlkStatus.Ok, h.Simple(VirtioBlkRequestType.Out, 0, 512, dataWritable: false).Status);
        Assert.Equal(1, h.Device.Flushes);
        Assert.Equal(VirtioBlkStatus.Ok, h.Simple(VirtioBlkRequestType.In, 0, 512, dataWritable: true).Status);
        Assert.Equal(1, h.Device.Flushes);
        Assert.Equal(VirtioBlkStatus.IoError, h.Simple(VirtioBlkRequestType.Out, 1 << 30, 512, dataWritable: false).Status);
        Assert.Equal(1, h.Device.Flushes); // a refused write changes nothing, so there is nothing to flush
    }

    [Fact]
    public void Writeback_LeavesFlushingToTheDriver()
    {
        using var h = new BlkHarness();
        Assert.Equal(VirtioBlkStatus.Ok, h.Simple(VirtioBlkRequestType.Out, 0, 512, dataWritable: false).Status);
        Assert.Equal(0, h.Device.Flushes);
    }

    [Theory]
    [InlineData("vol-1234", 20u, "vol-1234")]
    [InlineData("0123456789abcdefghijKLMN", 20u, "0123456789abcdefghij")]
    [InlineData("vol-1234", 6u, "vol-12")]
    [InlineData("vol-1234", 64u, "vol-1234")]
    [InlineData("", 20u, "")]
    public void GetId_ReturnsTheSerialNulPadded(string serial, uint dataLength, string expected)
    {
        using var h = new BlkHarness(new FakeBlockDevice(serial: serial));
        h.Fake.Bytes(Data, 64).Fill(0xCC);
        VirtioBlkCompletion c = h.Simple(VirtioBlkRequestType.GetId, 0, dataLength, dataWritable: true);
        Assert.Equal(VirtioBlkStatus.Ok, c.Status);
        int written = (int)Math.Min(dataLength, 20);
        Assert.Equal((uint)written + 1, c.Written);
        byte[] want = new byte[written];
        System.Text.Encoding.ASCII.GetBytes(expected).AsSpan(0, Math.Min(expected.Length, written)).CopyTo(want);
        Assert.Equal(want, h.Fake.Bytes(Data, written).ToArray());
        Assert.Equal(0xCC, h.Fake.Bytes(Data + (ulong)written, 1)[0]);
    }

    [Fact]
    public void GetId_SplitAcrossDescriptors()
    {
        using var h = new BlkHarness(new FakeBlockDevice(serial: "ABCDEFGHIJKLMNOPQRST"));
        h.WriteHeader(Header, 8, 0);
        VirtioBlkCompletion c = h.Run((Header, 16, false), (Data, 7, true), (0x100000, 13, true), (Status, 1, true));
        Assert.Equal(21u, c.Written);
        Assert.Equal("ABCDEFG"u8.ToArray(), h.Fake.Bytes(Data, 7).ToArray());
        Assert.Equal("HIJKLMNOPQRST"u8.ToArray(), h.Fake.Bytes(0x100000, 13).ToArray());
    }

    [Theory]
    [InlineData(3u)]
    [InlineData(5u)]
    [InlineData(12u)]
    [InlineData(0x8000_0000u)]
    public void UnknownTypes_AreUnsupported(uint type)
    {
        using var h = new BlkHarness();
        h.WriteHeader(Header, type, 0);
        VirtioBlkCompletion c = h.Run((Header, 16, false), (Data, 512, true), (Status, 1, true));
        Assert.Equal(VirtioBlkStatus.Unsupported, c.Status);
        Assert.Equal(1u, c.Written);
        Assert.Equal(0, h.Device.Reads + h.Device.Writes);
    }

    [Theory]
    [InlineData(2048ul, 0u, true)] // zero-length read at the very end
    [InlineData(2047ul, 512u, true)] // the last sector
    [InlineData(2047ul, 1024u, false)] // one sector past the end
    [InlineData(2048ul, 512u, false)] // starts at the end
    [InlineData(2049ul, 0u, false)] // starts past the end
    [InlineData(ulong.MaxValue, 512u, false)] // sector + len overflows
    [InlineData(ulong.MaxValue >> 9, 512u, false)] // sector * 512 would overflow
    [InlineData(0x0080_0000_0000_0000ul, 512u, false)] // sector << 9 wraps to 0
    public void SectorRange_IsCheckedAgainstCapacity(ulong sector, uint length, bool ok)
    {
        using var h = new BlkHarness(); // 1 MiB = 2048 sectors
        VirtioBlkCompletion c = h.Simple(VirtioBlkRequestType.In, sector, length, dataWritable: true);
        Assert.Equal(ok ? VirtioBlkStatus.Ok : VirtioBlkStatus.IoError, c.Status);
        if (!ok)
        {
            Assert.Equal(1u, c.Written);
            Assert.Equal(0, h.Device.Reads);
        }
    }

    [Theory]
    [InlineData(512, 0ul, 100u)] // not whole sectors
    [InlineData(512, 0ul, 513u)]
    [InlineData(4096, 0ul, 512u)] // less than a 4 KiB block
    [InlineData(4096, 1ul, 4096u)] // sector not block-aligned
    [InlineData(4096, 8ul, 4096u + 512)]
    public void MisalignedRequests_AreIoErrors(int blockSize, ulong sector, uint length)
    {
        using var h = new BlkHarness(new FakeBlockDevice(blockSize: blockSize));
        Assert.Equal(VirtioBlkStatus.IoError, h.Simple(VirtioBlkRequestType.In, sector, length, dataWritable: true).Status);
        Assert.Equal(VirtioBlkStatus.IoError, h.Simple(VirtioBlkRequestType.Out, sector, length, dataWritable: false).Status);
        Assert.Equal(0, h.Device.Reads + h.Device.Writes);
    }

    [Fact]
    public void AlignedRequestOn4KDevice_Works()
    {
        using var h = new BlkHarness(new FakeBlockDevice(blockSize: 4096));
        Assert.Equal(VirtioBlkStatus.Ok, h.Simple(VirtioBlkRequestType.In, 8, 8192, dataWritable: true).Status);
    }

    [Fact]
    public void DeviceExceptions_BecomeIoError()
    {
        var failure = new IOException("disk on fire");
        using var h = new BlkHarness(new FakeBlockDevice { FailWith = failure });
        foreach (var (type, length, writable) in new[] { (VirtioBlkRequestType.In, 512u, true), (VirtioBlkRequestType.Out, 512u, false), (VirtioBlkRequestType.Flush, 0u, false) })
        {
            VirtioBlkCompletion c = h.Simple(type, 0, length, writable);
            Assert.Equal(VirtioBlkStatus.IoError, c.Status);
            Assert.Equal(1u, c.Written);
            Assert.Same(failure, c.DeviceError);
            Assert.Equal((byte)VirtioBlkStatus.IoError, h.StatusByte);
        }
    }

    [Fact]
    public void MalformedRequest_WritesNothingAndReportsZero()
    {
        using var h = new BlkHarness();
        h.WriteHeader(Header, 0, 0);
        h.Fake.Bytes(Status, 1)[0] = 0xEE;
        VirtioBlkCompletion c = h.Run((Header, 16, false), (Data, 512, false), (Status, 1, true));
        Assert.Null(c.Status);
        Assert.Equal(0u, c.Written);
        Assert.Equal(0xEE, h.StatusByte);
        Assert.Equal(0, h.Device.Reads);
    }

    [Fact]
    public void Capacity_IsReadPerRequest_SoAGrownDeviceIsServed()
    {
        var device = new ResizableDevice(512 * 8);
        using var h = new BlkHarness(device);
        Assert.Equal(VirtioBlkStatus.IoError, h.Simple(VirtioBlkRequestType.In, 8, 512, dataWritable: true).Status);
        device.Size = 512 * 16;
        Assert.Equal(VirtioBlkStatus.Ok, h.Simple(VirtioBlkRequestType.In, 8, 512, dataWritable: true).Status);
    }

    private sealed class ResizableDevice(long size) : FakeBlockDevice
    {
        public long Size { get; set; } = size;

        public override long Capacity => Size;
    }
}
