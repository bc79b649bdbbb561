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
/// requests (post a chain, kick, wait for the call, take the used entry). Like QEMU it hands the back-end a
/// back-end channel (SET_BACKEND_REQ_FD) and answers CONFIG_CHANGE_MSG by re-reading the config with GET_CONFIG,
/// then acking (<see cref="BackendChannelPeer"/>); the capacity it read is <see cref="ConfigCapacity"/>.
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
    private readonly Lock _mainChannel = new();
    private FakeDriver? _driver;
    private BackendChannelPeer? _backendChannel;
    private long _configCapacity = -1;

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

    /// <summary>The capacity (sectors) the last CONFIG_CHANGE_MSG handler read with GET_CONFIG, or -1.</summary>
    public long ConfigCapacity => Interlocked.Read(ref _configCapacity);

    /// <summary>Set each time a CONFIG_CHANGE_MSG was handled (the test resets it).</summary>
    public ManualResetEventSlim ConfigChanged { get; } = new();

    /// <summary>The back-end channel's front-end end, when <see cref="Start"/> set one up.</summary>
    public BackendChannelPeer? BackendChannel => _backendChannel;

    /// <summary>Connects to <paramref name="socketPath"/> (blocking fd, as QEMU's chardev uses it).</summary>
    public static BlkGuest Connect(string socketPath)
    {
        using var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        socket.Connect(new UnixDomainSocketEndPoint(socketPath));
        return new BlkGuest(UnixSocket.DuplicateBlocking(socket.SafeHandle));
    }

    /// <summary>Connects over one end of a socketpair (the other end goes to <c>--fd</c>).</summary>
    public static BlkGuest Over(SafeHandle socket) => new(socket);

    /// <summary>
    /// Negotiation, memory table and queue 0, in QEMU's order. With <paramref name="backendChannel"/> null the
    /// front-end does not negotiate BACKEND_REQ and gives no back-end channel (an older front-end).
    /// </summary>
    public BlkGuest Start(BackendChannelBehaviour? backendChannel = BackendChannelBehaviour.Ack)
    {
        Frontend.Send(FrontendRequest.GetFeatures);
        Features = Frontend.ReceiveU64Reply(FrontendRequest.GetFeatures);
        Frontend.Send(FrontendRequest.GetProtocolFeatures);
        var offered = (VhostUserProtocolFeatures)Frontend.ReceiveU64Reply(FrontendRequest.GetProtocolFeatures);
        Assert.True(offered.HasFlag(VhostUserProtocolFeatures.Config | VhostUserProtocolFeatures.ReplyAck | VhostUserProtocolFeatures.Mq));
        var wanted = VhostUserProtocolFeatures.Mq | VhostUserProtocolFeatures.Config | VhostUserProtocolFeatures.ReplyAck
            | (backendChannel is null ? 0 : VhostUserProtocolFeatures.BackendReq);
        Frontend.Send(FrontendRequest.SetProtocolFeatures, new VhostUserU64((ulong)wanted));
        if (backendChannel is { } behaviour)
        {
            Assert.True(offered.HasFlag(VhostUserProtocolFeatures.BackendReq));
            _backendChannel = new BackendChannelPeer(behaviour) { OnConfigChange = ReReadConfig };
            _backendChannel.HandOver(Frontend, needReply: true);
            Assert.Equal(0UL, Frontend.ReceiveU64Reply(FrontendRequest.SetBackendReqFd));
        }

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
        lock (_mainChannel) // the back-end channel's handler uses the main channel too
        {
            Frontend.Send(FrontendRequest.GetConfig, payload[..n]);
            return Frontend.ReceiveReply(FrontendRequest.GetConfig)[12..].ToArray();
        }
    }

    // QEMU's vhost_user_blk_handle_config_change: re-read the config, keep the new capacity, ack 0 (1 on failure).
    private ulong ReReadConfig()
    {
        try
        {
            Interlocked.Exchange(ref _configCapacity, (long)BitConverter.ToUInt64(GetConfig(), 0));
            ConfigChanged.Set();
            return 0;
        }
        catch (IOException)
        {
            return 1;
        }
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
        _backendChannel?.Dispose();
        ConfigChanged.Dispose();
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
