namespace LibvirtStorage.Vhost.Frontend;

/// <summary>The virtio-blk request types the front-end submits (virtio 1.2 §5.2.6, <c>VIRTIO_BLK_T_*</c>).</summary>
public enum BlkRequestType : uint
{
    /// <summary>VIRTIO_BLK_T_IN: read sectors into the slot's data buffer.</summary>
    Read = 0,

    /// <summary>VIRTIO_BLK_T_OUT: write the slot's data buffer to sectors.</summary>
    Write = 1,

    /// <summary>VIRTIO_BLK_T_FLUSH</summary>
    Flush = 4,

    /// <summary>VIRTIO_BLK_T_GET_ID: the 20-byte device ID into the data buffer.</summary>
    GetId = 8,

    /// <summary>VIRTIO_BLK_T_DISCARD: one 16-byte segment in the data buffer.</summary>
    Discard = 11,

    /// <summary>VIRTIO_BLK_T_WRITE_ZEROES: one 16-byte segment in the data buffer.</summary>
    WriteZeroes = 13,
}

/// <summary>The status byte (virtio 1.2 §5.2.6, <c>VIRTIO_BLK_S_*</c>).</summary>
public enum BlkStatus : byte
{
    /// <summary>VIRTIO_BLK_S_OK</summary>
    Ok = 0,

    /// <summary>VIRTIO_BLK_S_IOERR</summary>
    IoError = 1,

    /// <summary>VIRTIO_BLK_S_UNSUPP</summary>
    Unsupported = 2,
}

/// <summary>One reaped request.</summary>
/// <param name="Slot">The slot it used; its data buffer holds what the device wrote until the slot is reused.</param>
/// <param name="Type">What was submitted.</param>
/// <param name="Status">The status byte the device wrote (the front-end pre-fills 0xff, so an unwritten byte shows).</param>
/// <param name="UsedLength">The used element's length.</param>
/// <param name="ExpectedUsedLength">What a correct device reports on success: data written + 1 (IN: data length + 1,
/// GET_ID: min(length, 20) + 1, others 1), as QEMU's virtio-blk-handler.c does.</param>
public readonly record struct BlkCompletion(int Slot, BlkRequestType Type, BlkStatus Status, uint UsedLength, uint ExpectedUsedLength)
{
    /// <summary>Status OK and the used length a correct device reports.</summary>
    public bool IsOk => Status == BlkStatus.Ok && UsedLength == ExpectedUsedLength;
}

/// <summary>What GET_CONFIG and the negotiation reported (virtio 1.2 §5.2.4).</summary>
/// <param name="CapacitySectors">capacity, in 512-byte sectors.</param>
/// <param name="BlockSize">blk_size when VIRTIO_BLK_F_BLK_SIZE was offered, else 512.</param>
/// <param name="NumQueues">num_queues when VIRTIO_BLK_F_MQ was offered, else 1.</param>
/// <param name="SegMax">seg_max (0 when not offered).</param>
/// <param name="Features">The virtio feature bits the front-end acknowledged.</param>
/// <param name="ProtocolFeatures">The vhost-user protocol feature bits the front-end acknowledged.</param>
public readonly record struct BlkDeviceInfo(ulong CapacitySectors, uint BlockSize, int NumQueues, uint SegMax, ulong Features, ulong ProtocolFeatures)
{
    /// <summary>Capacity in bytes.</summary>
    public long CapacityBytes => (long)(CapacitySectors * 512);
}
