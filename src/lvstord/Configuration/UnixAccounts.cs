using System.Globalization;
using System.Runtime.InteropServices;

namespace LibvirtStorage.Daemon.Configuration;

/// <summary>
/// User and group names to ids through the C library (getpwnam_r/getgrnam_r), so NSS sources such as LDAP
/// count, not only /etc/passwd. A decimal number is taken as the id itself.
/// </summary>
internal static class UnixAccounts
{
    // Offsets of pw_uid in struct passwd and gr_gid in struct group on 64-bit Linux: two pointers come first.
    private const int IdOffset = 16;
    private const int StructBytes = 64;
    private const int BufferBytes = 64 * 1024;

    /// <summary>The uid of user <paramref name="name"/>, or null when there is no such user.</summary>
    public static uint? FindUserId(string name) => Find(name, GetPwNamR);

    /// <summary>The gid of group <paramref name="name"/>, or null when there is no such group.</summary>
    public static uint? FindGroupId(string name) => Find(name, GetGrNamR);

    /// <summary>The effective uid of this process.</summary>
    public static uint EffectiveUserId => GetEUid();

    /// <summary>The effective gid of this process.</summary>
    public static uint EffectiveGroupId => GetEGid();

    private delegate int Lookup(string name, IntPtr entry, IntPtr buffer, nuint bufferLength, out IntPtr result);

    private static uint? Find(string name, Lookup lookup)
    {
        if (name.Length > 0 && name.All(char.IsAsciiDigit))
        {
            return uint.TryParse(name, NumberStyles.None, CultureInfo.InvariantCulture, out uint id) ? id : null;
        }

        IntPtr entry = Marshal.AllocHGlobal(StructBytes);
        IntPtr buffer = Marshal.AllocHGlobal(BufferBytes);
        try
        {
            int error = lookup(name, entry, buffer, BufferBytes, out IntPtr result);
            return error == 0 && result != IntPtr.Zero ? (uint)Marshal.ReadInt32(result, IdOffset) : null;
        }
        finally
        {
            Marshal.FreeHGlobal(buffer);
            Marshal.FreeHGlobal(entry);
        }
    }

    [DllImport("libc", EntryPoint = "geteuid")]
    private static extern uint GetEUid();

    [DllImport("libc", EntryPoint = "getegid")]
    private static extern uint GetEGid();

    [DllImport("libc", EntryPoint = "getpwnam_r")]
    private static extern int GetPwNamR([MarshalAs(UnmanagedType.LPUTF8Str)] string name, IntPtr entry, IntPtr buffer, nuint bufferLength, out IntPtr result);

    [DllImport("libc", EntryPoint = "getgrnam_r")]
    private static extern int GetGrNamR([MarshalAs(UnmanagedType.LPUTF8Str)] string name, IntPtr entry, IntPtr buffer, nuint bufferLength, out IntPtr result);
}
