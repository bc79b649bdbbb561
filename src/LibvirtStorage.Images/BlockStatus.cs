namespace LibvirtStorage.Images;

/// <summary>What one layer holds for a run of bytes (qemu-img map's vocabulary).</summary>
/// <param name="Length">Bytes from the queried offset that share this status.</param>
/// <param name="Allocated">This layer decides the contents (false: they come from the backing image).</param>
/// <param name="Zero">The run reads as zeroes.</param>
/// <param name="Data">The run is backed by data in this layer's file.</param>
/// <param name="HostOffset">Where the data lives in the file, when it is stored there uncompressed.</param>
public readonly record struct BlockStatus(long Length, bool Allocated, bool Zero, bool Data, long? HostOffset);
