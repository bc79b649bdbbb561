namespace LibvirtStorage.Vhost.Frontend;

/// <summary>How <see cref="VhostUserBlkFrontend.Connect"/> sets the device up.</summary>
public sealed record VhostUserBlkFrontendOptions
{
    /// <summary>Queues to start (at most what the back-end offers).</summary>
    public int Queues { get; init; } = 1;

    /// <summary>Ring size of each queue (a power of two; the back-ends we test take up to 1024).</summary>
    public ushort QueueSize { get; init; } = 128;

    /// <summary>Request slots per queue: the most requests one queue keeps in flight.</summary>
    public int Depth { get; init; } = 32;

    /// <summary>Data buffer per slot, in bytes (a multiple of 4096).</summary>
    public int MaxRequestBytes { get; init; } = 1 << 20;

    /// <summary>Negotiate VIRTIO_RING_F_EVENT_IDX if offered (QEMU does by default).</summary>
    public bool EventIdx { get; init; } = true;

    /// <summary>Put each request in an indirect table (one ring descriptor per request, as Linux guests do) if
    /// VIRTIO_RING_F_INDIRECT_DESC is offered; otherwise three direct descriptors per slot.</summary>
    public bool Indirect { get; init; } = true;

    /// <summary>How long <see cref="VhostUserBlkQueue.WaitForCompletions"/> waits before it fails, in milliseconds.</summary>
    public int CompletionTimeoutMs { get; init; } = 30_000;

    internal void Validate()
    {
        if (Queues < 1)
            throw new ArgumentOutOfRangeException(nameof(Queues), Queues, "at least one queue");
        if (QueueSize == 0 || (QueueSize & (QueueSize - 1)) != 0)
            throw new ArgumentOutOfRangeException(nameof(QueueSize), QueueSize, "a power of two");
        if (Depth < 1 || Depth > QueueSize)
            throw new ArgumentOutOfRangeException(nameof(Depth), Depth, "1 .. QueueSize");
        if (MaxRequestBytes < 4096 || MaxRequestBytes % 4096 != 0)
            throw new ArgumentOutOfRangeException(nameof(MaxRequestBytes), MaxRequestBytes, "a multiple of 4096");
    }
}
