using LibvirtStorage.Images;

namespace LibvirtStorage.Cli;

/// <summary>A wrong command line that the parser cannot catch (bad -o value, bad size).</summary>
internal sealed class CliUsageException(string message) : Exception(message);

/// <summary>Which exceptions are expected failures (a one-line message, exit 1) rather than bugs (a stack trace).</summary>
internal static class CliErrors
{
    public static bool IsExpected(Exception e) =>
        e is LibvirtStorageException or CliUsageException or IOException or UnauthorizedAccessException or OperationCanceledException;

    public static string Describe(Exception e) => e switch
    {
        OperationCanceledException => "cancelled",
        _ => e.Message,
    };

    /// <summary>Runs a command body, turning expected failures into a message on stderr and exit code 1.</summary>
    public static int Guard(CliContext context, Func<int> body)
    {
        try
        {
            return body();
        }
        catch (Exception e) when (IsExpected(e))
        {
            context.Error.WriteLine($"lvstor: {Describe(e)}");
            return 1;
        }
    }
}
