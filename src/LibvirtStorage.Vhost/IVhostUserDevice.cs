using LibvirtStorage.Vhost.Memory;
using LibvirtStorage.Vhost.Protocol;
using LibvirtStorage.Vhost.Virtqueue;

namespace LibvirtStorage.Vhost;

/// <summary>
/// The small interface between the vhost-user framework and a virtio device (STYLE.md §5.3; rust-vmm's
/// <c>VhostUserBackend</c>). The framework (<see cref="Backend.VhostUserRequestDispatcher"/> and the queue
/// workers) owns every piece of protocol bookkeeping: feature negotiation, REPLY_ACK, memory tables, vring
/// setup, kicks, calls and EVENT_IDX. A device only says what it offers and completes descriptor chains.
/// </summary>
/// <remarks>
/// Threading: <see cref="ProcessChain"/> runs on the threads of its queue: the queue's worker, plus
/// <see cref="ParallelRequestsPerQueue"/> - 1 I/O threads of that queue when the worker found several chains
/// available at once. Calls with the same queue and slot never overlap, so per-slot state needs no lock; calls for
/// different slots or queues may run at the same time. It must not block indefinitely: stopping a queue
/// (GET_VRING_BASE, reset, disconnect) waits for the batch in progress. The other members run on the connection
/// thread: <see cref="Reset"/> after every worker has stopped, the others possibly while workers run.
/// </remarks>
internal interface IVhostUserDevice
{
    /// <summary>Number of virtqueues (GET_QUEUE_NUM; vring indices are 0 .. NumQueues - 1).</summary>
    int NumQueues { get; }

    /// <summary>Largest queue size SET_VRING_NUM may set (a power of two ≤ 32768).</summary>
    int MaxQueueSize { get; }

    /// <summary>
    /// Device-specific virtio feature bits (for example VIRTIO_BLK_F_*). The framework adds the transport bits it
    /// implements itself: VIRTIO_F_VERSION_1, VIRTIO_RING_F_INDIRECT_DESC, VIRTIO_RING_F_EVENT_IDX and
    /// VHOST_USER_F_PROTOCOL_FEATURES.
    /// </summary>
    ulong Features { get; }

    /// <summary>
    /// Protocol features the device needs on top of the ones the framework always offers (MQ, REPLY_ACK,
    /// CONFIGURE_MEM_SLOTS, RESET_DEVICE). Only <see cref="VhostUserProtocolFeatures.Config"/> is honoured today.
    /// </summary>
    VhostUserProtocolFeatures ProtocolFeatures { get; }

    /// <summary>
    /// How many chains of one queue may be processed at once (1 to 64): the worker hands a batch of available
    /// chains to this many threads (itself included) and publishes them when all are done. 1 processes the chains
    /// one after another on the worker.
    /// </summary>
    int ParallelRequestsPerQueue => 1;

    /// <summary>
    /// Completes one available descriptor chain of queue <paramref name="queueIndex"/> and returns the number of
    /// bytes written into its device-writable buffers (the used element's length). Access guest memory only
    /// through <paramref name="memory"/>, which stays mapped until the call returns. Guest errors are not
    /// exceptions: a chain whose <see cref="DescriptorChain.Error"/> is set is completed with what was done.
    /// <paramref name="slot"/> (0 .. <see cref="ParallelRequestsPerQueue"/> - 1) names the calling thread of the
    /// queue: no two calls with the same queue and slot overlap.
    /// </summary>
    uint ProcessChain(int queueIndex, int slot, ref DescriptorChain chain, GuestMemory memory);

    /// <summary>The virtio feature bits the front-end acknowledged (SET_FEATURES), already checked to be offered.</summary>
    void AckFeatures(ulong features)
    {
    }

    /// <summary>
    /// Copies config space bytes from <paramref name="offset"/> into <paramref name="destination"/> (GET_CONFIG).
    /// Returns <see langword="false"/> when the range is outside the device's config space.
    /// </summary>
    bool GetConfig(uint offset, Span<byte> destination) => false;

    /// <summary>
    /// Writes config space bytes (SET_CONFIG); <paramref name="migration"/> is set for a live-migration write.
    /// Returns <see langword="false"/> to refuse.
    /// </summary>
    bool SetConfig(uint offset, ReadOnlySpan<byte> source, bool migration) => false;

    /// <summary>RESET_OWNER / RESET_DEVICE: every queue worker has been stopped; forget device state.</summary>
    void Reset()
    {
    }
}
