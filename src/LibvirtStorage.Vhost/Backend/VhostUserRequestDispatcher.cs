using System.Runtime.InteropServices;
using LibvirtStorage.Vhost.Memory;
using LibvirtStorage.Vhost.Protocol;
using Microsoft.Extensions.Logging;

namespace LibvirtStorage.Vhost.Backend;

/// <summary>
/// The single switch over <see cref="FrontendRequest"/> (STYLE.md §5.3; rust-vmm <c>BackendReqHandler::handle_request</c>):
/// all protocol bookkeeping — negotiated features, REPLY_ACK, memory tables, vring state, workers — lives here, and
/// the device sees only <see cref="IVhostUserDevice"/>.
/// </summary>
/// <remarks>
/// <para>Outcomes. A request that succeeds gets its reply (GET_*), or a REPLY_ACK of 0 when REPLY_ACK was negotiated
/// and NEED_REPLY set. A request that fails — refused by <see cref="VhostUserMessageRules"/>, unsupported, or
/// against the rules (a vring index ≥ NumQueues, a bad queue size, ring addresses outside guest memory, a vring set
/// up before any memory table, overlapping regions, a missing kick fd) — changes nothing and is logged; then a
/// front-end that asked for a REPLY_ACK gets a non-zero one and the connection goes on, and otherwise the
/// connection is broken through <see cref="VhostUserConnection.Break(string)"/> (the one choke point), as
/// libvhost-user's <c>vu_panic</c> does. A request that always has a reply body and fails breaks the connection.</para>
/// <para>Threading: one thread (the connection's) calls <see cref="Handle"/> and <see cref="Dispose"/>. Workers run
/// on queue threads (<see cref="QueueThreads"/>); the dispatcher takes a worker off its thread before it touches that queue's state.</para>
/// </remarks>
internal sealed partial class VhostUserRequestDispatcher : IDisposable
{
    /// <summary>VIRTIO_RING_F_INDIRECT_DESC (bit 28): DescriptorChain follows one level of indirect tables.</summary>
    public const ulong VirtioRingFIndirectDesc = 1UL << 28;

    /// <summary>VIRTIO_RING_F_EVENT_IDX (bit 29): used_event / avail_event notification suppression.</summary>
    public const ulong VirtioRingFEventIdx = 1UL << 29;

    /// <summary>VIRTIO_F_VERSION_1 (bit 32): a modern (virtio 1.x, little-endian) device.</summary>
    public const ulong VirtioFVersion1 = 1UL << 32;

    /// <summary>Transport bits the framework implements for every device.</summary>
    public const ulong FrameworkFeatures = VirtioRingFIndirectDesc | VirtioRingFEventIdx | VirtioFVersion1 | (ulong)VhostUserVirtioFeatures.ProtocolFeatures;

    /// <summary>Protocol features the framework always offers.</summary>
    public const VhostUserProtocolFeatures FrameworkProtocolFeatures =
        VhostUserProtocolFeatures.Mq | VhostUserProtocolFeatures.ReplyAck | VhostUserProtocolFeatures.ConfigureMemSlots | VhostUserProtocolFeatures.ResetDevice
        | VhostUserProtocolFeatures.BackendReq | VhostUserProtocolFeatures.InflightShmfd;

    private readonly VhostUserConnection _connection;
    private readonly IVhostUserDevice _device;
    private readonly ILogger _logger;
    private readonly VhostUserVring[] _vrings;
    private ulong _ackedFeatures;
    private bool _featuresAcked;
    private VhostUserProtocolFeatures _ackedProtocolFeatures;
    private readonly Func<int, QueueThread> _threadFor;

    public VhostUserRequestDispatcher(VhostUserConnection connection, IVhostUserDevice device, ILogger logger)
    {
        ArgumentNullException.ThrowIfNull(connection);
        ArgumentNullException.ThrowIfNull(device);
        ArgumentNullException.ThrowIfNull(logger);
        if (device.NumQueues is < 1 or > 256 || !Virtqueue.SplitVirtqueue.IsValidSize((uint)device.MaxQueueSize))
            ThrowHelper.ArgumentOutOfRange(nameof(device), "a device has 1..256 queues and a power-of-two maximum queue size ≤ 32768");
        _connection = connection;
        _device = device;
        _logger = logger;
        _vrings = new VhostUserVring[device.NumQueues];
        for (int i = 0; i < _vrings.Length; i++)
            _vrings[i] = new VhostUserVring(i);
        _threadFor = ThreadFor;
    }

    /// <summary>Virtio feature bits offered by GET_FEATURES.</summary>
    public ulong OfferedFeatures => _device.Features | FrameworkFeatures;

    /// <summary>Protocol feature bits offered by GET_PROTOCOL_FEATURES.</summary>
    public VhostUserProtocolFeatures OfferedProtocolFeatures =>
        FrameworkProtocolFeatures | (_device.ProtocolFeatures & VhostUserProtocolFeatures.Config);

    /// <summary>Features acknowledged by SET_FEATURES.</summary>
    public ulong AckedFeatures => _ackedFeatures;

    /// <summary>The connection's guest memory; workers lease it per batch.</summary>
    public GuestMemorySlot Memory { get; } = new();

    private bool ProtocolFeaturesNegotiated => (_ackedFeatures & (ulong)VhostUserVirtioFeatures.ProtocolFeatures) != 0;

    private bool EventIdx => (_ackedFeatures & VirtioRingFEventIdx) != 0;

    /// <summary>The vring state of queue <paramref name="index"/> (tests).</summary>
    internal VhostUserVring Vring(int index) => _vrings[index];

    /// <summary>
    /// Handles one received message. Returns <see langword="false"/> once the connection is broken (the caller
    /// stops receiving). Socket failures while replying surface as <see cref="VhostUserProtocolException"/>.
    /// </summary>
    public bool Handle(VhostUserMessage message)
    {
        if (_connection.IsBroken)
            return false;

        bool hasReplyBody = VhostUserMessageRules.For(message.Header.Request).HasReplyBody;
        string? failure = message.Refusal != VhostUserRefusal.None
            ? $"refused ({message.Refusal})"
            : Dispatch(message);
        if (failure is not null)
            VhostUserLog.RequestFailed(_logger, Name(message), failure);

        if (!hasReplyBody && message.NeedReply && (_ackedProtocolFeatures & VhostUserProtocolFeatures.ReplyAck) != 0)
        {
            _connection.ReplyU64(message.Header, failure is null ? 0UL : 1UL);
            return true;
        }

        if (failure is not null)
        {
            _connection.Break($"vhost-user {Name(message)}: {failure}");
            return false;
        }

        return !_connection.IsBroken;

        static string Name(VhostUserMessage m) =>
            Enum.IsDefined(m.Request) ? m.Request.ToString() : $"request {m.Header.Request}";
    }

    // Returns null on success (replies already sent for GET_*), or why the request failed. Checks come before any
    // state change, except that a ring which cannot start (SET_FEATURES, SET_VRING_KICK/CALL/ERR/ENABLE) keeps the
    // new setting and reports why it is not running.
    private string? Dispatch(VhostUserMessage message)
    {
        switch (message.Request)
        {
            case FrontendRequest.GetFeatures:
                _connection.ReplyU64(message.Header, OfferedFeatures);
                return null;
            case FrontendRequest.SetFeatures:
                return SetFeatures(message.Read<VhostUserU64>().Value);
            case FrontendRequest.GetProtocolFeatures:
                _connection.ReplyU64(message.Header, (ulong)OfferedProtocolFeatures);
                return null;
            case FrontendRequest.SetProtocolFeatures:
                var protocol = (VhostUserProtocolFeatures)message.Read<VhostUserU64>().Value;
                if ((protocol & ~OfferedProtocolFeatures) != 0)
                    return $"protocol features 0x{(ulong)(protocol & ~OfferedProtocolFeatures):x} were not offered";
                _ackedProtocolFeatures = protocol;
                return null;
            case FrontendRequest.SetOwner:
                return null;
            case FrontendRequest.ResetOwner or FrontendRequest.ResetDevice:
                // RESET_OWNER ends the front-end's session, so its back-end channel goes; RESET_DEVICE only resets
                // the device, and QEMU sends SET_BACKEND_REQ_FD once per connection, so the channel stays.
                if (message.Request == FrontendRequest.ResetOwner)
                    CloseBackendChannel();
                ResetVrings();
                _device.Reset();
                return null;
            case FrontendRequest.GetQueueNum:
                _connection.ReplyU64(message.Header, (ulong)_vrings.Length);
                return null;
            case FrontendRequest.GetMaxMemSlots:
                _connection.ReplyU64(message.Header, MaxMemSlots);
                return null;
            case FrontendRequest.SetMemTable:
                return SetMemTable(message);
            case FrontendRequest.AddMemReg:
                return AddMemoryRegion(message);
            case FrontendRequest.RemMemReg:
                return RemoveMemoryRegion(message.Read<VhostUserSingleMemoryRegion>().Region);
            case FrontendRequest.SetVringNum:
                return SetVringNum(message.Read<VhostUserVringState>());
            case FrontendRequest.SetVringAddr:
                return SetVringAddr(message.Read<VhostUserVringAddress>());
            case FrontendRequest.SetVringBase:
                return SetVringBase(message.Read<VhostUserVringState>());
            case FrontendRequest.GetVringBase:
                return GetVringBase(message);
            case FrontendRequest.SetVringKick or FrontendRequest.SetVringCall or FrontendRequest.SetVringErr:
                return SetVringFd(message);
            case FrontendRequest.SetVringEnable:
                return SetVringEnable(message.Read<VhostUserVringState>());
            case FrontendRequest.GetConfig:
                GetConfig(message);
                return null;
            case FrontendRequest.SetConfig:
                return SetConfig(message.Payload);
            case FrontendRequest.SetBackendReqFd:
                return SetBackendChannel(message);
            case FrontendRequest.GetInflightFd:
                return GetInflightFd(message);
            case FrontendRequest.SetInflightFd:
                return SetInflightFd(message);
            default:
                return "not supported by this back-end";
        }
    }

    private string? SetFeatures(ulong features)
    {
        if ((features & ~OfferedFeatures) != 0)
            return $"features 0x{features & ~OfferedFeatures:x} were not offered";
        bool eventIdxChanged = ((features ^ _ackedFeatures) & VirtioRingFEventIdx) != 0;
        _ackedFeatures = features;
        _featuresAcked = true;
        VhostUserLog.FeaturesAcknowledged(_logger, features, (features & VirtioRingFEventIdx) != 0, (features & VirtioRingFIndirectDesc) != 0);
        _device.AckFeatures(features);
        foreach (VhostUserVring vring in _vrings)
        {
            // Without VHOST_USER_F_PROTOCOL_FEATURES a ring is enabled as soon as it starts (vhost-user.rst "Ring states").
            if (!ProtocolFeaturesNegotiated)
                vring.Enabled = true;
            if (vring.IsStarted && eventIdxChanged)
                vring.Stop();
            string? error = vring.TryStart(Memory, _device, EventIdx, _logger, _threadFor);
            if (error is not null)
                return error;
        }

        return null;
    }

    private void GetConfig(VhostUserMessage message)
    {
        var header = MemoryMarshal.Read<VhostUserConfigHeader>(message.Payload);
        Span<byte> reply = stackalloc byte[VhostUserConfigHeader.MaxPayloadSize];
        message.Payload.CopyTo(reply);
        var data = reply.Slice(VhostUserConfigHeader.Size, (int)header.ConfigSize);
        data.Clear();
        if ((_ackedProtocolFeatures & VhostUserProtocolFeatures.Config) != 0 && _device.GetConfig(header.Offset, data))
        {
            _connection.Reply(message.Header, reply[..message.Payload.Length]);
            return;
        }

        // libvhost-user's convention, which QEMU reports as an error: an empty reply.
        VhostUserLog.RequestFailed(_logger, nameof(FrontendRequest.GetConfig), $"{header.ConfigSize} bytes at {header.Offset} refused");
        _connection.Reply(message.Header, default);
    }

    private string? SetConfig(ReadOnlySpan<byte> payload)
    {
        if ((_ackedProtocolFeatures & VhostUserProtocolFeatures.Config) == 0)
            return "VHOST_USER_PROTOCOL_F_CONFIG was not negotiated";
        var header = MemoryMarshal.Read<VhostUserConfigHeader>(payload);
        bool migration = header.Flags == VhostUserConfigHeader.FlagsMigration;
        return _device.SetConfig(header.Offset, payload[VhostUserConfigHeader.Size..], migration)
            ? null
            : $"the device refused {header.ConfigSize} bytes at {header.Offset}";
    }

    private void ResetVrings()
    {
        foreach (VhostUserVring vring in _vrings)
            vring.Reset(enabled: !ProtocolFeaturesNegotiated && _featuresAcked);
        // A reset device has no requests in flight; a stale area must not resubmit into fresh rings.
        ReleaseInflightArea();
    }

    /// <summary>Stops and joins every queue worker (the connection ended); fds and memory stay until <see cref="Dispose"/>.</summary>
    public void StopQueues()
    {
        foreach (VhostUserVring vring in _vrings)
            vring.Stop();
        EndQueueThreads();
    }

    /// <summary>Stops every worker, closes every fd, and unmaps the memory once no lease remains.</summary>
    public void Dispose()
    {
        CloseBackendChannel();
        foreach (VhostUserVring vring in _vrings)
            vring.Reset(enabled: false);
        EndQueueThreads();
        ReleaseInflightArea();
        Memory.Dispose();
        ReleaseRegions();
    }
}
