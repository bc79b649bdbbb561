namespace LibvirtStorage.Cli;

/// <summary>Where a command writes, and whether a human watches (progress bars only then).</summary>
/// <param name="Out">Standard output.</param>
/// <param name="Error">Standard error.</param>
/// <param name="IsTerminal">Whether standard output is a terminal.</param>
internal sealed record CliContext(TextWriter Out, TextWriter Error, bool IsTerminal)
{
    /// <summary>Signalled by Ctrl-C (tests signal it themselves): a waiting service command cancels its job.</summary>
    public CancellationToken Interrupt { get; init; }

    /// <summary>Whether standard error is a terminal too (where progress bars are drawn).</summary>
    public bool ErrorIsTerminal { get; init; }
}
