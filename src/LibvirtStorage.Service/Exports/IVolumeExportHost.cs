using LibvirtStorage.Images;

namespace LibvirtStorage.Service;

/// <summary>What the exports need to know about one volume: where to listen and which chain to serve.</summary>
/// <param name="Key">The volume's key.</param>
/// <param name="Pool">Its pool.</param>
/// <param name="Volume">Its name (also the device serial the guest reads, cut to 20 bytes).</param>
/// <param name="SocketPath">The socket, <c>&lt;runtime-dir&gt;/&lt;pool&gt;/&lt;volume&gt;.sock</c>.</param>
/// <param name="File">The absolute path of the top image file.</param>
/// <param name="Format">The top image's format.</param>
/// <param name="ReadOnly">Whether other volumes use it as backing, so it must be served read-only.</param>
public sealed record ExportTarget(Guid Key, string Pool, string Volume, string SocketPath, string File, ImageFormat Format, bool ReadOnly);

/// <summary>The service as its exports see it (implemented by <see cref="StorageService"/>).</summary>
public interface IVolumeExportHost
{
    /// <summary>Names of the active pools.</summary>
    IReadOnlyList<string> ActivePools { get; }

    /// <summary>The volumes of <paramref name="poolName"/> to export; empty when the pool is stopped or unknown.</summary>
    IReadOnlyList<ExportTarget> GetExportTargets(string poolName);

    /// <summary>The volume with key <paramref name="volumeKey"/> if it exists in an active pool; otherwise null.</summary>
    ExportTarget? GetExportTarget(Guid volumeKey);

    /// <summary>Registers a user of a volume (a connected guest) in the service's users until the result is disposed.</summary>
    IDisposable AttachUser(Guid volumeKey, VolumeUser user);
}
