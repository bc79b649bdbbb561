using LibvirtStorage.Images;
using LibvirtStorage.Images.Operations;
using LibvirtStorage.Service.State;

namespace LibvirtStorage.Service;

public sealed partial class StorageService
{
    /// <summary>
    /// Creates a raw or qcow2 volume; with <see cref="VolumeSpec.BackingVolume"/> a qcow2 overlay over that
    /// volume (same pool only), which then becomes read-only. The image is written under a hidden temporary
    /// name and renamed into place, so a failure leaves nothing behind.
    /// </summary>
    public VolumeInfo CreateVolume(string poolName, VolumeSpec spec, string? backingPool = null)
    {
        ArgumentNullException.ThrowIfNull(spec);
        StorageNames.ValidateVolumeName(poolName, spec.Name, RuntimeDirectory);
        ImageFormat format = ParseFormat(spec.Format);
        long? capacity = spec.Capacity is { } c ? CheckCapacity(c) : null;
        if (backingPool is not null && backingPool != poolName)
        {
            ThrowHelper.Invalid($"backing volume '{spec.BackingVolume}' is in pool '{backingPool}', not '{poolName}'; a backing volume must be in the same pool (clone it there first)");
        }

        if (spec.BackingVolume is not null && format != ImageFormat.Qcow2)
        {
            ThrowHelper.Invalid($"a {format.ToName()} volume cannot have a backing volume; use format 'qcow2'");
        }

        if (spec.BackingVolume is null && capacity is null)
        {
            ThrowHelper.Invalid($"volume '{spec.Name}' needs a capacity (in bytes) unless it has a backing volume");
        }

        PoolState pool = null!;
        VolumeState? backing = null;
        using OperationScope scope = Begin("create", (state, s) =>
        {
            pool = RequireActivePool(state, poolName);
            if (spec.BackingVolume is not null)
            {
                backing = RequireVolume(pool, spec.BackingVolume);
                if (Users.GetUsers(backing.Key) is { Count: > 0 } users)
                {
                    ThrowHelper.InUse($"cannot put volume '{spec.Name}' over '{backing.Name}': it is in use by {string.Join(", ", users)} and would change under the new volume; stop those users first");
                }

                s.AddVolume(pool, backing);
            }

            s.ReserveName(pool, spec.Name);
        });

        var options = new ImageCreateOptions
        {
            Format = format,
            Size = capacity,
            BackingFile = backing?.File,
            BackingFormat = backing?.Format,
        };
        var volume = new VolumeState(Guid.NewGuid(), spec.Name, spec.Name, format, backing?.File, backing?.Format, [], 1, DateTimeOffset.UtcNow);
        try
        {
            // The backing volume's export holds its file read-write: it is closed while the overlay is made over it,
            // and reopened read-only (the volume now backs another).
            using (backing is null ? null : Exports.Quiesce(backing.Key))
            {
                CreateFileAtomically(pool, spec.Name, $"cannot create volume '{spec.Name}'", path => ImageOpener.Create(path, options));
                CommitNewVolume(poolName, volume);
            }
        }
        finally
        {
            Exports.Sync(poolName);
        }

        return GetVolume(poolName, spec.Name);
    }

    /// <summary>Deletes a volume and its snapshot layers. Refused, naming the users, while anything uses it.</summary>
    public void DeleteVolume(string poolName, string volumeName)
    {
        PoolState pool = null!;
        VolumeState volume = null!;
        using (Begin("delete", (state, s) =>
        {
            pool = RequireActivePool(state, poolName);
            volume = RequireVolume(pool, volumeName);
            RefuseIfUsed(pool, volume, "delete");
            s.AddVolume(pool, volume);
        }))
        {
            // Removing the volume from the inventory while its export is quiesced closes the export: the socket goes.
            using (QuiesceUnused(pool, volume, "delete"))
            {
                Commit(state => state.WithPool(RequirePool(state, poolName).WithoutVolume(volume.Key)));
            }
        }

        Exports.Sync(poolName); // a volume it backed onto may be writable again

        // The inventory no longer has the volume; files that cannot be removed are named so they can be removed by hand.
        var left = new List<string>();
        foreach (string file in volume.Files())
        {
            try
            {
                File.Delete(pool.FullPath(file));
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                left.Add($"{pool.FullPath(file)} ({ex.Message})");
            }
        }

        if (left.Count > 0)
        {
            throw new StorageServiceException(StorageErrorKind.Io, $"volume '{volumeName}' was removed from pool '{poolName}' but these files could not be deleted: {string.Join(", ", left)}; delete them by hand");
        }
    }

    /// <summary>
    /// Changes a volume's capacity. Shrinking needs <paramref name="allowShrink"/>, and qcow2 refuses it
    /// while the cut-off tail holds data; a raw volume is truncated.
    /// </summary>
    public VolumeInfo ResizeVolume(string poolName, string volumeName, long capacity, bool allowShrink = false)
    {
        long newSize = CheckCapacity(capacity);
        PoolState pool = null!;
        VolumeState volume = null!;
        using (Begin("resize", (state, s) =>
        {
            pool = RequireActivePool(state, poolName);
            volume = RequireVolume(pool, volumeName);
            RefuseIfReadOnly(pool, volume, "resize");
            s.AddVolume(pool, volume);
        }))
        {
            // The export is quiesced around the resize; reopening it announces a larger size to a connected guest.
            using IDisposable quiesced = Exports.Quiesce(volume.Key);
            ThrowHelper.Translate($"cannot resize volume '{volumeName}'", () =>
            {
                using IBlockImage image = ImageOpener.Open(pool.FullPath(volume.File), new ImageOpenOptions());
                if (newSize < image.VirtualSize && !allowShrink)
                {
                    ThrowHelper.Invalid($"volume '{volumeName}' is {image.VirtualSize} bytes; shrinking it to {newSize} discards its tail, so ask for it explicitly (allow shrink)");
                }

                if (newSize < image.VirtualSize && Exports.GetState(volume.Key) == ExportState.Connected)
                {
                    ThrowHelper.InUse($"cannot shrink volume '{volumeName}' in pool '{poolName}': it is in use by {string.Join(", ", Users.GetUsers(volume.Key))}, and a running guest cannot lose the end of its disk; grow it instead, or shrink it after the guest disconnects");
                }

                if (newSize != image.VirtualSize)
                {
                    image.Resize(newSize);
                    image.Flush();
                }
            });
        }

        return GetVolume(poolName, volumeName);
    }

    /// <summary>A volume's identity, format, sizes, backing chain (as volume names and formats) and snapshots.</summary>
    public VolumeInfo GetVolume(string poolName, string volumeName)
    {
        InventoryState state = Snapshot();
        PoolState pool = RequirePool(state, poolName);
        return ToInfo(pool, RequireVolume(pool, volumeName));
    }

    /// <summary>Finds a volume by its key, in any pool.</summary>
    public VolumeInfo GetVolumeByKey(Guid key)
    {
        InventoryState state = Snapshot();
        foreach (PoolState pool in state.Pools)
        {
            if (pool.Volumes.FirstOrDefault(v => v.Key == key) is { } volume)
            {
                return ToInfo(pool, volume);
            }
        }

        throw new StorageServiceException(StorageErrorKind.NotFound, $"no volume has key {key}");
    }

    /// <summary>Every volume of a pool, by name. A volume whose image cannot be read is listed with its <see cref="VolumeInfo.Problem"/>.</summary>
    public IReadOnlyList<VolumeInfo> ListVolumes(string poolName)
    {
        PoolState pool = RequirePool(Snapshot(), poolName);
        return pool.Volumes.Select(v => ToInfo(pool, v, tolerant: true)).ToList();
    }

    /// <summary>
    /// Reads capacity and allocation from the top image. It opens without locks (as <c>qemu-img info -U</c>)
    /// and reads only the header, so info works while an export or a copy holds the image.
    /// </summary>
    private VolumeInfo ToInfo(PoolState pool, VolumeState volume, bool tolerant = false)
    {
        string path = pool.FullPath(volume.File);
        long capacity = 0, allocation = 0;
        string? problem = null;
        try
        {
            ImageInfo image = ThrowHelper.Translate($"cannot read volume '{volume.Name}'",
                () => ImageInfo.Get(path, volume.Format, forceShare: true));
            (capacity, allocation) = (image.VirtualSize, image.ActualSize);
        }
        catch (StorageServiceException ex) when (tolerant)
        {
            problem = ex.Message;
        }

        List<ChainLayer> chain = ExpectedChain(Snapshot(), pool, volume);
        chain.RemoveAt(0);
        var snapshots = volume.Snapshots.Select(s => new SnapshotInfo(s.Name, s.Created, s.Format, pool.FullPath(s.File))).ToList();
        return new VolumeInfo(pool.Name, volume.Name, volume.Key, volume.Format, capacity, allocation,
            IsBackingOfOthers(pool, volume), path, StorageNames.SocketPath(RuntimeDirectory, pool.Name, volume.Name),
            chain, snapshots, problem);
    }

    /// <summary>
    /// Writes a new file as <c>.&lt;name&gt;.creating-&lt;random&gt;</c>, then renames it to <paramref name="name"/>
    /// without replacing anything. On failure the partial file is removed.
    /// </summary>
    private static void CreateFileAtomically(PoolState pool, string name, string what, Action<string> write)
    {
        string temporary = pool.FullPath($".{name}.creating-{Guid.NewGuid():N}");
        try
        {
            ThrowHelper.Translate(what, () =>
            {
                write(temporary);
                File.Move(temporary, pool.FullPath(name), overwrite: false);
            });
        }
        catch
        {
            TryDeleteFile(temporary);
            throw;
        }
    }

    /// <summary>Adds a volume whose file now exists; if the state cannot be written the file is removed again.</summary>
    private void CommitNewVolume(string poolName, VolumeState volume)
    {
        try
        {
            Commit(state => state.WithPool(RequireActivePool(state, poolName).WithVolume(volume)));
        }
        catch
        {
            PoolState? pool = Snapshot().FindPool(poolName);
            if (pool is not null)
            {
                TryDeleteFile(pool.FullPath(volume.File));
            }

            throw;
        }
    }
}
