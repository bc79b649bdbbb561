namespace LibvirtStorage.Service;

/// <summary>Something found on disk that the service did not act on, reported instead of silently handled.</summary>
/// <param name="Pool">The pool concerned.</param>
/// <param name="File">The file concerned, when there is one.</param>
/// <param name="Message">What is wrong and what to do about it.</param>
public sealed record StorageProblem(string Pool, string? File, string Message);

/// <summary>The outcome of a pool refresh.</summary>
/// <param name="Adopted">Names of the volumes adopted from files found in the pool directory.</param>
/// <param name="Problems">Files left alone, with the reason.</param>
public sealed record RefreshReport(IReadOnlyList<string> Adopted, IReadOnlyList<StorageProblem> Problems);
