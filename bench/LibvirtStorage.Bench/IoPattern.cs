namespace LibvirtStorage.Bench;

/// <summary>How request offsets are chosen.</summary>
internal enum AccessOrder
{
    /// <summary>qemu-img bench's order: offset, offset + step, ... modulo the image size.</summary>
    Strided,
    /// <summary>Uniformly random request-aligned offsets (ours only; qemu-img bench has no such mode).</summary>
    Random,
}

/// <summary>
/// One I/O run, in qemu-img bench's terms: <see cref="Count"/> requests of <see cref="RequestSize"/> bytes,
/// <see cref="Depth"/> in flight, the first at <see cref="Offset"/> and each next one <see cref="Step"/> further on.
/// </summary>
internal readonly record struct IoPattern(
    int Count,
    int RequestSize,
    long Step,
    long Offset,
    int Depth,
    bool Write,
    byte Fill,
    AccessOrder Order)
{
    /// <summary>Offset of request <paramref name="index"/> in the strided order, as qemu-img bench computes it.</summary>
    /// <remarks>
    /// qemu-img.c bench_cb: <c>offset = b->offset; b->offset += b->step; b->offset %= b->image_size;</c>,
    /// which for a start below the image size is (Offset + index * Step) mod size.
    /// </remarks>
    public long StridedOffset(long index, long imageSize) => (Offset + (index * Step)) % imageSize;
}
