using System.Globalization;

namespace LibvirtStorage.Cli.Service;

/// <summary>virsh's scaled integers: "10G", "512M", "1T", "4096"; k/M/G/T/P/E and KiB.. are powers of 1024, KB.. of 1000.</summary>
internal static class VirshSizes
{
    /// <summary>Parses a positive size in bytes; 0, negative numbers, fractions and junk are usage errors.</summary>
    public static ulong Parse(string text, string what = "size")
    {
        string t = text.Trim();
        int digits = 0;
        while (digits < t.Length && char.IsAsciiDigit(t[digits]))
        {
            digits++;
        }

        if (digits == 0)
        {
            throw new CliUsageException($"invalid {what} '{text}': use a whole number of bytes with an optional unit (512M, 10G, 1T)");
        }

        if (!ulong.TryParse(t.AsSpan(0, digits), NumberStyles.None, CultureInfo.InvariantCulture, out ulong number))
        {
            throw new CliUsageException($"{what} '{text}' is too large");
        }

        ulong scale = Scale(t[digits..]) ?? throw new CliUsageException(
            $"invalid unit in {what} '{text}': use b, k, M, G, T, P, E (powers of 1024) or KB, MB, GB, TB (powers of 1000)");
        if (number == 0)
        {
            throw new CliUsageException($"{what} must be greater than 0");
        }

        if (number > ulong.MaxValue / scale)
        {
            throw new CliUsageException($"{what} '{text}' is too large");
        }

        return number * scale;
    }

    private static ulong? Scale(string unit)
    {
        if (unit.Length == 0 || unit is "b" or "B" || unit.Equals("bytes", StringComparison.OrdinalIgnoreCase))
        {
            return 1;
        }

        int power = char.ToUpperInvariant(unit[0]) switch
        {
            'K' => 1,
            'M' => 2,
            'G' => 3,
            'T' => 4,
            'P' => 5,
            'E' => 6,
            _ => 0,
        };
        if (power == 0)
        {
            return null;
        }

        string rest = unit[1..];
        ulong radix = rest switch
        {
            "" or "iB" or "ib" => 1024,
            "B" or "b" => 1000,
            _ => 0,
        };
        if (radix == 0)
        {
            return null;
        }

        ulong scale = 1;
        for (int i = 0; i < power; i++)
        {
            scale *= radix;
        }

        return scale;
    }

    /// <summary>virsh's human sizes: "512.00 B", "10.00 GiB".</summary>
    public static string Format(ulong bytes)
    {
        string[] units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
        double value = bytes;
        int unit = 0;
        while (value >= 1024 && unit < units.Length - 1)
        {
            value /= 1024;
            unit++;
        }

        return string.Create(CultureInfo.InvariantCulture, $"{value:0.00} {units[unit]}");
    }
}
