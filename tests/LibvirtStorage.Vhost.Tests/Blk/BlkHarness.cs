using System.Buffers.Binary;
using LibvirtStorage.Vhost.Blk;
using LibvirtStorage.Vhost.Memory;
using LibvirtStorage.Vhost.Tests.Memory;
using LibvirtStorage.Vhost.Tests.Virtqueue;
using LibvirtStorage.Vhost.Virtqueue;
using Xunit;

namespace LibvirtStorage.Vhost.Tests.Blk;

/// <summary>
/// A guest (FakeGuestMemory.Standard plus a FakeDriver queue at 0/0x4000/0x8000) and a device side (queue, parser,
/// handler, fake block device). Free guest memory for buffers: 0x9000..0x20000 (two contiguous regions) and
/// 0x100000..0x110000 (after a gap); 0x200000..0x201000 is read-only.
/// </summary>
internal sealed class BlkHarness : IDisposable
{
    public const ulong Header = 0x9000;
    public const ulong Data = 0xA000;
    public const ulong Status = 0x9F00;
    public const ulong ReadOnlyRegion = 0x200000;

    private VirtioBlkRequest _request;

    public BlkHarness(FakeBlockDevice? device = null, VirtioBlkSettings? settings = null, ushort queueSize = 64)
    {
        Fake = new FakeGuestMemory((0, 0x10000, false), (0x10000, 0x10000, false), (0x100000, 0x10000, false), (ReadOnlyRegion, 0x1000, true));
        Driver = new FakeDriver(Memory, queueSize);
        Queue = Driver.CreateQueue();
        Device = device ?? new FakeBlockDevice();
        Device.Guest ??= Fake;
        Settings = settings ?? new VirtioBlkSettings();
        Handler = new VirtioBlkHandler(Settings);
    }

    public FakeGuestMemory Fake { get; }

    public GuestMemory Memory => Fake.Memory;

    public FakeDriver Driver { get; }

    public SplitVirtqueue Queue { get; }

    public FakeBlockDevice Device { get; }

    public VirtioBlkSettings Settings { get; }

    public VirtioBlkHandler Handler { get; }

    /// <summary>The last parsed request.</summary>
    public ref VirtioBlkRequest Request => ref _request;

    public void WriteHeader(ulong gpa, uint type, ulong sector, uint reserved = 0)
    {
        Span<byte> h = Fake.Bytes(gpa, 16);
        BinaryPrimitives.WriteUInt32LittleEndian(h, type);
        BinaryPrimitives.WriteUInt32LittleEndian(h[4..], reserved);
        BinaryPrimitives.WriteUInt64LittleEndian(h[8..], sector);
    }

    public void WriteRange(ulong gpa, ulong sector, uint sectors, uint flags)
    {
        Span<byte> s = Fake.Bytes(gpa, 16);
        BinaryPrimitives.WriteUInt64LittleEndian(s, sector);
        BinaryPrimitives.WriteUInt32LittleEndian(s[8..], sectors);
        BinaryPrimitives.WriteUInt32LittleEndian(s[12..], flags);
    }

    /// <summary>Publishes a direct chain, pops and parses it (into <see cref="Request"/>).</summary>
    public ref VirtioBlkRequest Parse(params (ulong Address, uint Length, bool Write)[] buffers)
    {
        Driver.AddChain(buffers);
        return ref PopAndParse();
    }

    public ref VirtioBlkRequest PopAndParse()
    {
        Assert.Equal(PopResult.Chain, Queue.TryPopAvail(Memory, out DescriptorChain chain));
        VirtioBlkRequest.Parse(ref chain, Memory, Settings.SegMax, ref _request);
        return ref _request;
    }

    /// <summary>Publishes, parses and executes a chain; completes it on the used ring.</summary>
    public VirtioBlkCompletion Run(params (ulong Address, uint Length, bool Write)[] buffers)
    {
        ushort head = Driver.AddChain(buffers);
        PopAndParse();
        VirtioBlkCompletion completion = Handler.Execute(in _request, Memory, Device);
        Assert.True(Queue.AddUsed(Memory, head, completion.Written));
        Assert.True(Driver.TryTakeUsed(out uint id, out uint length));
        Assert.Equal(head, id);
        Assert.Equal(completion.Written, length);
        return completion;
    }

    /// <summary>The usual three-descriptor request: header, data, status byte.</summary>
    public VirtioBlkCompletion Simple(VirtioBlkRequestType type, ulong sector, uint dataLength, bool dataWritable)
    {
        WriteHeader(Header, (uint)type, sector);
        Fake.Bytes(Status, 1)[0] = 0xEE;
        return dataLength == 0
            ? Run((Header, 16, false), (Status, 1, true))
            : Run((Header, 16, false), (Data, dataLength, dataWritable), (Status, 1, true));
    }

    public byte StatusByte => Fake.Bytes(Status, 1)[0];

    public void Dispose()
    {
        Assert.True(Fake.GuardsIntact());
        Assert.Equal(0, Device.SpansOutsideGuest);
        Fake.Dispose();
    }
}
