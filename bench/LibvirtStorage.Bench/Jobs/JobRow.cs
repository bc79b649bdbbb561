using System.Globalization;

namespace LibvirtStorage.Bench.Jobs;

/// <summary>
/// One job row: the median seconds of each side (null: not measured, <see cref="Note"/> says why) and the time
/// ratios ours ÷ peer (lower is better; the goal is at most 1.0).
/// </summary>
internal sealed record JobRow(string Name, double? Ours, double? Qsd, double? QemuImg, string Note)
{
    public double? OursPerQsd => Ratio(Ours, Qsd);

    public double? OursPerQemuImg => Ratio(Ours, QemuImg);

    public static string Seconds(double? value) =>
        value is { } v ? v.ToString("0.000", CultureInfo.InvariantCulture) + " s" : "n/a";

    public static string RatioText(double? value) =>
        value is { } v ? v.ToString("0.00", CultureInfo.InvariantCulture) + "x" : "-";

    private static double? Ratio(double? ours, double? peer) =>
        ours is > 0 && peer is > 0 ? ours / peer : null;
}
