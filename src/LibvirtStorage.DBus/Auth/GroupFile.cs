namespace LibvirtStorage.DBus;

/// <summary>
/// Resolves group names to gids from an <c>/etc/group</c>-format file (<c>name:password:gid:members</c>).
/// A small parser instead of getgrnam(3): NSS modules (LDAP, sssd) are not consulted, which is fine for the
/// local admin groups lvstord is configured with; a numeric entry in the list is taken as a gid as is.
/// </summary>
internal static class GroupFile
{
    public static Dictionary<string, uint> Resolve(string file, IEnumerable<string> names)
    {
        var wanted = names.ToHashSet(StringComparer.Ordinal);
        var gids = new Dictionary<string, uint>(StringComparer.Ordinal);
        foreach (string name in wanted)
        {
            if (uint.TryParse(name, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out uint gid))
            {
                gids[name] = gid;
            }
        }

        string[] lines;
        try
        {
            lines = File.ReadAllLines(file);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return gids;
        }

        foreach (string line in lines)
        {
            string[] fields = line.Split(':');
            if (fields.Length >= 3 && wanted.Contains(fields[0]) && !gids.ContainsKey(fields[0]) &&
                uint.TryParse(fields[2], System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out uint gid))
            {
                gids[fields[0]] = gid;
            }
        }

        return gids;
    }
}
