using LibvirtStorage.Images;
using LibvirtStorage.Service.State;

namespace LibvirtStorage.Service;

public sealed partial class StorageService
{
    /// <summary>What probing found for one unknown file: its format and its direct backing file (a name in the pool).</summary>
    private sealed record ProbedFile(string Name, ImageFormat Format, string? BackingName, ImageFormat? BackingFormat);

    /// <summary>
    /// Adopts image files found in the pool directory as volumes. Each is probed and opened with its whole
    /// backing chain by the engine (file extensions mean nothing). A file is left alone, and reported, when its
    /// chain is broken, leaves the pool directory, cannot be opened, or its name is not a valid volume name;
    /// files backing onto such a file are left alone too. Hidden files (the service's own layers) are skipped.
    /// </summary>
    public RefreshReport RefreshPool(string name)
    {
        PoolState pool = null!;
        HashSet<string> skip = null!;
        using OperationScope scope = Begin("refresh", (state, s) =>
        {
            pool = RequireActivePool(state, name);
            s.AddPool(pool);
            skip = pool.KnownFiles().Concat(_reservedNames.Where(n => n.Pool == name).Select(n => n.Volume)).ToHashSet(StringComparer.Ordinal);
        });

        var problems = new List<StorageProblem>();
        foreach (VolumeState volume in pool.Volumes)
        {
            foreach (string file in volume.Files().Where(f => !File.Exists(pool.FullPath(f))))
            {
                problems.Add(new StorageProblem(name, file, $"file {file} of volume '{volume.Name}' is missing; restore it or delete the volume"));
            }
        }

        var probed = new Dictionary<string, ProbedFile>(StringComparer.Ordinal);
        foreach (string file in ListCandidates(pool, skip, problems))
        {
            if (Probe(pool, file, problems) is { } found)
            {
                probed.Add(file, found);
            }
        }

        // Adopt bottom-up: a file is adopted only when its backing file is a known volume file or adopted first.
        var adopted = new List<VolumeState>();
        var adoptedNames = new HashSet<string>(StringComparer.Ordinal);
        var refused = new HashSet<string>(StringComparer.Ordinal);
        foreach (string file in probed.Keys.Order(StringComparer.Ordinal))
        {
            Adopt(file, depth: 0);
        }

        if (adopted.Count > 0)
        {
            Commit(state =>
            {
                PoolState current = RequireActivePool(state, name);
                foreach (VolumeState volume in adopted)
                {
                    current = current.WithVolume(volume);
                }

                return state.WithPool(current);
            });
            Exports.Sync(name); // new sockets, and read-only exports for volumes that now back an adopted file
        }

        return new RefreshReport(adopted.Select(v => v.Name).ToList(), problems);

        bool Adopt(string file, int depth)
        {
            if (skip.Contains(file) || adoptedNames.Contains(file))
            {
                return true;
            }

            if (refused.Contains(file) || !probed.TryGetValue(file, out ProbedFile? found) || depth > 256)
            {
                return false;
            }

            if (found.BackingName is not null && !Adopt(found.BackingName, depth + 1))
            {
                refused.Add(file);
                problems.Add(new StorageProblem(name, file, $"file {file} was not adopted: its backing file {found.BackingName} was not adopted"));
                return false;
            }

            // Adopting it would make the backing volume read-only under a guest that writes it.
            if (found.BackingName is not null && pool.Volumes.FirstOrDefault(v => v.File == found.BackingName) is { } owner
                && Exports.GetState(owner.Key) == ExportState.Connected)
            {
                refused.Add(file);
                problems.Add(new StorageProblem(name, file, $"file {file} was not adopted: its backing volume '{owner.Name}' is in use by {string.Join(", ", Users.GetUsers(owner.Key))} and writes it; adopt it after the guest disconnects"));
                return false;
            }

            adopted.Add(new VolumeState(Guid.NewGuid(), file, file, found.Format, found.BackingName, found.BackingFormat, [], 1, DateTimeOffset.UtcNow));
            adoptedNames.Add(file);
            return true;
        }
    }

    /// <summary>Regular, visible files of the pool directory that the inventory does not know and whose names are valid.</summary>
    private List<string> ListCandidates(PoolState pool, HashSet<string> skip, List<StorageProblem> problems)
    {
        var candidates = new List<string>();
        IEnumerable<FileSystemInfo> entries = ThrowHelper.Translate($"cannot list pool directory {pool.Path}",
            () => new DirectoryInfo(pool.Path).EnumerateFileSystemInfos().ToList());
        foreach (FileSystemInfo entry in entries)
        {
            string file = entry.Name;
            if (file.StartsWith('.') || skip.Contains(file))
            {
                continue;
            }

            if (entry is DirectoryInfo || entry.LinkTarget is not null)
            {
                problems.Add(new StorageProblem(pool.Name, file, $"{file} is a directory or a symbolic link; a pool holds image files only, so it was not adopted"));
                continue;
            }

            try
            {
                StorageNames.ValidateVolumeName(pool.Name, file, RuntimeDirectory);
                candidates.Add(file);
            }
            catch (StorageServiceException ex)
            {
                problems.Add(new StorageProblem(pool.Name, file, $"file {file} was not adopted: {ex.Message} (rename the file)"));
            }
        }

        return candidates;
    }

    /// <summary>Opens the file and its chain through the engine; every layer must be a file directly in the pool directory.</summary>
    private static ProbedFile? Probe(PoolState pool, string file, List<StorageProblem> problems)
    {
        string poolDirectory = RealDirectory(pool.Path);
        try
        {
            // Without locks: a backing file may be a volume that an export holds read-write, and probing reads only headers.
            using IBlockImage top = ImageOpener.Open(pool.FullPath(file), new ImageOpenOptions { ReadOnly = true, Lock = false });
            for (IBlockImage? layer = top.Backing; layer is not null; layer = layer.Backing)
            {
                string? directory = Path.GetDirectoryName(Path.GetFullPath(layer.Path));
                if (directory is null || RealDirectory(directory) != poolDirectory || new FileInfo(layer.Path).LinkTarget is not null)
                {
                    problems.Add(new StorageProblem(pool.Name, file, $"file {file} was not adopted: its backing chain reaches {layer.Path}, outside pool directory {pool.Path}; move that file into the pool (and rebase) or leave it unmanaged"));
                    return null;
                }
            }

            IBlockImage? backing = top.Backing;
            return new ProbedFile(file, top.Format, backing is null ? null : Path.GetFileName(backing.Path), backing?.Format);
        }
        catch (Exception ex) when (ex is ImageException or IOException or UnauthorizedAccessException)
        {
            problems.Add(new StorageProblem(pool.Name, file, $"file {file} was not adopted: {ex.Message}"));
            return null;
        }
    }

    private static string RealDirectory(string directory)
    {
        string full = Path.TrimEndingDirectorySeparator(Path.GetFullPath(directory));
        try
        {
            return new DirectoryInfo(full).ResolveLinkTarget(returnFinalTarget: true)?.FullName ?? full;
        }
        catch (IOException)
        {
            return full;
        }
    }
}
