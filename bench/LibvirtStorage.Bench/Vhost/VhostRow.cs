using System.Globalization;

namespace LibvirtStorage.Bench.Vhost;

/// <summary>One row of the vhost table: ours, QSD and the host fio ceiling for one pattern and image.</summary>
internal sealed record VhostRow(string Name, Unit Unit, VhostMeasurement? Ours, VhostMeasurement? Qsd, double? Fio, string Load1, string? Note)
{
    public double? OursRate => Ours?.Rate(Unit);

    public double? QsdRate => Qsd?.Rate(Unit);

    public double? Ratio => OursRate is double o && QsdRate is double q && q > 0 ? o / q : null;

    public double? OfCeiling => OursRate is double o && Fio is double f && f > 0 ? o / f : null;

    public static string Format(double? value, Unit unit) => value is double v ? Report.Figure(v, unit) : "-";

    public static string Format(double? ratio) => ratio is double r ? r.ToString("0.00", CultureInfo.InvariantCulture) : "-";
}
