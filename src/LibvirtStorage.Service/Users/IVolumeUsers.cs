namespace LibvirtStorage.Service;

/// <summary>Something outside the inventory that uses a volume: an export, a connected domain, a job.</summary>
/// <param name="Kind">For example "export", "domain", "job".</param>
/// <param name="Description">Who, in words a user recognises (a socket path, a domain name).</param>
public sealed record VolumeUser(string Kind, string Description)
{
    /// <inheritdoc/>
    public override string ToString() => $"{Kind} {Description}";
}

/// <summary>
/// Who uses which volume, beyond the backing relations the service already knows. Exports and jobs
/// register here; delete, revert, stop and undefine are refused while a volume has users, and the error names them.
/// </summary>
public interface IVolumeUsers
{
    /// <summary>The current users of the volume with key <paramref name="volumeKey"/> (empty when none).</summary>
    IReadOnlyList<VolumeUser> GetUsers(Guid volumeKey);
}
