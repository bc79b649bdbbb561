using Tmds.DBus.Protocol;

namespace LibvirtStorage.DBus;

/// <summary>
/// Decides whether the sender of a call may change state: uid 0, lvstord's own uid, or a member (primary or
/// supplementary, from the bus's <c>UnixGroupIDs</c>) of one of the admin groups. The bus daemon vouches for
/// the credentials (<c>org.freedesktop.DBus.GetConnectionCredentials</c>), so a client cannot claim another uid.
/// </summary>
internal sealed class CallerAuthorizer(DBusConnection connection, StorageBusOptions options)
{
    private static readonly uint OwnUid = ReadOwnUid();

    /// <summary>Throws <see cref="BusError"/> AccessDenied when <paramref name="sender"/> may not call <paramref name="method"/>.</summary>
    public async Task DemandAdminAsync(string? sender, string method)
    {
        if (string.IsNullOrEmpty(sender))
        {
            // Peer-to-peer connections carry no sender; there is no bus to vouch for the caller.
            throw BusError.AccessDenied($"{method} needs a caller the bus can identify");
        }

        (uint uid, uint[] groups) = await GetCredentialsAsync(sender).ConfigureAwait(false);
        if (uid == 0 || uid == OwnUid)
        {
            return;
        }

        Dictionary<string, uint> allowed = GroupFile.Resolve(options.GroupFile, options.AdminGroups);
        if (groups.Any(allowed.ContainsValue))
        {
            return;
        }

        string names = options.AdminGroups.Count == 0 ? "none configured" :
            string.Join(", ", options.AdminGroups.Select(g => allowed.TryGetValue(g, out uint gid) ? $"{g} (gid {gid})" : $"{g} (no such group)"));
        throw BusError.AccessDenied(
            $"uid {uid} may not call {method}: it changes state and is allowed only to uid 0, uid {OwnUid} (lvstord) and members of the groups {names}; add the user to one of them");
    }

    private async Task<(uint Uid, uint[] Groups)> GetCredentialsAsync(string sender)
    {
        MessageBuffer message;
        using (MessageWriter writer = connection.GetMessageWriter())
        {
            writer.WriteMethodCallHeader("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "GetConnectionCredentials", "s", MessageFlags.None);
            writer.WriteString(sender);
            message = writer.CreateMessage();
        }

        Dictionary<string, VariantValue> credentials;
        try
        {
            credentials = await connection.CallMethodAsync(message,
                static (Message reply, object? _) => reply.GetBodyReader().ReadDictionaryOfStringToVariantValue(), null).ConfigureAwait(false);
        }
        catch (DBusErrorReplyException ex)
        {
            // Typically NameHasNoOwner: the caller disconnected before we could ask who it is.
            throw BusError.AccessDenied($"the bus cannot say who {sender} is ({ex.ErrorName}: {ex.ErrorMessage})");
        }
        if (!credentials.TryGetValue("UnixUserID", out VariantValue uidValue))
        {
            throw BusError.AccessDenied("the bus did not report the caller's uid");
        }

        uint[] groups = credentials.TryGetValue("UnixGroupIDs", out VariantValue groupValue) ? groupValue.GetArray<uint>() : [];
        return (uidValue.GetUInt32(), groups);
    }

    /// <summary>The effective uid, from /proc (no P/Invoke needed).</summary>
    private static uint ReadOwnUid()
    {
        try
        {
            foreach (string line in File.ReadLines("/proc/self/status"))
            {
                if (line.StartsWith("Uid:", StringComparison.Ordinal))
                {
                    string[] ids = line[4..].Split((char[])['\t', ' '], StringSplitOptions.RemoveEmptyEntries);
                    return uint.Parse(ids[1], System.Globalization.CultureInfo.InvariantCulture);
                }
            }
        }
        catch (Exception ex) when (ex is IOException or FormatException or IndexOutOfRangeException)
        {
        }

        return 0;
    }
}
