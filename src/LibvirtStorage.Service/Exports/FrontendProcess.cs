namespace LibvirtStorage.Service;

/// <summary>
/// Names the process at the other end of an export socket the way a user knows it: a QEMU started by libvirt
/// carries its domain name in <c>-name guest=NAME,...</c>, so "domain 'web1'" can be said instead of a bare pid.
/// </summary>
internal static class FrontendProcess
{
    /// <summary>"domain 'NAME' (pid N, comm)" for a QEMU with -name, else "pid N (comm)".</summary>
    public static string Describe(int pid)
    {
        string comm = Read($"/proc/{pid}/comm")?.TrimEnd('\n') ?? "?";
        string? cmdline = Read($"/proc/{pid}/cmdline");
        string? domain = cmdline is null ? null : DomainName(cmdline.Split('\0'));
        return domain is null ? $"pid {pid} ({comm})" : $"domain '{domain}' (pid {pid}, {comm})";
    }

    /// <summary>
    /// The guest name in QEMU's <c>-name</c> option: <c>-name guest=NAME,debug-threads=on</c> (libvirt) or
    /// <c>-name NAME[,...]</c>; QEMU escapes a comma inside a value as ",,". Null when there is none.
    /// </summary>
    public static string? DomainName(IReadOnlyList<string> argv)
    {
        for (int i = 0; i + 1 < argv.Count; i++)
        {
            if (argv[i] is not ("-name" or "--name"))
            {
                continue;
            }

            foreach (string part in SplitOptions(argv[i + 1]))
            {
                if (part.StartsWith("guest=", StringComparison.Ordinal))
                {
                    return NonEmpty(part["guest=".Length..]);
                }
            }

            string first = SplitOptions(argv[i + 1]).FirstOrDefault() ?? string.Empty;
            return first.Contains('=', StringComparison.Ordinal) ? null : NonEmpty(first);
        }

        return null;
    }

    private static string? NonEmpty(string value) => value.Length == 0 ? null : value;

    private static IEnumerable<string> SplitOptions(string value)
    {
        var current = new System.Text.StringBuilder();
        for (int i = 0; i < value.Length; i++)
        {
            if (value[i] == ',' && i + 1 < value.Length && value[i + 1] == ',')
            {
                current.Append(',');
                i++;
            }
            else if (value[i] == ',')
            {
                yield return current.ToString();
                current.Clear();
            }
            else
            {
                current.Append(value[i]);
            }
        }

        yield return current.ToString();
    }

    private static string? Read(string path)
    {
        try
        {
            return File.ReadAllText(path);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return null;   // the process is gone, or /proc is not readable
        }
    }
}
