namespace LibvirtStorage.Cli;

/// <summary>Where a command writes, and whether a human watches (progress bars only then).</summary>
internal sealed record CliContext(TextWriter Out, TextWriter Error, bool IsTerminal);
