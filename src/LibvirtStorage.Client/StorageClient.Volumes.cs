using System.Runtime.InteropServices;
using LibvirtStorage.Client.Bus;
using Microsoft.Win32.SafeHandles;

namespace LibvirtStorage.Client;

/// <summary>org.lvstor.Storage1.Volume.</summary>
public sealed partial class StorageClient
{
    /// <summary>A volume's properties.</summary>
    /// <param name="volumePath">The volume's object path.</param>
    /// <returns>The volume.</returns>
    public Task<VolumeInfo> GetVolumeInfoAsync(string volumePath) => Call(async () =>
    {
        VolumeProperties p = await Volume(volumePath).GetAllAsync().ConfigureAwait(false);
        return new VolumeInfo(
            volumePath,
            p.Name,
            p.Key,
            p.Pool.ToString(),
            p.PoolName,
            p.Format,
            p.Capacity,
            p.Allocation,
            p.ReadOnly,
            p.Path,
            p.File,
            p.BackingChain.Select(l => new BackingLayer(l.volume, l.snapshot, l.format, l.file)).ToList(),
            p.Snapshots.Select(s => new SnapshotInfo(s.name, FromUnixMicroseconds(s.created), s.format, s.file)).ToList(),
            p.Users.Select(u => new VolumeUse(u.kind, u.who)).ToList(),
            p.ExportState,
            p.Problem);
    });

    /// <summary>Deletes a volume and its files (<c>InUse</c> naming the users while it is used). [admin]</summary>
    /// <param name="volumePath">The volume's object path.</param>
    /// <returns>A task.</returns>
    public Task DeleteVolumeAsync(string volumePath) => Call(() => Volume(volumePath).DeleteAsync());

    /// <summary>Sets a volume's virtual size. [admin]</summary>
    /// <param name="volumePath">The volume's object path.</param>
    /// <param name="capacity">The new size in bytes.</param>
    /// <param name="allowShrink">Whether a smaller size is allowed.</param>
    /// <returns>A task.</returns>
    public Task ResizeVolumeAsync(string volumePath, ulong capacity, bool allowShrink) =>
        Call(() => Volume(volumePath).ResizeAsync(capacity, allowShrink));

    /// <summary>Takes an external snapshot. [admin]</summary>
    /// <param name="volumePath">The volume's object path.</param>
    /// <param name="name">The snapshot's name.</param>
    /// <returns>A task.</returns>
    public Task CreateSnapshotAsync(string volumePath, string name) => Call(() => Volume(volumePath).CreateSnapshotAsync(name));

    /// <summary>Discards the volume's current top and continues from a snapshot. [admin]</summary>
    /// <param name="volumePath">The volume's object path.</param>
    /// <param name="name">The snapshot's name.</param>
    /// <param name="discardNewer">Whether snapshots newer than it may be deleted.</param>
    /// <returns>A task.</returns>
    public Task RevertToSnapshotAsync(string volumePath, string name, bool discardNewer) =>
        Call(() => Volume(volumePath).RevertToSnapshotAsync(name, discardNewer));

    /// <summary>Starts a clone job. [admin]</summary>
    /// <param name="volumePath">The source volume's object path.</param>
    /// <param name="target">The new volume's name (same pool).</param>
    /// <param name="linked">A linked clone (qcow2 overlay; the source becomes a read-only base) instead of a full copy.</param>
    /// <param name="format">The new volume's format, or empty to keep the source's.</param>
    /// <returns>The job's object path.</returns>
    public Task<string> CloneVolumeAsync(string volumePath, string target, bool linked, string format = "") =>
        Call(async () => (await Volume(volumePath).CloneAsync(target, linked ? "linked" : "full", format).ConfigureAwait(false)).ToString());

    /// <summary>
    /// Starts a clone job of the volume as it was at snapshot <paramref name="snapshot"/> (Volume.CloneFrom): a full copy
    /// of that snapshot's layer and everything below it, or a linked clone backed by that layer. The source's guest keeps
    /// running. [admin]
    /// </summary>
    /// <param name="volumePath">The source volume's object path.</param>
    /// <param name="target">The new volume's name (same pool).</param>
    /// <param name="snapshot">The source's snapshot to clone.</param>
    /// <param name="linked">A linked clone (qcow2 overlay over the snapshot's layer) instead of a full copy.</param>
    /// <param name="format">The new volume's format, or empty to keep the snapshot layer's.</param>
    /// <returns>The job's object path.</returns>
    public Task<string> CloneVolumeFromSnapshotAsync(string volumePath, string target, string snapshot, bool linked, string format = "") =>
        Call(async () => (await Volume(volumePath).CloneFromAsync(target, linked ? "linked" : "full", format,
            new Dictionary<string, object> { ["snapshot"] = snapshot }).ConfigureAwait(false)).ToString());

    /// <summary>Starts an upload job reading <paramref name="fd"/> into the volume. [admin]</summary>
    /// <param name="volumePath">The volume's object path.</param>
    /// <param name="fd">A file, pipe or socket to read; lvstord receives its own copy, so the caller may close it once the call returns.</param>
    /// <param name="offset">Where in the volume to start.</param>
    /// <param name="length">Bytes to write; 0 = to the end of the volume.</param>
    /// <returns>The job's object path.</returns>
    public Task<string> UploadAsync(string volumePath, SafeHandle fd, ulong offset = 0, ulong length = 0) =>
        WithFd(fd, handle => Call(async () => (await Volume(volumePath).UploadAsync(handle, offset, length).ConfigureAwait(false)).ToString()));

    /// <summary>Starts a download job writing the volume to <paramref name="fd"/> (sparse into regular files). [admin]</summary>
    /// <param name="volumePath">The volume's object path.</param>
    /// <param name="fd">A file, pipe or socket to write; lvstord receives its own copy.</param>
    /// <param name="offset">Where in the volume to start.</param>
    /// <param name="length">Bytes to read; 0 = to the end of the volume.</param>
    /// <returns>The job's object path.</returns>
    public Task<string> DownloadAsync(string volumePath, SafeHandle fd, ulong offset = 0, ulong length = 0) =>
        WithFd(fd, handle => Call(async () => (await Volume(volumePath).DownloadAsync(handle, offset, length).ConfigureAwait(false)).ToString()));

    /// <summary>
    /// Tmds.DBus sends only concrete SafeHandle subclasses as 'h': any handle (a socket's too) is passed as a
    /// non-owning SafeFileHandle over the same descriptor, kept alive until the call has been sent.
    /// </summary>
    private static async Task<string> WithFd(SafeHandle fd, Func<SafeFileHandle, Task<string>> call)
    {
        ArgumentNullException.ThrowIfNull(fd);
        if (fd is SafeFileHandle file)
        {
            return await call(file).ConfigureAwait(false);
        }

        bool added = false;
        fd.DangerousAddRef(ref added);
        try
        {
            using var borrowed = new SafeFileHandle(fd.DangerousGetHandle(), ownsHandle: false);
            return await call(borrowed).ConfigureAwait(false);
        }
        finally
        {
            if (added)
            {
                fd.DangerousRelease();
            }
        }
    }

    /// <summary>Starts a job writing zeroes over the whole volume. [admin]</summary>
    /// <param name="volumePath">The volume's object path.</param>
    /// <returns>The job's object path.</returns>
    public Task<string> WipeVolumeAsync(string volumePath) =>
        Call(async () => (await Volume(volumePath).WipeAsync().ConfigureAwait(false)).ToString());

    /// <summary>
    /// Starts a stream: what the volume reads from its backing layers (down to <paramref name="baseSnapshot"/>'s layer, or
    /// all of them) is copied into its top while guests run, then the backing reference is dropped. [admin]
    /// </summary>
    /// <param name="volumePath">The volume's object path.</param>
    /// <param name="baseSnapshot">The snapshot whose layer stays as backing; null streams everything.</param>
    /// <param name="speed">Bytes per second at most; 0 for no limit.</param>
    /// <param name="idle">Wait for gaps in the guest's I/O before each chunk.</param>
    /// <returns>The job's object path.</returns>
    public Task<string> StreamVolumeAsync(string volumePath, string? baseSnapshot, ulong speed, bool idle = false) =>
        Call(async () => (await Volume(volumePath).StreamAsync(LiveJobOptions(baseSnapshot, speed, idle)).ConfigureAwait(false)).ToString());

    /// <summary>
    /// Starts a commit: the volume's top (and the layers above <paramref name="baseSnapshot"/>'s) are merged into that
    /// snapshot's layer while guests run, which then becomes the top; the merged snapshots are deleted. [admin]
    /// </summary>
    /// <param name="volumePath">The volume's object path.</param>
    /// <param name="baseSnapshot">The snapshot whose layer receives the data; null for the newest.</param>
    /// <param name="speed">Bytes per second at most; 0 for no limit.</param>
    /// <param name="idle">Wait for gaps in the guest's I/O before each chunk.</param>
    /// <returns>The job's object path.</returns>
    public Task<string> CommitVolumeAsync(string volumePath, string? baseSnapshot, ulong speed, bool idle = false) =>
        Call(async () => (await Volume(volumePath).CommitAsync(LiveJobOptions(baseSnapshot, speed, idle)).ConfigureAwait(false)).ToString());

    /// <summary>
    /// Starts a base move: the volume (a single-file base) is copied to <paramref name="targetPool"/> while the volumes
    /// over it run, then every one of them is re-pointed to the copy and the old file is deleted. [admin]
    /// </summary>
    /// <param name="volumePath">The base volume's object path.</param>
    /// <param name="targetPool">The pool to move it to.</param>
    /// <param name="speed">Bytes per second at most; 0 for no limit.</param>
    /// <returns>The job's object path.</returns>
    public Task<string> MoveBaseAsync(string volumePath, string targetPool, ulong speed) =>
        Call(async () => (await Volume(volumePath).MoveBaseAsync(targetPool, LiveJobOptions(null, speed)).ConfigureAwait(false)).ToString());

    private static Dictionary<string, object> LiveJobOptions(string? baseSnapshot, ulong speed, bool idle = false)
    {
        var options = new Dictionary<string, object>();
        if (!string.IsNullOrEmpty(baseSnapshot))
        {
            options["base"] = baseSnapshot;
        }

        if (speed > 0)
        {
            options["speed"] = speed;
        }

        if (idle)
        {
            options["priority"] = "idle";
        }

        return options;
    }
}
