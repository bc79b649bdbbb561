using System.Runtime.InteropServices;

namespace LibvirtStorage.Service.Native;

/// <summary>chown(2), which .NET does not expose: the export directories get the configured owner and group.</summary>
internal static class FileOwner
{
    /// <summary>Changes the owner and group of <paramref name="path"/>; a null id is left as it is.</summary>
    public static void Change(string path, int? userId, int? groupId)
    {
        if (userId is null && groupId is null)
        {
            return;
        }

        if (Chown(path, userId ?? -1, groupId ?? -1) != 0)
        {
            throw new IOException($"cannot change the owner of {path} to {userId?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "-"}:{groupId?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "-"} (errno {Marshal.GetLastPInvokeError()})");
        }
    }

    [DllImport("libc", EntryPoint = "chown", SetLastError = true)]
    private static extern int Chown([MarshalAs(UnmanagedType.LPUTF8Str)] string path, int owner, int group);
}
