namespace LibvirtStorage.Vhost.Protocol;

/// <summary>
/// Requests the back-end sends to the front-end over the SET_BACKEND_REQ_FD channel (vhost-user.rst
/// "Back-end message types"). Numbered separately from <see cref="FrontendRequest"/>.
/// </summary>
public enum BackendRequest : uint
{
    /// <summary>VHOST_USER_BACKEND_NONE: never sent.</summary>
    None = 0,
    /// <summary>VHOST_USER_BACKEND_IOTLB_MSG: IOTLB miss or access failure (struct vhost_iotlb_msg).</summary>
    IotlbMsg = 1,
    /// <summary>VHOST_USER_BACKEND_CONFIG_CHANGE_MSG: the device config space changed (no payload); needs CONFIG.</summary>
    ConfigChangeMsg = 2,
    /// <summary>VHOST_USER_BACKEND_VRING_HOST_NOTIFIER_MSG: map a host notifier for a queue (vring area plus fd).</summary>
    VringHostNotifierMsg = 3,
    /// <summary>VHOST_USER_BACKEND_VRING_CALL: in-band call (vring state); needs INBAND_NOTIFICATIONS.</summary>
    VringCall = 4,
    /// <summary>VHOST_USER_BACKEND_VRING_ERR: in-band error (vring state); needs INBAND_NOTIFICATIONS.</summary>
    VringErr = 5,
    /// <summary>VHOST_USER_BACKEND_SHARED_OBJECT_ADD: export a shared object by UUID.</summary>
    SharedObjectAdd = 6,
    /// <summary>VHOST_USER_BACKEND_SHARED_OBJECT_REMOVE: withdraw a shared object by UUID.</summary>
    SharedObjectRemove = 7,
    /// <summary>VHOST_USER_BACKEND_SHARED_OBJECT_LOOKUP: look up a shared object by UUID (reply: fd and u64).</summary>
    SharedObjectLookup = 8,
}
