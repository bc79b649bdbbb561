using System.Globalization;
using System.Text;

namespace LibvirtStorage.Service;

/// <summary>
/// The rules for pool, volume and snapshot names. A name becomes a file name in the pool directory and
/// part of the export socket path <c>&lt;runtime-dir&gt;/&lt;pool&gt;/&lt;volume&gt;.sock</c>, so it is checked strictly.
/// </summary>
/// <remarks>
/// Allowed: Unicode letters, digits and combining marks, and <c>- _ . +</c>; the first character may not be
/// <c>.</c> (hidden files, <c>.</c> and <c>..</c>, and the service's own layer files start with a dot) or
/// <c>-</c> (it would read as an option to command-line tools). Refused: empty names, <c>/</c>, spaces,
/// control characters, <c>:</c> (QEMU reads <c>proto:</c> prefixes in backing names), and anything that
/// would push the socket path past the 107 bytes <c>sun_path</c> holds.
/// </remarks>
public static class StorageNames
{
    /// <summary>The runtime directory the export sockets live in unless configured otherwise.</summary>
    public const string DefaultRuntimeDirectory = "/run/lvstor";

    /// <summary>Bytes of <c>sun_path</c> usable for a socket path (108 minus the terminating NUL).</summary>
    public const int MaxSocketPathBytes = 107;

    private const string SocketSuffix = ".sock";

    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <summary>Checks a pool name; it must leave room for at least a one-byte volume name in the socket path.</summary>
    public static void ValidatePoolName(string? name, string runtimeDirectory = DefaultRuntimeDirectory)
    {
        ValidateCharacters("pool", name);
        int longest = MaxSocketPathBytes - SocketPathBytes(runtimeDirectory, name!, "v");
        if (longest < 0)
        {
            ThrowHelper.Invalid($"pool name '{name}' is too long: the export socket path {SocketPath(runtimeDirectory, name!, "<volume>")} must fit in {MaxSocketPathBytes} bytes; choose a name of at most {Utf8Length(name!) + longest} bytes");
        }
    }

    /// <summary>Checks a volume name; together with its pool's name it must keep the socket path within 107 bytes.</summary>
    public static void ValidateVolumeName(string poolName, string? name, string runtimeDirectory = DefaultRuntimeDirectory)
    {
        ValidateCharacters("volume", name);
        int excess = SocketPathBytes(runtimeDirectory, poolName, name!) - MaxSocketPathBytes;
        if (excess > 0)
        {
            ThrowHelper.Invalid($"volume name '{name}' is too long: its export socket {SocketPath(runtimeDirectory, poolName, name!)} would be {excess} bytes over the {MaxSocketPathBytes}-byte limit; shorten the volume (or pool) name");
        }
    }

    /// <summary>Checks a snapshot name (the same characters as volume names, at most 200 bytes).</summary>
    public static void ValidateSnapshotName(string? name)
    {
        ValidateCharacters("snapshot", name);
        if (Utf8Length(name!) > 200)
        {
            ThrowHelper.Invalid($"snapshot name is {Utf8Length(name!)} bytes long; use at most 200");
        }
    }

    /// <summary>Decodes a name received as raw bytes; bytes that are not valid UTF-8 are refused.</summary>
    public static string FromUtf8(ReadOnlySpan<byte> bytes, string what = "name")
    {
        try
        {
            return StrictUtf8.GetString(bytes);
        }
        catch (DecoderFallbackException)
        {
            ThrowHelper.Invalid($"{what} is not valid UTF-8; names must be UTF-8 text");
            return null!;
        }
    }

    /// <summary>The export socket path of a volume.</summary>
    public static string SocketPath(string runtimeDirectory, string poolName, string volumeName) =>
        $"{runtimeDirectory.TrimEnd('/')}/{poolName}/{volumeName}{SocketSuffix}";

    private static int SocketPathBytes(string runtimeDirectory, string poolName, string volumeName) =>
        Utf8Length(SocketPath(runtimeDirectory, poolName, volumeName));

    private static int Utf8Length(string s) => StrictUtf8.GetByteCount(s);

    private static void ValidateCharacters(string what, string? name)
    {
        if (string.IsNullOrEmpty(name))
        {
            ThrowHelper.Invalid($"{what} name is empty; give a name such as 'vm1-disk0'");
        }

        if (name[0] == '.' || name[0] == '-')
        {
            ThrowHelper.Invalid($"{what} name '{Printable(name)}' starts with '{name[0]}'; names start with a letter, digit, '_' or '+'");
        }

        for (int i = 0; i < name.Length; i++)
        {
            char c = name[i];
            if (char.IsSurrogate(c))
            {
                // A valid pair is one character outside the BMP; a lone surrogate cannot be encoded as UTF-8.
                if (!char.IsHighSurrogate(c) || i + 1 >= name.Length || !char.IsLowSurrogate(name[i + 1]))
                {
                    ThrowHelper.Invalid($"{what} name is not valid UTF-8 text (it holds a lone surrogate at position {i})");
                }

                if (!IsAllowedCategory(CharUnicodeInfo.GetUnicodeCategory(name, i)))
                {
                    ThrowHelper.Invalid($"{what} name '{Printable(name)}' holds a character that is not a letter or digit at position {i}");
                }

                i++;
                continue;
            }

            if (!IsAllowed(c))
            {
                ThrowHelper.Invalid($"{what} name '{Printable(name)}' holds {Describe(c)} at position {i}; use only letters, digits and '-', '_', '.', '+'");
            }
        }
    }

    private static bool IsAllowed(char c) =>
        c is '-' or '_' or '.' or '+' || IsAllowedCategory(CharUnicodeInfo.GetUnicodeCategory(c));

    private static bool IsAllowedCategory(UnicodeCategory category) => category switch
    {
        UnicodeCategory.UppercaseLetter or UnicodeCategory.LowercaseLetter or UnicodeCategory.TitlecaseLetter
            or UnicodeCategory.ModifierLetter or UnicodeCategory.OtherLetter
            or UnicodeCategory.DecimalDigitNumber or UnicodeCategory.LetterNumber or UnicodeCategory.OtherNumber
            or UnicodeCategory.NonSpacingMark or UnicodeCategory.SpacingCombiningMark => true,
        _ => false,
    };

    private static string Describe(char c) => c switch
    {
        '/' => "'/' (a path separator)",
        ' ' => "a space",
        _ when char.IsControl(c) => $"the control character U+{(int)c:X4}",
        _ when char.IsWhiteSpace(c) => $"the white-space character U+{(int)c:X4}",
        _ => $"'{c}'",
    };

    /// <summary>The name with control characters escaped, so an error message stays on one line.</summary>
    private static string Printable(string name)
    {
        var builder = new StringBuilder(name.Length);
        foreach (char c in name)
        {
            builder.Append(char.IsControl(c) ? $"\\u{(int)c:x4}" : c.ToString());
        }

        return builder.ToString();
    }
}
