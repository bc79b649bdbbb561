using System.Buffers.Binary;

namespace LibvirtStorage.Vhost.Blk;

/// <summary>
/// The virtio-blk device configuration space (virtio 1.2 §5.2.4, <c>struct virtio_blk_config</c>) and the feature
/// bits that go with it, built from the device and the export settings. Serialised little-endian; the secure-erase
/// and zoned fields that follow <see cref="Size"/> bytes are not offered and read as zero.
/// </summary>
/// <remarks>
/// Offered: SEG_MAX, BLK_SIZE, FLUSH, MQ, and DISCARD / WRITE_ZEROES when enabled on a writable export, RO on a
/// read-only one. Not offered: SIZE_MAX (a segment is bounded only by the 2^32 - 1 chain limit), GEOMETRY,
/// TOPOLOGY (zeroes), CONFIG_WCE (the cache mode is fixed by the export; writes to <c>writeback</c> through
/// SET_CONFIG are not supported, so a driver must not get to toggle it).
/// </remarks>
internal readonly struct VirtioBlkConfig
{
    /// <summary>Bytes of the layout up to and including <c>unused1</c>.</summary>
    public const int Size = 60;

    private const int SectorShift = 9;

    private VirtioBlkConfig(ulong capacitySectors, uint blockSize, VirtioBlkSettings settings, bool readOnly)
    {
        CapacitySectors = capacitySectors;
        BlockSize = blockSize;
        Settings = settings;
        ReadOnly = readOnly;
    }

    /// <summary>capacity, in 512-byte sectors.</summary>
    public ulong CapacitySectors { get; }

    /// <summary>blk_size, in bytes.</summary>
    public uint BlockSize { get; }

    /// <summary>Whether the export is read-only (VIRTIO_BLK_F_RO).</summary>
    public bool ReadOnly { get; }

    /// <summary>The export settings the limits come from.</summary>
    public VirtioBlkSettings Settings { get; }

    /// <summary>The virtio-blk feature bits offered (device-specific bits only; the server adds VERSION_1 and the ring bits).</summary>
    public ulong Features
    {
        get
        {
            // Without FLUSH the driver treats the disk as write-through (no volatile cache: Linux sends no flushes).
            ulong features = VirtioBlkFeatures.SegMax | VirtioBlkFeatures.BlockSize | VirtioBlkFeatures.MultiQueue
                | (Settings.Writeback ? VirtioBlkFeatures.Flush : 0);
            if (ReadOnly)
            {
                return features | VirtioBlkFeatures.ReadOnly;
            }

            if (Settings.MaxDiscardSectors != 0)
            {
                features |= VirtioBlkFeatures.Discard;
            }

            if (Settings.MaxWriteZeroesSectors != 0)
            {
                features |= VirtioBlkFeatures.WriteZeroes;
            }

            return features;
        }
    }

    /// <summary>Snapshots <paramref name="device"/> (capacity, block size, read-only) with <paramref name="settings"/>.</summary>
    /// <param name="device">The exported device.</param>
    /// <param name="settings">The export settings; validated here.</param>
    public static VirtioBlkConfig Create(IBlockDevice device, VirtioBlkSettings settings)
    {
        ArgumentNullException.ThrowIfNull(device);
        ArgumentNullException.ThrowIfNull(settings);
        settings.Validate();
        int blockSize = device.LogicalBlockSize;
        if (blockSize < 512 || (blockSize & (blockSize - 1)) != 0)
        {
            ThrowHelper.ArgumentOutOfRange(nameof(device), $"logical block size {blockSize} is not a power of two ≥ 512");
        }

        ArgumentOutOfRangeException.ThrowIfNegative(device.Capacity, nameof(device));
        return new VirtioBlkConfig((ulong)device.Capacity >> SectorShift, (uint)blockSize, settings, device.IsReadOnly);
    }

    /// <summary>Writes the <see cref="Size"/>-byte layout into <paramref name="destination"/>.</summary>
    /// <param name="destination">At least <see cref="Size"/> bytes.</param>
    public void WriteTo(Span<byte> destination)
    {
        Span<byte> c = destination[..Size];
        c.Clear(); // size_max, geometry, topology, unused0 and unused1 stay 0 (§5.2.5: padding MUST be 0)
        BinaryPrimitives.WriteUInt64LittleEndian(c, CapacitySectors);
        BinaryPrimitives.WriteUInt32LittleEndian(c[12..], Settings.SegMax);
        BinaryPrimitives.WriteUInt32LittleEndian(c[20..], BlockSize);
        c[32] = Settings.Writeback ? (byte)1 : (byte)0;
        BinaryPrimitives.WriteUInt16LittleEndian(c[34..], Settings.NumQueues);
        if (ReadOnly)
        {
            return; // no DISCARD / WRITE_ZEROES offered: their fields stay 0
        }

        uint blockSectors = BlockSize >> SectorShift;
        BinaryPrimitives.WriteUInt32LittleEndian(c[36..], Settings.MaxDiscardSectors);
        BinaryPrimitives.WriteUInt32LittleEndian(c[40..], Settings.MaxDiscardSectors == 0 ? 0 : Settings.MaxDiscardSegments);
        BinaryPrimitives.WriteUInt32LittleEndian(c[44..], Settings.MaxDiscardSectors == 0 ? 0 : Math.Max(Settings.DiscardSectorAlignment, blockSectors));
        BinaryPrimitives.WriteUInt32LittleEndian(c[48..], Settings.MaxWriteZeroesSectors);
        BinaryPrimitives.WriteUInt32LittleEndian(c[52..], Settings.MaxWriteZeroesSectors == 0 ? 0 : Settings.MaxWriteZeroesSegments);
        c[56] = Settings.MaxWriteZeroesSectors != 0 && Settings.WriteZeroesMayUnmap ? (byte)1 : (byte)0;
    }

    /// <summary>
    /// Fills <paramref name="destination"/> with the config space from <paramref name="offset"/> (GET_CONFIG's
    /// window); bytes past <see cref="Size"/> read as zero. Returns <see langword="false"/> if the window wraps.
    /// </summary>
    /// <param name="offset">Offset into the config space.</param>
    /// <param name="destination">The window to fill.</param>
    public bool TryRead(uint offset, Span<byte> destination)
    {
        if ((ulong)offset + (ulong)destination.Length > uint.MaxValue)
        {
            return false;
        }

        Span<byte> whole = stackalloc byte[Size];
        WriteTo(whole);
        destination.Clear();
        if (offset < Size)
        {
            ReadOnlySpan<byte> part = whole[(int)offset..];
            part[..Math.Min(part.Length, destination.Length)].CopyTo(destination);
        }

        return true;
    }
}
