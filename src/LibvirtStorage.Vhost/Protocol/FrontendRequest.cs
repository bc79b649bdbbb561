namespace LibvirtStorage.Vhost.Protocol;

/// <summary>
/// Requests the front-end (QEMU) sends to the back-end, numbered as in vhost-user.rst "Front-end message types".
/// The spec name is in each member's summary. 0 and numbers above <see cref="CheckDeviceState"/> are unknown
/// and get a clean refusal (<see cref="VhostUserRefusal.UnknownRequest"/>).
/// </summary>
public enum FrontendRequest : uint
{
    /// <summary>VHOST_USER_NONE: never sent; not a valid request.</summary>
    None = 0,
    /// <summary>VHOST_USER_GET_FEATURES: Get the device's virtio feature bits (reply: u64).</summary>
    GetFeatures = 1,
    /// <summary>VHOST_USER_SET_FEATURES: Enable virtio feature bits (payload: u64).</summary>
    SetFeatures = 2,
    /// <summary>VHOST_USER_SET_OWNER: Session start: the sender owns the device.</summary>
    SetOwner = 3,
    /// <summary>VHOST_USER_RESET_OWNER: Deprecated; treat as disabling all rings or ignore.</summary>
    ResetOwner = 4,
    /// <summary>VHOST_USER_SET_MEM_TABLE: Memory regions description plus one fd per region.</summary>
    SetMemTable = 5,
    /// <summary>VHOST_USER_SET_LOG_BASE: Dirty-log shared memory (log description plus fd with LOG_SHMFD).</summary>
    SetLogBase = 6,
    /// <summary>VHOST_USER_SET_LOG_FD: Eventfd signalled when the dirty log changes (fd only).</summary>
    SetLogFd = 7,
    /// <summary>VHOST_USER_SET_VRING_NUM: Queue size (vring state).</summary>
    SetVringNum = 8,
    /// <summary>VHOST_USER_SET_VRING_ADDR: Ring addresses (vring address description).</summary>
    SetVringAddr = 9,
    /// <summary>VHOST_USER_SET_VRING_BASE: Next avail index to process (vring state).</summary>
    SetVringBase = 10,
    /// <summary>VHOST_USER_GET_VRING_BASE: Stop the ring and return its next avail index (vring state, reply: vring state).</summary>
    GetVringBase = 11,
    /// <summary>VHOST_USER_SET_VRING_KICK: Kick eventfd (u64: index bits 0-7, bit 8 = no fd).</summary>
    SetVringKick = 12,
    /// <summary>VHOST_USER_SET_VRING_CALL: Call eventfd (u64: index bits 0-7, bit 8 = no fd).</summary>
    SetVringCall = 13,
    /// <summary>VHOST_USER_SET_VRING_ERR: Error eventfd (u64: index bits 0-7, bit 8 = no fd).</summary>
    SetVringErr = 14,
    /// <summary>VHOST_USER_GET_PROTOCOL_FEATURES: Get the protocol feature bits (reply: u64).</summary>
    GetProtocolFeatures = 15,
    /// <summary>VHOST_USER_SET_PROTOCOL_FEATURES: Enable protocol feature bits (payload: u64).</summary>
    SetProtocolFeatures = 16,
    /// <summary>VHOST_USER_GET_QUEUE_NUM: Maximum number of queues (reply: u64); needs MQ.</summary>
    GetQueueNum = 17,
    /// <summary>VHOST_USER_SET_VRING_ENABLE: Enable or disable a ring (vring state).</summary>
    SetVringEnable = 18,
    /// <summary>VHOST_USER_SEND_RARP: virtio-net only: broadcast a fake RARP (u64).</summary>
    SendRarp = 19,
    /// <summary>VHOST_USER_NET_SET_MTU: virtio-net only: host MTU (u64).</summary>
    NetSetMtu = 20,
    /// <summary>VHOST_USER_SET_BACKEND_REQ_FD: Socket for back-end initiated requests (fd only); previously SET_SLAVE_REQ_FD.</summary>
    SetBackendReqFd = 21,
    /// <summary>VHOST_USER_IOTLB_MSG: IOTLB update or invalidate (struct vhost_iotlb_msg, reply: u64).</summary>
    IotlbMsg = 22,
    /// <summary>VHOST_USER_SET_VRING_ENDIAN: Legacy ring endianness (vring state); needs CROSS_ENDIAN.</summary>
    SetVringEndian = 23,
    /// <summary>VHOST_USER_GET_CONFIG: Read device config space (config description, reply: the same with contents).</summary>
    GetConfig = 24,
    /// <summary>VHOST_USER_SET_CONFIG: Write device config space (config description).</summary>
    SetConfig = 25,
    /// <summary>VHOST_USER_CREATE_CRYPTO_SESSION: virtio-crypto only: create a session.</summary>
    CreateCryptoSession = 26,
    /// <summary>VHOST_USER_CLOSE_CRYPTO_SESSION: virtio-crypto only: close a session (u64).</summary>
    CloseCryptoSession = 27,
    /// <summary>VHOST_USER_POSTCOPY_ADVISE: Postcopy migration under way (reply: userfault fd).</summary>
    PostcopyAdvise = 28,
    /// <summary>VHOST_USER_POSTCOPY_LISTEN: Postcopy mode entered.</summary>
    PostcopyListen = 29,
    /// <summary>VHOST_USER_POSTCOPY_END: Postcopy finished (reply: u64).</summary>
    PostcopyEnd = 30,
    /// <summary>VHOST_USER_GET_INFLIGHT_FD: Get the inflight-tracking buffer (inflight description, reply: the same plus fd).</summary>
    GetInflightFd = 31,
    /// <summary>VHOST_USER_SET_INFLIGHT_FD: Hand the inflight-tracking buffer back after reconnect (inflight description plus fd).</summary>
    SetInflightFd = 32,
    /// <summary>VHOST_USER_GPU_SET_SOCKET: vhost-user-gpu only: GPU protocol socket (fd only).</summary>
    GpuSetSocket = 33,
    /// <summary>VHOST_USER_RESET_DEVICE: Disable all rings and reset device state; needs RESET_DEVICE.</summary>
    ResetDevice = 34,
    /// <summary>VHOST_USER_VRING_KICK: In-band kick (vring state); needs INBAND_NOTIFICATIONS.</summary>
    VringKick = 35,
    /// <summary>VHOST_USER_GET_MAX_MEM_SLOTS: Maximum number of memory slots (reply: u64); needs CONFIGURE_MEM_SLOTS.</summary>
    GetMaxMemSlots = 36,
    /// <summary>VHOST_USER_ADD_MEM_REG: Add one memory region (single memory region description plus one fd).</summary>
    AddMemReg = 37,
    /// <summary>VHOST_USER_REM_MEM_REG: Remove one memory region (single memory region description; an fd, if sent, is closed unused).</summary>
    RemMemReg = 38,
    /// <summary>VHOST_USER_SET_STATUS: Virtio device status (u64); needs STATUS.</summary>
    SetStatus = 39,
    /// <summary>VHOST_USER_GET_STATUS: Virtio device status (reply: u64); needs STATUS.</summary>
    GetStatus = 40,
    /// <summary>VHOST_USER_GET_SHARED_OBJECT: dma-buf lookup by UUID (reply: fd); needs SHARED_OBJECT.</summary>
    GetSharedObject = 41,
    /// <summary>VHOST_USER_SET_DEVICE_STATE_FD: Migration state channel (transfer parameters plus fd, reply: u64); needs DEVICE_STATE.</summary>
    SetDeviceStateFd = 42,
    /// <summary>VHOST_USER_CHECK_DEVICE_STATE: Did the state transfer succeed (reply: u64); needs DEVICE_STATE.</summary>
    CheckDeviceState = 43,
}
