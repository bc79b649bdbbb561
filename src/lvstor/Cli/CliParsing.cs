using System.Globalization;
using LibvirtStorage.Images;

namespace LibvirtStorage.Cli;

/// <summary>qemu-img's value syntax: sizes with binary suffixes, on/off switches, -o key=value lists.</summary>
internal static class CliParsing
{
    /// <summary>Parses "1G", "64k", "512", "1.5M" (suffixes B K M G T P E, powers of 1024; no suffix is bytes).</summary>
    public static long ParseSize(string text)
    {
        string t = text.Trim();
        if (t.Length == 0)
        {
            throw new CliUsageException("empty size");
        }

        int shift = char.ToUpperInvariant(t[^1]) switch
        {
            'B' => 0,
            'K' => 10,
            'M' => 20,
            'G' => 30,
            'T' => 40,
            'P' => 50,
            'E' => 60,
            _ => -1,
        };
        string number = shift < 0 ? t : t[..^1];
        if (!double.TryParse(number, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out double value) || value < 0)
        {
            throw new CliUsageException($"invalid size '{text}': use a number with an optional suffix (k, M, G, T)");
        }

        double bytes = value * Math.Pow(2, Math.Max(shift, 0));
        if (bytes > long.MaxValue)
        {
            throw new CliUsageException($"size '{text}' is too large");
        }

        return (long)bytes;
    }

    public static ImageFormat? ParseFormat(string? name)
    {
        if (name is null)
        {
            return null;
        }

        return ImageFormatNames.Parse(name) ?? throw new CliUsageException($"unknown format '{name}' (use raw or qcow2)");
    }

    /// <summary>Applies qemu-img create's -o options (each may hold a comma-separated list) to <paramref name="options"/>.</summary>
    public static ImageCreateOptions ApplyCreateOptions(ImageCreateOptions options, IEnumerable<string>? lists)
    {
        if (lists is null)
        {
            return options;
        }

        foreach (string list in lists)
        {
            foreach (string item in list.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            {
                int eq = item.IndexOf('=', StringComparison.Ordinal);
                string key = eq < 0 ? item : item[..eq];
                string value = eq < 0 ? "on" : item[(eq + 1)..];
                options = ApplyOne(options, key, value);
            }
        }

        return options;
    }

    private static ImageCreateOptions ApplyOne(ImageCreateOptions o, string key, string value) => key switch
    {
        "size" => o with { Size = ParseSize(value) },
        "cluster_size" => o with { ClusterSize = checked((int)ParseSize(value)) },
        "compat" => o with { Version = value is "0.10" or "v2" ? 2 : value is "1.1" or "v3" ? 3 : throw Bad(key, value, "0.10 or 1.1") },
        "preallocation" => o with { Preallocation = value switch
        {
            "off" => Preallocation.Off,
            "metadata" => Preallocation.Metadata,
            "falloc" => Preallocation.Falloc,
            "full" => Preallocation.Full,
            _ => throw Bad(key, value, "off, metadata, falloc or full"),
        } },
        "extended_l2" => o with { ExtendedL2 = ParseSwitch(key, value) },
        "lazy_refcounts" => o with { LazyRefcounts = ParseSwitch(key, value) },
        "compression_type" => o with { CompressionType = value switch
        {
            "zlib" => CompressionType.Zlib,
            "zstd" => CompressionType.Zstd,
            _ => throw Bad(key, value, "zlib or zstd"),
        } },
        "refcount_bits" => o with { RefcountBits = int.TryParse(value, CultureInfo.InvariantCulture, out int bits) ? bits : throw Bad(key, value, "1, 2, 4, 8, 16, 32 or 64") },
        "backing_file" => o with { BackingFile = value },
        "backing_fmt" => o with { BackingFormat = ParseFormat(value) },
        _ => throw new CliUsageException($"invalid option '{key}' (known: size, cluster_size, compat, preallocation, extended_l2, lazy_refcounts, compression_type, refcount_bits, backing_file, backing_fmt)"),
    };

    private static bool ParseSwitch(string key, string value) => value switch
    {
        "on" or "true" or "yes" => true,
        "off" or "false" or "no" => false,
        _ => throw Bad(key, value, "on or off"),
    };

    private static CliUsageException Bad(string key, string value, string expected) =>
        new($"invalid value '{value}' for option '{key}': expected {expected}");
}
