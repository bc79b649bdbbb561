using System.CommandLine;
using LibvirtStorage.Client;

namespace LibvirtStorage.Cli.Service;

/// <summary>How virsh names a volume: NAME with --pool, or the volume's path (its socket), or its key (UUID).</summary>
internal static class VolumeLookup
{
    public static Option<string?> PoolOption() => new("--pool") { Description = "The pool holding VOL (when VOL is a name)" };

    public static Argument<string> VolumeArgument(string name = "VOL") =>
        new(name) { Description = "Volume name (with --pool), path (socket) or key (UUID)" };

    /// <summary>Checks the arguments before connecting: a bare name needs --pool.</summary>
    public static void Validate(string volume, string? pool)
    {
        if (pool is null && !volume.StartsWith('/') && !Guid.TryParse(volume, out _))
        {
            throw new CliUsageException($"'{volume}' is a volume name: give --pool POOL (or use the volume's path or key)");
        }
    }

    public static async Task<string> ResolveAsync(StorageClient client, string volume, string? pool)
    {
        if (pool is not null)
        {
            string poolPath = await client.GetPoolPathAsync(pool).ConfigureAwait(false);
            return await client.GetVolumePathAsync(poolPath, volume).ConfigureAwait(false);
        }

        return volume.StartsWith('/')
            ? await client.GetVolumeByPathAsync(volume).ConfigureAwait(false)
            : await client.GetVolumeByKeyAsync(volume).ConfigureAwait(false);
    }
}
