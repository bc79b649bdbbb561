using LibvirtStorage.Service.Native;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace LibvirtStorage.Service;

/// <summary>
/// A stream, commit or base move job as written to disk when it starts, so the next lvstord can take it up after a crash or a
/// stop: <c>&lt;state-dir&gt;/jobs/&lt;id&gt;.json</c>, removed when the job ends.
/// </summary>
/// <param name="Id">The job's id, kept by the resumed job.</param>
/// <param name="Type">Stream or commit.</param>
/// <param name="Pool">The pool.</param>
/// <param name="Volume">The volume.</param>
/// <param name="TopFile">The volume's top file when the job started: a commit whose pivot happened has another top.</param>
/// <param name="BaseSnapshot">The base snapshot, resolved at the start (a commit's default base is the newest snapshot then).</param>
/// <param name="SpeedLimit">Bytes per second, 0 unlimited.</param>
/// <param name="Created">When the job was first started.</param>
/// <param name="TargetPool">A base move's target pool (<see cref="TopFile"/> is then the base's file before the move).</param>
/// <param name="IdlePriority">The job waits for gaps in guest I/O (<see cref="LiveJobControl.IdlePriority"/>).</param>
internal sealed record JobRecord(long Id, StorageJobType Type, string Pool, string Volume, string TopFile, string? BaseSnapshot,
    long SpeedLimit, DateTimeOffset Created, string? TargetPool = null, bool IdlePriority = false);

[JsonSourceGenerationOptions(WriteIndented = true, PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, UseStringEnumConverter = true)]
[JsonSerializable(typeof(JobRecord))]
internal sealed partial class JobJsonContext : JsonSerializerContext;

/// <summary>The jobs folder: one file per job, written atomically and durably.</summary>
internal sealed class JobStore(string directory)
{
    public string Directory { get; } = directory;

    public void Save(JobRecord record)
    {
        string path = PathOf(record.Id);
        try
        {
            DirectorySync.ReplaceFile(path, stream => JsonSerializer.Serialize(stream, record, JobJsonContext.Default.JobRecord));
        }
        catch (Exception ex) when (ThrowHelper.ToServiceError($"cannot record the job in {path}", ex) is { } error)
        {
            throw error;
        }
    }

    public void Delete(long id)
    {
        try
        {
            File.Delete(PathOf(id));
            DirectorySync.Sync(Directory);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            // A job file that cannot be removed is taken up again at the next start, finds nothing to do, and is removed then.
        }
    }

    /// <summary>Every recorded job, and the files that could not be read (with why).</summary>
    public (List<JobRecord> Records, List<string> Damaged) Load()
    {
        var records = new List<JobRecord>();
        var damaged = new List<string>();
        if (!System.IO.Directory.Exists(Directory))
        {
            return (records, damaged);
        }

        foreach (string path in System.IO.Directory.EnumerateFiles(Directory, "*.json"))
        {
            try
            {
                JobRecord? record = JsonSerializer.Deserialize(File.ReadAllBytes(path), JobJsonContext.Default.JobRecord);
                if (record is null || Path.GetFileName(path) != FileName(record.Id) || record.Type is not (StorageJobType.Stream or StorageJobType.Commit or StorageJobType.Move)
                    || (record.Type == StorageJobType.Move) != (record.TargetPool is not null))
                {
                    damaged.Add($"{path}: not a stream, commit or move job record");
                    continue;
                }

                records.Add(record);
            }
            catch (Exception ex) when (ex is JsonException or IOException or UnauthorizedAccessException)
            {
                damaged.Add($"{path}: {ex.Message}");
            }
        }

        records.Sort((a, b) => a.Id.CompareTo(b.Id));
        return (records, damaged);
    }

    private string PathOf(long id) => Path.Combine(Directory, FileName(id));

    private static string FileName(long id) => id.ToString(CultureInfo.InvariantCulture) + ".json";
}
