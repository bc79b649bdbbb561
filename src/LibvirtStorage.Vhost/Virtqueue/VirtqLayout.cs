using System.Runtime.InteropServices;

namespace LibvirtStorage.Vhost.Virtqueue;

/// <summary>
/// Split virtqueue layout (virtio 1.2 §2.7): the descriptor table (16-byte entries, 16-aligned), the available ring
/// (<c>flags, idx, ring[size], used_event</c>, 2-aligned) and the used ring (<c>flags, idx, ring[size] of {id, len},
/// avail_event</c>, 4-aligned). All fields are little-endian, read in place on little-endian hosts.
/// </summary>
internal static class VirtqLayout
{
    /// <summary>VIRTQ_DESC_F_NEXT: the buffer continues in the <c>next</c> field.</summary>
    public const ushort DescFlagNext = 1;

    /// <summary>VIRTQ_DESC_F_WRITE: the buffer is device write-only (otherwise device read-only).</summary>
    public const ushort DescFlagWrite = 2;

    /// <summary>VIRTQ_DESC_F_INDIRECT: the buffer is a table of descriptors (§2.7.5.3).</summary>
    public const ushort DescFlagIndirect = 4;

    /// <summary>VIRTQ_AVAIL_F_NO_INTERRUPT: the driver asks not to be notified of used buffers.</summary>
    public const ushort AvailFlagNoInterrupt = 1;

    /// <summary>VIRTQ_USED_F_NO_NOTIFY: the device asks not to be kicked for available buffers.</summary>
    public const ushort UsedFlagNoNotify = 1;

    /// <summary>The largest split queue size (virtio 1.2 §2.7: Queue Size ≤ 32768).</summary>
    public const uint MaxQueueSize = 32768;

    /// <summary>Size of one descriptor.</summary>
    public const uint DescriptorSize = 16;

    /// <summary>Size of one used-ring element.</summary>
    public const uint UsedElementSize = 8;

    /// <summary>Offset of <c>idx</c> in both rings.</summary>
    public const ulong IdxOffset = 2;

    /// <summary>Offset of <c>ring[0]</c> in both rings.</summary>
    public const ulong RingOffset = 4;

    /// <summary>Bytes of the descriptor table.</summary>
    public static ulong DescTableBytes(ushort size) => DescriptorSize * size;

    /// <summary>Bytes of the available ring, with <c>used_event</c> when EVENT_IDX is negotiated.</summary>
    public static ulong AvailRingBytes(ushort size, bool eventIdx) => RingOffset + (2ul * size) + (eventIdx ? 2ul : 0);

    /// <summary>Bytes of the used ring, with <c>avail_event</c> when EVENT_IDX is negotiated.</summary>
    public static ulong UsedRingBytes(ushort size, bool eventIdx) => RingOffset + ((ulong)UsedElementSize * size) + (eventIdx ? 2ul : 0);

    /// <summary>
    /// vring_need_event (virtio 1.2 §2.7.10): whether moving an index from <paramref name="old"/> to
    /// <paramref name="newIdx"/> crossed <paramref name="eventIdx"/>, in 16-bit wrapping arithmetic.
    /// </summary>
    public static bool NeedEvent(ushort eventIdx, ushort newIdx, ushort old) =>
        (ushort)(newIdx - eventIdx - 1) < (ushort)(newIdx - old);
}

/// <summary>struct virtq_desc: one descriptor, copied out of guest memory before it is validated.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
internal readonly struct VirtqDescriptor
{
    /// <summary>Guest-physical address of the buffer.</summary>
    public readonly ulong Address;

    /// <summary>Length of the buffer in bytes.</summary>
    public readonly uint Length;

    /// <summary>VIRTQ_DESC_F_* flags.</summary>
    public readonly ushort Flags;

    /// <summary>Next descriptor index when <see cref="VirtqLayout.DescFlagNext"/> is set.</summary>
    public readonly ushort Next;

    /// <summary>Builds a descriptor (used by tests that play the driver).</summary>
    public VirtqDescriptor(ulong address, uint length, ushort flags, ushort next)
    {
        Address = address;
        Length = length;
        Flags = flags;
        Next = next;
    }
}

/// <summary>struct virtq_used_elem: the head of a completed chain and the bytes written into it.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
internal readonly struct VirtqUsedElement
{
    /// <summary>Head descriptor index (a 32-bit field in the ring).</summary>
    public readonly uint Id;

    /// <summary>Total bytes the device wrote into the chain's writable buffers.</summary>
    public readonly uint Length;

    /// <summary>Builds a used element.</summary>
    public VirtqUsedElement(uint id, uint length)
    {
        Id = id;
        Length = length;
    }
}
