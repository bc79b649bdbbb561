namespace LibvirtStorage.Client;

/// <summary>lvstord's counters (<c>Manager.GetStatus</c>).</summary>
/// <param name="Pools">Defined pools.</param>
/// <param name="ActivePools">Started pools.</param>
/// <param name="Volumes">Volumes in all pools.</param>
/// <param name="Exports">Listening export sockets.</param>
/// <param name="ConnectedGuests">Guests connected to a socket.</param>
/// <param name="Jobs">Running jobs (job-list also shows those finished in the last minute).</param>
/// <param name="StartedAt">When lvstord started.</param>
public sealed record ServiceStatus(
    uint Pools,
    uint ActivePools,
    uint Volumes,
    uint Exports,
    uint ConnectedGuests,
    uint Jobs,
    DateTimeOffset StartedAt);

/// <summary>lvstord's own facts (the Manager's properties).</summary>
/// <param name="Version">lvstord's version.</param>
/// <param name="StateDirectory">Where lvstord keeps its inventory.</param>
/// <param name="RuntimeDirectory">Where the export sockets live.</param>
public sealed record ManagerInfo(string Version, string StateDirectory, string RuntimeDirectory);

/// <summary>One current user of one volume (<c>Manager.ListUsers</c>).</summary>
/// <param name="Pool">The pool's name.</param>
/// <param name="Volume">The volume's name.</param>
/// <param name="Kind"><c>guest</c>, <c>export</c>, <c>job</c> or <c>backing</c>.</param>
/// <param name="Who">Who uses it.</param>
public sealed record VolumeUser(string Pool, string Volume, string Kind, string Who);
