namespace LibvirtStorage.Daemon.Hosting;

/// <summary>lvstord cannot start; the message is one line saying what failed and what to do.</summary>
internal sealed class DaemonStartException(int exitCode, string message, Exception? inner = null) : Exception(message, inner)
{
    /// <summary>The process exit code (<see cref="ExitCodes"/>).</summary>
    public int ExitCode { get; } = exitCode;
}
