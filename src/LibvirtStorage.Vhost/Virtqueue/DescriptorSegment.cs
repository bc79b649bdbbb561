using LibvirtStorage.Vhost.Memory;

namespace LibvirtStorage.Vhost.Virtqueue;

/// <summary>
/// One buffer of a descriptor chain, already checked to lie inside guest memory (writable memory when
/// <paramref name="Writable"/>). Reach the bytes with <see cref="GuestMemory.TryGetSegments"/>.
/// </summary>
/// <param name="Address">Guest-physical address of the buffer.</param>
/// <param name="Length">Length in bytes (may be 0).</param>
/// <param name="Writable">Device write-only (VIRTQ_DESC_F_WRITE) rather than device read-only.</param>
internal readonly record struct DescriptorSegment(GuestAddress Address, uint Length, bool Writable);
