namespace LibvirtStorage.Service;

/// <summary>Where the service keeps its state and its export sockets.</summary>
public sealed record StorageServiceOptions
{
    /// <summary>Directory of the inventory file (<c>inventory.json</c>).</summary>
    public string StateDirectory { get; init; } = "/var/lib/lvstor";

    /// <summary>Directory of the export sockets, <c>&lt;runtime-dir&gt;/&lt;pool&gt;/&lt;volume&gt;.sock</c>; names are checked against it.</summary>
    public string RuntimeDirectory { get; init; } = StorageNames.DefaultRuntimeDirectory;

    /// <summary>Who uses which volume besides other volumes; null for an empty registry of its own.</summary>
    public IVolumeUsers? Users { get; init; }

    /// <summary>The volumes' vhost-user-blk exports; null for none (every volume reports <see cref="ExportState.Stopped"/>).</summary>
    public IVolumeExports? Exports { get; init; }
}
