using System.Buffers.Binary;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using LibvirtStorage.Vhost.Memory;
using LibvirtStorage.Vhost.Protocol;
using Microsoft.Win32.SafeHandles;

namespace LibvirtStorage.Vhost.Frontend;

/// <summary>
/// A vhost-user-blk front-end without a VM: it negotiates as QEMU's <c>vhost-user-blk</c> device does, backs
/// "guest RAM" with one memfd it maps itself, and drives N split virtqueues (<see cref="VhostUserBlkQueue"/>)
/// for tests and the VM-less benchmark.
/// </summary>
/// <remarks>
/// Message order (QEMU hw/virtio/vhost-user.c and vhost.c, docs/interop/vhost-user.rst "Front-end message
/// types"): GET_FEATURES, GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES, GET_QUEUE_NUM, SET_OWNER, GET_CONFIG;
/// then on start SET_FEATURES, SET_MEM_TABLE, per queue SET_VRING_NUM / BASE / ADDR / KICK / CALL, and
/// SET_VRING_ENABLE 1 for every queue (rings start disabled once PROTOCOL_FEATURES is negotiated). With
/// REPLY_ACK every SET_* after SET_PROTOCOL_FEATURES asks for an ack, so a refusal surfaces at the message
/// that caused it. Guest-physical addresses start at 0; the "front-end virtual address" of the region is a
/// fixed base (any value is legal: the back-end only uses it to translate SET_VRING_ADDR).
/// </remarks>
public sealed class VhostUserBlkFrontend : IDisposable
{
    private const ulong UserBase = 0x7f00_0000_0000;
    private const ulong FeatureVersion1 = 1ul << 32, FeatureEventIdx = 1ul << 29, FeatureIndirect = 1ul << 28;
    private const ulong BlkSegMax = 1ul << 2, BlkRo = 1ul << 5, BlkBlkSize = 1ul << 6, BlkFlush = 1ul << 9, BlkTopology = 1ul << 10,
        BlkMq = 1ul << 12, BlkDiscard = 1ul << 13, BlkWriteZeroes = 1ul << 14;
    private const int ConfigSize = 60;   // struct virtio_blk_config up to write_zeroes_may_unmap (virtio 1.2 §5.2.4)

    private readonly VhostUserFrontendChannel _channel;
    private readonly bool _replyAck;
    private SafeFileHandle? _memFd;
    private GuestRegion? _region;
    private GuestMemoryMap? _map;
    private VhostUserBlkQueue[] _queues = [];

    private VhostUserBlkFrontend(VhostUserFrontendChannel channel, ulong features, VhostUserProtocolFeatures protocol, int maxQueues)
    {
        _channel = channel;
        OfferedFeatures = features;
        OfferedProtocolFeatures = (ulong)protocol;
        _replyAck = protocol.HasFlag(VhostUserProtocolFeatures.ReplyAck);
        MaxQueues = maxQueues;
    }

    /// <summary>GET_FEATURES.</summary>
    public ulong OfferedFeatures { get; }

    /// <summary>GET_PROTOCOL_FEATURES.</summary>
    public ulong OfferedProtocolFeatures { get; }

    /// <summary>GET_QUEUE_NUM (1 without MQ).</summary>
    public int MaxQueues { get; }

    /// <summary>What was negotiated and read from the config space.</summary>
    public BlkDeviceInfo Device { get; private set; }

    /// <summary>The started queues.</summary>
    public IReadOnlyList<VhostUserBlkQueue> Queues => _queues;

    /// <summary>Connects to a back-end's socket and starts <see cref="VhostUserBlkFrontendOptions.Queues"/> queues.</summary>
    public static VhostUserBlkFrontend Connect(string socketPath, VhostUserBlkFrontendOptions? options = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(socketPath);
        options ??= new VhostUserBlkFrontendOptions();
        options.Validate();
        SafeFileHandle fd;
        using (var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified))
        {
            socket.Connect(new UnixDomainSocketEndPoint(socketPath));
            fd = UnixSocket.DuplicateBlocking(socket.SafeHandle);   // blocking, as QEMU's chardev uses it
        }

        var channel = new VhostUserFrontendChannel(fd);
        VhostUserBlkFrontend? frontend = null;
        try
        {
            frontend = Negotiate(channel);
            frontend.Start(options);
            return frontend;
        }
        catch
        {
            if (frontend is not null)
                frontend.Dispose();
            else
                channel.Dispose();
            throw;
        }
    }

    private static VhostUserBlkFrontend Negotiate(VhostUserFrontendChannel channel)
    {
        channel.Send(FrontendRequest.GetFeatures);
        ulong features = channel.ReceiveU64Reply(FrontendRequest.GetFeatures);
        if ((features & (ulong)VhostUserVirtioFeatures.ProtocolFeatures) == 0)
            throw new NotSupportedException("the back-end does not offer VHOST_USER_F_PROTOCOL_FEATURES");
        channel.Send(FrontendRequest.GetProtocolFeatures);
        var offered = (VhostUserProtocolFeatures)channel.ReceiveU64Reply(FrontendRequest.GetProtocolFeatures);
        var wanted = VhostUserProtocolFeatures.Mq | VhostUserProtocolFeatures.ReplyAck | VhostUserProtocolFeatures.Config;
        var acked = offered & wanted;
        if (!acked.HasFlag(VhostUserProtocolFeatures.Config))
            throw new NotSupportedException("the back-end does not offer VHOST_USER_PROTOCOL_F_CONFIG (no GET_CONFIG)");
        channel.Send(FrontendRequest.SetProtocolFeatures, new VhostUserU64((ulong)acked));
        int maxQueues = 1;
        if (acked.HasFlag(VhostUserProtocolFeatures.Mq))
        {
            channel.Send(FrontendRequest.GetQueueNum);
            maxQueues = (int)Math.Min(channel.ReceiveU64Reply(FrontendRequest.GetQueueNum), 1024);
        }

        var frontend = new VhostUserBlkFrontend(channel, features, acked, maxQueues);
        frontend.Ack(FrontendRequest.SetOwner, default(ReadOnlySpan<byte>));
        return frontend;
    }

    private void Start(VhostUserBlkFrontendOptions options)
    {
        ulong wanted = FeatureVersion1 | (ulong)VhostUserVirtioFeatures.ProtocolFeatures | BlkSegMax | BlkRo | BlkBlkSize | BlkFlush
            | BlkTopology | BlkMq | BlkDiscard | BlkWriteZeroes
            | (options.EventIdx ? FeatureEventIdx : 0) | (options.Indirect ? FeatureIndirect : 0);
        ulong acked = OfferedFeatures & wanted;
        if ((acked & FeatureVersion1) == 0)
            throw new NotSupportedException("the back-end does not offer VIRTIO_F_VERSION_1");

        Device = ReadConfig(acked);
        int queues = options.Queues;
        if (queues > Device.NumQueues || queues > MaxQueues)
            throw new ArgumentOutOfRangeException(nameof(options), queues, $"the device has {Device.NumQueues} queue(s) (GET_QUEUE_NUM {MaxQueues})");

        Ack(FrontendRequest.SetFeatures, new VhostUserU64(acked));

        ulong perQueue = VhostUserBlkQueue.BytesFor(options);
        ulong size = perQueue * (ulong)queues;
        _memFd = FrontendNative.MemFd("lvstor-frontend-ram", (long)size);
        _region = GuestRegion.Map(_memFd, 0, new GuestAddress(0), size, UserBase);
        if (!GuestMemoryMap.TryCreate([_region], out GuestMemoryMap? map, out string? reason))
            throw new InvalidOperationException(reason);
        _map = map!;
        _channel.SetMemTable([new VhostUserMemoryRegion(0, size, UserBase, 0)], [_memFd], needReply: _replyAck);
        if (_replyAck)
            CheckAck(FrontendRequest.SetMemTable);

        bool eventIdx = (acked & FeatureEventIdx) != 0, indirect = (acked & FeatureIndirect) != 0;
        _queues = new VhostUserBlkQueue[queues];
        for (int q = 0; q < queues; q++)
        {
            var queue = _queues[q] = new VhostUserBlkQueue(q, _map.Memory, perQueue * (ulong)q, options, eventIdx, indirect);
            uint index = (uint)q;
            Ack(FrontendRequest.SetVringNum, new VhostUserVringState(index, queue.Size));
            Ack(FrontendRequest.SetVringBase, new VhostUserVringState(index, 0));
            Ack(FrontendRequest.SetVringAddr, new VhostUserVringAddress
            {
                Index = index,
                DescUserAddr = UserBase + queue.DescAddress.Value,
                AvailUserAddr = UserBase + queue.AvailAddress.Value,
                UsedUserAddr = UserBase + queue.UsedAddress.Value,
            });
            Ack(FrontendRequest.SetVringKick, new VhostUserU64(index), [queue.KickFd]);
            Ack(FrontendRequest.SetVringCall, new VhostUserU64(index), [queue.CallFd]);
        }

        for (int q = 0; q < queues; q++)
            Ack(FrontendRequest.SetVringEnable, new VhostUserVringState((uint)q, 1));
    }

    private BlkDeviceInfo ReadConfig(ulong acked)
    {
        Span<byte> request = stackalloc byte[VhostUserConfigHeader.Size + ConfigSize];
        int length = VhostUserFrontendChannel.EncodeConfig(request, 0, VhostUserConfigHeader.FlagsFrontend, new byte[ConfigSize]);
        _channel.Send(FrontendRequest.GetConfig, request[..length]);
        ReadOnlySpan<byte> reply = _channel.ReceiveReply(FrontendRequest.GetConfig);
        if (reply.Length != VhostUserConfigHeader.Size + ConfigSize)
            throw new IOException($"GET_CONFIG reply has {reply.Length} bytes, expected {VhostUserConfigHeader.Size + ConfigSize}");
        ReadOnlySpan<byte> config = reply[VhostUserConfigHeader.Size..];
        ulong capacity = BinaryPrimitives.ReadUInt64LittleEndian(config);
        uint segMax = (acked & BlkSegMax) != 0 ? BinaryPrimitives.ReadUInt32LittleEndian(config[12..]) : 0;
        uint blockSize = (acked & BlkBlkSize) != 0 ? BinaryPrimitives.ReadUInt32LittleEndian(config[20..]) : 512;
        int numQueues = (acked & BlkMq) != 0 ? BinaryPrimitives.ReadUInt16LittleEndian(config[34..]) : 1;
        return new BlkDeviceInfo(capacity, blockSize, Math.Max(numQueues, 1), segMax, acked, OfferedProtocolFeatures);
    }

    private void Ack<T>(FrontendRequest request, in T payload, ReadOnlySpan<SafeHandle> fds = default)
        where T : unmanaged
    {
        _channel.Send(request, payload, fds, needReply: _replyAck);
        if (_replyAck)
            CheckAck(request);
    }

    private void Ack(FrontendRequest request, ReadOnlySpan<byte> payload)
    {
        _channel.Send(request, payload, needReply: _replyAck);
        if (_replyAck)
            CheckAck(request);
    }

    private void CheckAck(FrontendRequest request)
    {
        ulong status = _channel.ReceiveU64Reply(request);
        if (status != 0)
            throw new IOException($"the back-end refused {request} (REPLY_ACK {status})");
    }

    /// <summary>Closes the socket first (the back-end stops its rings), then the eventfds and the memory.</summary>
    public void Dispose()
    {
        _channel.Dispose();
        foreach (VhostUserBlkQueue queue in _queues)
            queue.Dispose();
        _map?.Release();
        _region?.Dispose();
        _memFd?.Dispose();
        _map = null;
        _region = null;
        _memFd = null;
    }
}
