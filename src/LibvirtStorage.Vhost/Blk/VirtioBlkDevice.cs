using LibvirtStorage.Vhost.Backend;
using LibvirtStorage.Vhost.Memory;
using LibvirtStorage.Vhost.Protocol;
using LibvirtStorage.Vhost.Virtqueue;
using Microsoft.Extensions.Logging;

namespace LibvirtStorage.Vhost.Blk;

/// <summary>
/// A virtio-blk device (virtio 1.2 §5.2) for the vhost-user framework: offers the features and config space of
/// <see cref="VirtioBlkConfig"/> and completes each chain with <see cref="VirtioBlkRequest.Parse"/> then
/// <see cref="VirtioBlkHandler.Execute"/> against an <see cref="IBlockDevice"/>.
/// </summary>
/// <remarks>
/// One <see cref="VirtioBlkRequest"/> (~4 KiB) per queue and slot (<see cref="VirtioBlkSettings.ParallelRequestsPerQueue"/>),
/// made up front and reused: the framework never runs two chains of one queue and slot at
/// once, so a request is never used by two threads at once. The config space is rebuilt on every GET_CONFIG, so it reports the device's
/// current capacity. Malformed chains and device failures are logged at Debug (a guest can cause them at will,
/// so they must not flood a production log); the guest sees used length 0 or IOERR.
/// </remarks>
internal sealed class VirtioBlkDevice : IVhostUserDevice
{
    /// <summary>Largest queue size offered (QEMU's vhost-user-blk default is 128, its maximum 1024).</summary>
    public const int DefaultMaxQueueSize = 1024;

    private readonly IBlockDevice _device;
    private readonly VirtioBlkSettings _settings;
    private readonly VirtioBlkHandler _handler;
    private readonly ILogger _logger;
    private readonly Box[] _requests;

    /// <summary>Serves <paramref name="device"/> with <paramref name="settings"/> (validated here).</summary>
    public VirtioBlkDevice(IBlockDevice device, VirtioBlkSettings settings, ILogger logger, int maxQueueSize = DefaultMaxQueueSize)
    {
        ArgumentNullException.ThrowIfNull(device);
        ArgumentNullException.ThrowIfNull(logger);
        if (maxQueueSize is < 1 or > 32768 || (maxQueueSize & (maxQueueSize - 1)) != 0)
            ThrowHelper.ArgumentOutOfRange(nameof(maxQueueSize), $"queue size {maxQueueSize} is not a power of two in 1..32768");
        _device = device;
        _handler = new VirtioBlkHandler(settings);
        _settings = settings;
        _logger = logger;
        MaxQueueSize = maxQueueSize;
        Features = VirtioBlkConfig.Create(device, settings).Features;
        // Made up front, so no request allocates (4 KiB per queue and slot: 64 KiB for 4 queues × 4 slots).
        _requests = new Box[settings.NumQueues * settings.ParallelRequestsPerQueue];
        for (int i = 0; i < _requests.Length; i++)
            _requests[i] = new Box();
    }

    /// <inheritdoc/>
    public int NumQueues => _settings.NumQueues;

    /// <inheritdoc/>
    public int MaxQueueSize { get; }

    /// <inheritdoc/>
    public ulong Features { get; }

    /// <inheritdoc/>
    public VhostUserProtocolFeatures ProtocolFeatures => VhostUserProtocolFeatures.Config;

    /// <inheritdoc/>
    public int ParallelRequestsPerQueue => _settings.ParallelRequestsPerQueue;

    /// <inheritdoc/>
    public uint ProcessChain(int queueIndex, int slot, ref DescriptorChain chain, GuestMemory memory)
    {
        // Only one thread at a time uses a given queue and slot, so its request needs no lock.
        ref VirtioBlkRequest request = ref _requests[(queueIndex * _settings.ParallelRequestsPerQueue) + slot].Request;
        VirtioBlkRequest.Parse(ref chain, memory, _settings.SegMax, ref request);
        if (request.Error != VirtioBlkParseError.None)
        {
            VirtioBlkLog.MalformedRequest(_logger, queueIndex, request.Error, request.ChainError);
            return 0;
        }

        VirtioBlkCompletion completion = _handler.Execute(in request, memory, _device);
        if (completion.DeviceError is { } error)
            VirtioBlkLog.DeviceFailed(_logger, error, queueIndex, request.Type, request.Sector);
        return completion.Written;
    }

    /// <inheritdoc/>
    public bool GetConfig(uint offset, Span<byte> destination) =>
        VirtioBlkConfig.Create(_device, _settings).TryRead(offset, destination);

    private sealed class Box
    {
        public VirtioBlkRequest Request;
    }
}

/// <summary>The virtio-blk device's log events.</summary>
internal static partial class VirtioBlkLog
{
    /// <summary>A chain that is not a virtio-blk request; completed with used length 0.</summary>
    [LoggerMessage(EventId = 20, Level = LogLevel.Debug, Message = "virtio-blk queue {Queue}: malformed request ({Error}, chain {ChainError})")]
    public static partial void MalformedRequest(ILogger logger, int queue, VirtioBlkParseError error, ChainError chainError);

    /// <summary>The block device threw; the request completed with IOERR.</summary>
    [LoggerMessage(EventId = 21, Level = LogLevel.Debug, Message = "virtio-blk queue {Queue}: type {Type} at sector {Sector} failed")]
    public static partial void DeviceFailed(ILogger logger, Exception error, int queue, uint type, ulong sector);
}
