namespace LibvirtStorage.Vhost.Protocol;

/// <summary>The header's flags word (vhost-user.rst "Header").</summary>
[Flags]
public enum VhostUserHeaderFlags : uint
{
    /// <summary>No flags (not a valid header: the version is missing).</summary>
    None = 0,
    /// <summary>Protocol version 1, the only version (the low two bits).</summary>
    Version1 = 0x1,
    /// <summary>The two version bits.</summary>
    VersionMask = 0x3,
    /// <summary>VHOST_USER_REPLY_MASK (bit 2): set on every reply from the back-end.</summary>
    Reply = 0x4,
    /// <summary>VHOST_USER_NEED_REPLY_MASK (bit 3): the sender wants a REPLY_ACK.</summary>
    NeedReply = 0x8,
    /// <summary>Bits 4..31: reserved, must be zero.</summary>
    ReservedMask = 0xFFFF_FFF0,
}
