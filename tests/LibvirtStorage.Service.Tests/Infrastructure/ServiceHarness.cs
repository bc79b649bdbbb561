using System.Security.Cryptography;

namespace LibvirtStorage.Service.Tests.Infrastructure;

/// <summary>
/// A temporary root with a state directory and pool directories, and a service over them. Disposing
/// deletes everything (keep it with LVSTOR_KEEP_SCRATCH=1).
/// </summary>
public sealed class ServiceHarness : IDisposable
{
    public ServiceHarness(bool definePool = true)
    {
        Root = Directory.CreateTempSubdirectory("lvstor-service-").FullName;
        StateDirectory = System.IO.Path.Combine(Root, "state");
        Users = new VolumeUserRegistry();
        Service = Reopen();
        if (definePool)
        {
            Service.DefinePool("p", PoolPath("p"));
            Service.StartPool("p");
        }
    }

    public string Root { get; }

    public string StateDirectory { get; }

    public VolumeUserRegistry Users { get; }

    public StorageService Service { get; private set; }

    public string PoolPath(string pool) => System.IO.Path.Combine(Root, "pools", pool);

    /// <summary>Path of a file in pool "p" (or another pool).</summary>
    public string File(string name, string pool = "p") => System.IO.Path.Combine(PoolPath(pool), name);

    public string StateFile => System.IO.Path.Combine(StateDirectory, "inventory.json");

    /// <summary>A new service instance over the same state directory: what a daemon restart sees.</summary>
    public StorageService Reopen()
    {
        Service = StorageService.Open(new StorageServiceOptions { StateDirectory = StateDirectory, Users = Users });
        return Service;
    }

    /// <summary>
    /// Everything a failed call must not change: the state file's bytes, every file under the pools (name,
    /// size, content hash) and what the service lists.
    /// </summary>
    public string Fingerprint()
    {
        var lines = new List<string>();
        lines.Add(System.IO.File.Exists(StateFile) ? Convert.ToHexString(SHA256.HashData(System.IO.File.ReadAllBytes(StateFile))) : "no state");
        string pools = System.IO.Path.Combine(Root, "pools");
        if (Directory.Exists(pools))
        {
            foreach (string path in Directory.EnumerateFileSystemEntries(pools, "*", SearchOption.AllDirectories).Order(StringComparer.Ordinal))
            {
                lines.Add(System.IO.File.Exists(path)
                    ? $"{path} {new FileInfo(path).Length} {Convert.ToHexString(SHA256.HashData(System.IO.File.ReadAllBytes(path)))}"
                    : $"{path}/");
            }
        }

        foreach (PoolInfo pool in Service.ListPools())
        {
            lines.Add($"{pool.Name} {pool.Path} {pool.Active} {pool.Autostart} {pool.VolumeCount}");
            if (pool.Active)
            {
                foreach (VolumeInfo volume in Service.ListVolumes(pool.Name))
                {
                    lines.Add($"{volume.Name} {volume.Key} {volume.Format} {volume.Capacity} {volume.File} {volume.ReadOnly} "
                        + string.Join(",", volume.Chain.Select(l => $"{l.Volume}/{l.Snapshot}/{l.Format}"))
                        + " " + string.Join(",", volume.Snapshots.Select(s => s.Name)));
                }
            }
        }

        return string.Join('\n', lines);
    }

    public void Dispose()
    {
        if (Environment.GetEnvironmentVariable("LVSTOR_KEEP_SCRATCH") == "1")
        {
            Console.Error.WriteLine($"kept {Root}");
            return;
        }

        try
        {
            Directory.Delete(Root, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
