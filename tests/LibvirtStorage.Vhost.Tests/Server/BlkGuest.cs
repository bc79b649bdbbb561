using System.Buffers.Binary;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using LibvirtStorage.Vhost.Backend;
using LibvirtStorage.Vhost.Blk;
using LibvirtStorage.Vhost.Memory;
using LibvirtStorage.Vhost.Protocol;
using LibvirtStorage.Vhost.Tests.Protocol;
using LibvirtStorage.Vhost.Tests.Virtqueue;
using Microsoft.Win32.SafeHandles;
using Xunit;

namespace LibvirtStorage.Vhost.Tests.Server;

/// <summary>
/// A virtio-blk guest behind a QEMU-shaped front-end, connected to a server's UNIX socket: 1 MiB of memfd memory
/// (rings at GPA 0, request header at 0x8000, status at 0x8100, data at 0x10000), one queue of 64, and synchronous
/// requests (post a chain, kick, wait for the call, take the used entry).
/// </summary>
internal sealed class BlkGuest : IDisposable
{
    public const ulong MemorySize = 1 << 20;
    public const int MaxData = 0x10000;
    private const ulong UserBase = 0x7f00_0000_0000;
    private const ushort QueueSize = 64;
    private const ulong HeaderAt = 0x8000, StatusAt = 0x8100, DataAt = 0x10000;

    private readonly SafeFileHandle _memFd = TestNative.MemFd("blk-guest", (long)MemorySize);
    private readonly SafeFileHandle _kick = TestNative.EventFd();
    private readonly SafeFileHandle _call = TestNative.EventFd();
    private readonly GuestRegion _region;
    private readonly GuestMemoryMap _map;
    private FakeDriver? _driver;

    private BlkGuest(SafeHandle socket)
    {
        Frontend = new VhostUserFrontendChannel(socket);
        _region = GuestRegion.Map(_memFd, 0, new GuestAddress(0), MemorySize, UserBase);
        Assert.True(GuestMemoryMap.TryCreate([_region], out GuestMemoryMap? map, out _));
        _map = map!;
    }

    public VhostUserFrontendChannel Frontend { get; }

    public ulong Features { get; private set; }

    private GuestMemory Memory => _map.Memory;

    /// <summary>Connects to <paramref name="socketPath"/> (blocking fd, as QEMU's chardev uses it).</summary>
    public static BlkGuest Connect(string socketPath)
    {
        using var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        socket.Connect(new UnixDomainSocketEndPoint(socketPath));
        return new BlkGuest(UnixSocket.DuplicateBlocking(socket.SafeHandle));
    }

    /// <summary>Connects over one end of a socketpair (the other end goes to <c>--fd</c>).</summary>
    public static BlkGuest Over(SafeHandle socket) => new(socket);

    /// <summary>Negotiation, memory table and queue 0, in QEMU's order.</summary>
    public BlkGuest Start()
    {
        Frontend.Send(FrontendRequest.GetFeatures);
        Features = Frontend.ReceiveU64Reply(FrontendRequest.GetFeatures);
        Frontend.Send(FrontendRequest.GetProtocolFeatures);
        var offered = (VhostUserProtocolFeatures)Frontend.ReceiveU64Reply(FrontendRequest.GetProtocolFeatures);
        Assert.True(offered.HasFlag(VhostUserProtocolFeatures.Config | VhostUserProtocolFeatures.ReplyAck | VhostUserProtocolFeatures.Mq));
        var wanted = VhostUserProtocolFeatures.Mq | VhostUserProtocolFeatures.Config | VhostUserProtocolFeatures.ReplyAck;
        Frontend.Send(FrontendRequest.SetProtocolFeatures, new VhostUserU64((ulong)wanted));
        Frontend.Send(FrontendRequest.SetOwner);
        Ack(FrontendRequest.SetFeatures, new VhostUserU64(Features & ~VhostUserRequestDispatcher.VirtioRingFEventIdx));
        Frontend.SetMemTable([new VhostUserMemoryRegion(0, MemorySize, UserBase, 0)], [_memFd], needReply: true);
        Assert.Equal(0UL, Frontend.ReceiveU64Reply(FrontendRequest.SetMemTable));
        _driver = new FakeDriver(Memory, QueueSize, 0x0, 0x1000, 0x2000);
        Ack(FrontendRequest.SetVringNum, new VhostUserVringState(0, QueueSize));
        Ack(FrontendRequest.SetVringBase, new VhostUserVringState(0, 0));
        Ack(FrontendRequest.SetVringAddr, new VhostUserVringAddress
        {
            Index = 0, DescUserAddr = UserBase, AvailUserAddr = UserBase + 0x1000, UsedUserAddr = UserBase + 0x2000,
        });
        Ack(FrontendRequest.SetVringKick, new VhostUserU64(0), [_kick]);
        Ack(FrontendRequest.SetVringCall, new VhostUserU64(0), [_call]);
        Ack(FrontendRequest.SetVringEnable, new VhostUserVringState(0, 1));
        return this;
    }

    /// <summary>GET_CONFIG of the first <paramref name="length"/> bytes of the config space.</summary>
    public byte[] GetConfig(int length = VirtioBlkConfig.Size)
    {
        Span<byte> payload = stackalloc byte[12 + length];
        int n = VhostUserFrontendChannel.EncodeConfig(payload, 0, 0, new byte[length]);
        Frontend.Send(FrontendRequest.GetConfig, payload[..n]);
        return Frontend.ReceiveReply(FrontendRequest.GetConfig)[12..].ToArray();
    }

    /// <summary>One request: header, optional data (device-readable <paramref name="output"/> or
    /// <paramref name="inputLength"/> device-writable bytes), status. Returns status and used length.</summary>
    public (byte Status, uint Used, byte[] Input) Request(VirtioBlkRequestType type, ulong sector, byte[]? output = null, int inputLength = 0)
    {
        Span<byte> header = stackalloc byte[16];
        BinaryPrimitives.WriteUInt32LittleEndian(header, (uint)type);
        BinaryPrimitives.WriteUInt64LittleEndian(header[8..], sector);
        Put(HeaderAt, header);
        Put(StatusAt, [0xff]);
        var buffers = new List<(ulong, uint, bool)> { (HeaderAt, 16, false) };
        if (output is not null)
        {
            Put(DataAt, output);
            buffers.Add((DataAt, (uint)output.Length, false));
        }
        else if (inputLength > 0)
        {
            buffers.Add((DataAt, (uint)inputLength, true));
        }

        buffers.Add((StatusAt, 1, true));
        ushort head = _driver!.AddChain([.. buffers]);
        TestNative.WriteU64(_kick, 1);
        Assert.True(WaitCall(), "no used buffer within 10 s");
        Assert.True(_driver.TryTakeUsed(out uint id, out uint used));
        Assert.Equal(head, (ushort)id);
        return (Get(StatusAt, 1)[0], used, inputLength > 0 ? Get(DataAt, inputLength) : []);
    }

    public void Dispose()
    {
        Frontend.Dispose();
        _map.Release();
        _region.Dispose();
        _memFd.Dispose();
        _kick.Dispose();
        _call.Dispose();
    }

    private bool WaitCall()
    {
        if (!TestNative.WaitReadable(_call, 10_000))
            return false;
        TestNative.ReadU64(_call);
        return true;
    }

    private void Ack<T>(FrontendRequest request, in T payload, ReadOnlySpan<SafeHandle> fds = default)
        where T : unmanaged
    {
        Frontend.Send(request, payload, fds, needReply: true);
        Assert.Equal(0UL, Frontend.ReceiveU64Reply(request));
    }

    private void Put(ulong address, ReadOnlySpan<byte> bytes)
    {
        Assert.True(Memory.TryGetSegments(new GuestAddress(address), (ulong)bytes.Length, writable: true, out GuestSegments segments));
        foreach (Span<byte> piece in segments)
        {
            bytes[..piece.Length].CopyTo(piece);
            bytes = bytes[piece.Length..];
        }
    }

    private byte[] Get(ulong address, int length)
    {
        var bytes = new byte[length];
        Assert.True(Memory.TryGetSegments(new GuestAddress(address), (ulong)length, writable: false, out GuestSegments segments));
        segments.CopyTo(bytes);
        return bytes;
    }
}
