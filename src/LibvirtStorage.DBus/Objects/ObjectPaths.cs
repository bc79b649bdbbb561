using System.Text;

namespace LibvirtStorage.DBus;

/// <summary>The object paths of docs/dbus-api.md and systemd's bus label escaping.</summary>
internal static class ObjectPaths
{
    public const string Root = StorageBusServer.RootPath;
    public const string PoolFolder = Root + "/pool";
    public const string JobFolder = Root + "/job";

    public static string Pool(string pool) => $"{PoolFolder}/{Label(pool)}";

    public static string Volume(string pool, string volume) => $"{PoolFolder}/{Label(pool)}/{Label(volume)}";

    public static string Job(long id) => $"{JobFolder}/{id}";

    /// <summary>
    /// systemd's <c>sd_bus_path_encode</c> element: every UTF-8 byte outside [A-Za-z0-9], and a leading digit,
    /// becomes '_' and two lower-case hex digits; the empty string is "_".
    /// </summary>
    public static string Label(string name)
    {
        if (name.Length == 0)
        {
            return "_";
        }

        byte[] bytes = Encoding.UTF8.GetBytes(name);
        var label = new StringBuilder(bytes.Length * 3);
        for (int i = 0; i < bytes.Length; i++)
        {
            byte b = bytes[i];
            bool plain = b is (>= (byte)'a' and <= (byte)'z') or (>= (byte)'A' and <= (byte)'Z') || (b is >= (byte)'0' and <= (byte)'9' && i > 0);
            if (plain)
            {
                label.Append((char)b);
            }
            else
            {
                label.Append('_').Append(b.ToString("x2", System.Globalization.CultureInfo.InvariantCulture));
            }
        }

        return label.ToString();
    }
}
