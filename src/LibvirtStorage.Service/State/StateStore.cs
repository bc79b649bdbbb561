using System.Text.Json;
using LibvirtStorage.Service.Native;

namespace LibvirtStorage.Service.State;

/// <summary>
/// Reads and writes <c>&lt;state-dir&gt;/inventory.json</c>. Writes are atomic: a temporary file is written
/// and fsynced, renamed over the old one, and the directory is fsynced so the rename is durable.
/// </summary>
internal sealed class StateStore
{
    public const string FileName = "inventory.json";

    public StateStore(string directory)
    {
        Directory = directory;
        FilePath = Path.Combine(directory, FileName);
    }

    public string Directory { get; }

    public string FilePath { get; }

    /// <summary>Loads the state; a missing file is an empty inventory, a damaged one a Corrupt error naming it.</summary>
    public InventoryState Load()
    {
        byte[] bytes;
        try
        {
            bytes = File.ReadAllBytes(FilePath);
        }
        catch (FileNotFoundException)
        {
            return InventoryState.Empty;
        }
        catch (DirectoryNotFoundException)
        {
            return InventoryState.Empty;
        }
        catch (Exception ex) when (ThrowHelper.ToServiceError($"cannot read the state file {FilePath}", ex) is { } error)
        {
            throw error;
        }

        InventoryState? state;
        try
        {
            state = JsonSerializer.Deserialize(bytes, StateJsonContext.Default.InventoryState);
        }
        catch (JsonException ex)
        {
            throw Corrupt($"it is not valid JSON ({ex.Message})", ex);
        }

        if (state is null || state.Pools is null)
        {
            throw Corrupt("it holds no inventory object", null);
        }

        if (state.Version != InventoryState.CurrentVersion)
        {
            throw Corrupt($"it has version {state.Version}; this lvstord reads version {InventoryState.CurrentVersion}", null);
        }

        if (state.Pools.Any(p => p is null || p.Name is null || p.Path is null || p.Volumes is null
            || p.Volumes.Any(v => v is null || v.Name is null || v.File is null || v.Snapshots is null)))
        {
            throw Corrupt("a pool or volume entry lacks its name, path or file", null);
        }

        if (FindInconsistency(state) is { } inconsistency)
        {
            throw Corrupt(inconsistency, null);
        }

        return state;
    }

    /// <summary>
    /// What makes a parsed state unusable: duplicate names or keys, relative pool paths, or file names that
    /// are not plain names in the pool directory (a hand-edited "../x" must never reach a file operation).
    /// </summary>
    private static string? FindInconsistency(InventoryState state)
    {
        var pools = new HashSet<string>(StringComparer.Ordinal);
        var keys = new HashSet<Guid>();
        foreach (PoolState pool in state.Pools)
        {
            if (!pools.Add(pool.Name))
            {
                return $"pool '{pool.Name}' appears twice";
            }

            if (!Path.IsPathRooted(pool.Path))
            {
                return $"pool '{pool.Name}' has the relative path '{pool.Path}'";
            }

            var names = new HashSet<string>(StringComparer.Ordinal);
            var files = new HashSet<string>(StringComparer.Ordinal);
            foreach (VolumeState volume in pool.Volumes)
            {
                if (!names.Add(volume.Name) || !keys.Add(volume.Key))
                {
                    return $"volume '{volume.Name}' (key {volume.Key}) appears twice";
                }

                foreach (string file in volume.Files().Append(volume.BackingFile ?? "ok"))
                {
                    if (!IsPlainFileName(file))
                    {
                        return $"volume '{volume.Name}' names the file '{file}', which is not a plain file name in the pool directory";
                    }
                }

                if (volume.Files().Any(f => !files.Add(f)))
                {
                    return $"volume '{volume.Name}' shares a file with another volume";
                }
            }
        }

        return null;
    }

    private static bool IsPlainFileName(string? name) =>
        !string.IsNullOrEmpty(name) && name is not ("." or "..") && !name.Contains('/', StringComparison.Ordinal) && !name.Contains('\0', StringComparison.Ordinal);

    /// <summary>Writes the state atomically and durably.</summary>
    public void Save(InventoryState state)
    {
        try
        {
            DirectorySync.ReplaceFile(FilePath, stream => JsonSerializer.Serialize(stream, state, StateJsonContext.Default.InventoryState));
        }
        catch (Exception ex) when (ThrowHelper.ToServiceError($"cannot write the state file {FilePath}", ex) is { } error)
        {
            throw error;
        }
    }

    private StorageServiceException Corrupt(string why, Exception? inner) =>
        new(StorageErrorKind.Corrupt, $"the state file {FilePath} is damaged: {why}; restore it from a backup or move it aside to start with an empty inventory", inner);
}
