namespace LibvirtStorage.Vhost.Blk;

/// <summary>Request types (virtio 1.2 §5.2.6, <c>VIRTIO_BLK_T_*</c>).</summary>
internal enum VirtioBlkRequestType : uint
{
    /// <summary>VIRTIO_BLK_T_IN: read sectors into the device-writable data.</summary>
    In = 0,

    /// <summary>VIRTIO_BLK_T_OUT: write the device-readable data to sectors.</summary>
    Out = 1,

    /// <summary>VIRTIO_BLK_T_FLUSH: make completed writes durable.</summary>
    Flush = 4,

    /// <summary>VIRTIO_BLK_T_GET_ID: the 20-byte device ID string.</summary>
    GetId = 8,

    /// <summary>VIRTIO_BLK_T_DISCARD: deallocate the segments' ranges.</summary>
    Discard = 11,

    /// <summary>VIRTIO_BLK_T_WRITE_ZEROES: zero the segments' ranges.</summary>
    WriteZeroes = 13,
}

/// <summary>The status byte (virtio 1.2 §5.2.6, <c>VIRTIO_BLK_S_*</c>).</summary>
internal enum VirtioBlkStatus : byte
{
    /// <summary>VIRTIO_BLK_S_OK</summary>
    Ok = 0,

    /// <summary>VIRTIO_BLK_S_IOERR: device or driver error.</summary>
    IoError = 1,

    /// <summary>VIRTIO_BLK_S_UNSUPP: request not supported.</summary>
    Unsupported = 2,
}

/// <summary>Device feature bits (virtio 1.2 §5.2.3, <c>VIRTIO_BLK_F_*</c>), as masks.</summary>
internal static class VirtioBlkFeatures
{
    /// <summary>VIRTIO_BLK_F_SIZE_MAX (1): size_max is valid.</summary>
    public const ulong SizeMax = 1ul << 1;

    /// <summary>VIRTIO_BLK_F_SEG_MAX (2): seg_max is valid.</summary>
    public const ulong SegMax = 1ul << 2;

    /// <summary>VIRTIO_BLK_F_GEOMETRY (4): geometry is valid.</summary>
    public const ulong Geometry = 1ul << 4;

    /// <summary>VIRTIO_BLK_F_RO (5): the device is read-only.</summary>
    public const ulong ReadOnly = 1ul << 5;

    /// <summary>VIRTIO_BLK_F_BLK_SIZE (6): blk_size is valid.</summary>
    public const ulong BlockSize = 1ul << 6;

    /// <summary>VIRTIO_BLK_F_FLUSH (9): VIRTIO_BLK_T_FLUSH is supported.</summary>
    public const ulong Flush = 1ul << 9;

    /// <summary>VIRTIO_BLK_F_TOPOLOGY (10): topology is valid.</summary>
    public const ulong Topology = 1ul << 10;

    /// <summary>VIRTIO_BLK_F_CONFIG_WCE (11): the driver may switch writeback through the config space.</summary>
    public const ulong ConfigWce = 1ul << 11;

    /// <summary>VIRTIO_BLK_F_MQ (12): num_queues is valid.</summary>
    public const ulong MultiQueue = 1ul << 12;

    /// <summary>VIRTIO_BLK_F_DISCARD (13): VIRTIO_BLK_T_DISCARD with the max_discard_* limits.</summary>
    public const ulong Discard = 1ul << 13;

    /// <summary>VIRTIO_BLK_F_WRITE_ZEROES (14): VIRTIO_BLK_T_WRITE_ZEROES with the max_write_zeroes_* limits.</summary>
    public const ulong WriteZeroes = 1ul << 14;
}
