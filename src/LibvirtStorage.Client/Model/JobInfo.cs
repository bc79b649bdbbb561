using System.Text.Json.Serialization;

namespace LibvirtStorage.Client;

/// <summary>A job (clone, upload, download, wipe, stream, commit) as org.lvstor.Storage1.Job describes it.</summary>
/// <param name="ObjectPath">The job's D-Bus object path.</param>
/// <param name="Type"><c>clone</c>, <c>upload</c>, <c>download</c>, <c>wipe</c>, <c>stream</c> or <c>commit</c>.</param>
/// <param name="Pool">The pool's name.</param>
/// <param name="Volume">The volume's name.</param>
/// <param name="Target">The clone's target name, or empty.</param>
/// <param name="BytesDone">Bytes done so far.</param>
/// <param name="BytesTotal">Bytes to do.</param>
/// <param name="State"><c>running</c>, <c>completed</c>, <c>failed</c> or <c>cancelled</c>.</param>
/// <param name="ErrorName">The D-Bus error name of a failed or cancelled job.</param>
/// <param name="ErrorMessage">The error message of a failed or cancelled job.</param>
/// <param name="Result">The new volume's object path for a clone, otherwise <c>/</c>.</param>
/// <param name="StartedAt">When the job started.</param>
/// <param name="Speed">A stream's or commit's speed limit in bytes per second; 0 is none.</param>
/// <param name="Paused">Whether a running stream or commit is paused.</param>
/// <param name="Priority">A stream's or commit's priority: <c>normal</c>, or <c>idle</c> (waits for gaps in guest I/O).</param>
public sealed record JobInfo(
    string ObjectPath,
    string Type,
    string Pool,
    string Volume,
    string Target,
    ulong BytesDone,
    ulong BytesTotal,
    string State,
    string ErrorName,
    string ErrorMessage,
    string Result,
    DateTimeOffset StartedAt,
    ulong Speed = 0,
    bool Paused = false,
    string Priority = "normal")
{
    /// <summary>True once the job has ended (completed, failed or cancelled).</summary>
    [JsonIgnore]
    public bool IsFinished => State is not "running";
}
