namespace LibvirtStorage.Bench;

/// <summary>What a row measures, which decides how its ratio is formed.</summary>
internal enum Unit
{
    /// <summary>Requests per second; ratio = ours / QEMU.</summary>
    Iops,
    /// <summary>MiB per second; ratio = ours / QEMU.</summary>
    MibPerSecond,
    /// <summary>Seconds; ratio = QEMU / ours (so higher is still better).</summary>
    Seconds,
}

/// <summary>One line of the result table. A null figure means "not measured" and <see cref="Note"/> says why.</summary>
internal sealed record ResultRow(string Section, string Name, Unit Unit, double? Ours, double? Qemu, string? Note = null)
{
    /// <summary>Higher is better: ours/QEMU for rates, QEMU/ours for times.</summary>
    public double? Ratio => (Ours, Qemu) switch
    {
        (double o, double q) when o > 0 && q > 0 => Unit == Unit.Seconds ? q / o : o / q,
        _ => null,
    };

    public static string UnitName(Unit unit) => unit switch
    {
        Unit.Iops => "IOPS",
        Unit.MibPerSecond => "MiB/s",
        _ => "s",
    };

    /// <summary>A rate row from a request count and the time each side took.</summary>
    public static ResultRow FromRun(string section, string name, IoPattern pattern, TimeSpan ours, TimeSpan? qemu)
    {
        Unit unit = pattern.RequestSize < 65536 ? Unit.Iops : Unit.MibPerSecond;
        return new ResultRow(section, name, unit, Rate(unit, pattern, ours), qemu is { } q ? Rate(unit, pattern, q) : null);
    }

    private static double Rate(Unit unit, IoPattern pattern, TimeSpan time)
    {
        double seconds = Math.Max(time.TotalSeconds, 1e-6);
        return unit == Unit.Iops
            ? pattern.Count / seconds
            : (double)pattern.Count * pattern.RequestSize / (1 << 20) / seconds;
    }
}
