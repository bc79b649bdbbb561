namespace LibvirtStorage.Vhost.Protocol;

/// <summary>
/// Protocol feature bits exchanged by GET/SET_PROTOCOL_FEATURES (vhost-user.rst "Protocol features").
/// Only legal once the virtio feature bit <see cref="VhostUserVirtioFeatures.ProtocolFeatures"/> is offered.
/// </summary>
[Flags]
public enum VhostUserProtocolFeatures : ulong
{
    /// <summary>No protocol features.</summary>
    None = 0,
    /// <summary>VHOST_USER_PROTOCOL_F_MQ (bit 0): GET_QUEUE_NUM; multiple queues.</summary>
    Mq = 1UL << 0,
    /// <summary>VHOST_USER_PROTOCOL_F_LOG_SHMFD (bit 1): dirty log in shared memory passed with SET_LOG_BASE.</summary>
    LogShmfd = 1UL << 1,
    /// <summary>VHOST_USER_PROTOCOL_F_RARP (bit 2): SEND_RARP (virtio-net).</summary>
    Rarp = 1UL << 2,
    /// <summary>VHOST_USER_PROTOCOL_F_REPLY_ACK (bit 3): the NEED_REPLY header flag is honoured.</summary>
    ReplyAck = 1UL << 3,
    /// <summary>VHOST_USER_PROTOCOL_F_MTU (bit 4): NET_SET_MTU (virtio-net).</summary>
    Mtu = 1UL << 4,
    /// <summary>VHOST_USER_PROTOCOL_F_BACKEND_REQ (bit 5, was SLAVE_REQ): back-end request channel.</summary>
    BackendReq = 1UL << 5,
    /// <summary>VHOST_USER_PROTOCOL_F_CROSS_ENDIAN (bit 6): SET_VRING_ENDIAN.</summary>
    CrossEndian = 1UL << 6,
    /// <summary>VHOST_USER_PROTOCOL_F_CRYPTO_SESSION (bit 7): crypto sessions.</summary>
    CryptoSession = 1UL << 7,
    /// <summary>VHOST_USER_PROTOCOL_F_PAGEFAULT (bit 8): postcopy with userfaultfd.</summary>
    Pagefault = 1UL << 8,
    /// <summary>VHOST_USER_PROTOCOL_F_CONFIG (bit 9): GET/SET_CONFIG and CONFIG_CHANGE_MSG.</summary>
    Config = 1UL << 9,
    /// <summary>VHOST_USER_PROTOCOL_F_BACKEND_SEND_FD (bit 10, was SLAVE_SEND_FD): fds on the back-end channel.</summary>
    BackendSendFd = 1UL << 10,
    /// <summary>VHOST_USER_PROTOCOL_F_HOST_NOTIFIER (bit 11): VRING_HOST_NOTIFIER_MSG.</summary>
    HostNotifier = 1UL << 11,
    /// <summary>VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD (bit 12): GET/SET_INFLIGHT_FD (reconnect with in-flight requests).</summary>
    InflightShmfd = 1UL << 12,
    /// <summary>VHOST_USER_PROTOCOL_F_RESET_DEVICE (bit 13): RESET_DEVICE.</summary>
    ResetDevice = 1UL << 13,
    /// <summary>VHOST_USER_PROTOCOL_F_INBAND_NOTIFICATIONS (bit 14): VRING_KICK and BACKEND_VRING_CALL/ERR messages.</summary>
    InbandNotifications = 1UL << 14,
    /// <summary>VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS (bit 15): GET_MAX_MEM_SLOTS, ADD/REM_MEM_REG.</summary>
    ConfigureMemSlots = 1UL << 15,
    /// <summary>VHOST_USER_PROTOCOL_F_STATUS (bit 16): GET/SET_STATUS.</summary>
    Status = 1UL << 16,
    /// <summary>VHOST_USER_PROTOCOL_F_XEN_MMAP (bit 17): memory regions carry Xen mmap flags and a domid (8 more bytes).</summary>
    XenMmap = 1UL << 17,
    /// <summary>VHOST_USER_PROTOCOL_F_SHARED_OBJECT (bit 18): shared object messages.</summary>
    SharedObject = 1UL << 18,
    /// <summary>VHOST_USER_PROTOCOL_F_DEVICE_STATE (bit 19): SET_DEVICE_STATE_FD, CHECK_DEVICE_STATE.</summary>
    DeviceState = 1UL << 19,
}

/// <summary>The vhost-user bits in the virtio feature word exchanged by GET/SET_FEATURES.</summary>
[Flags]
public enum VhostUserVirtioFeatures : ulong
{
    /// <summary>No vhost-user transport bits.</summary>
    None = 0,
    /// <summary>VHOST_F_LOG_ALL (bit 26): log all writes for live migration.</summary>
    LogAll = 1UL << 26,
    /// <summary>VHOST_USER_F_PROTOCOL_FEATURES (bit 30): GET/SET_PROTOCOL_FEATURES are available; rings start disabled.</summary>
    ProtocolFeatures = 1UL << 30,
}
