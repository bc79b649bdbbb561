using System.Globalization;
using System.Text;

namespace LibvirtStorage.Images.Operations;

/// <summary>The human text of <c>qemu-img info</c> (QEMU 7.2 bdrv_image_info_dump).</summary>
internal static class ImageInfoText
{
    public static string Format(ImageInfo i)
    {
        var sb = new StringBuilder();
        sb.Append("image: ").Append(i.Filename).Append('\n');
        sb.Append("file format: ").Append(i.Format).Append('\n');
        sb.Append(CultureInfo.InvariantCulture, $"virtual size: {SizeToString(i.VirtualSize)} ({i.VirtualSize} bytes)\n");
        sb.Append("disk size: ").Append(SizeToString(i.ActualSize)).Append('\n');
        if (i.ClusterSize is int cluster)
        {
            sb.Append(CultureInfo.InvariantCulture, $"cluster_size: {cluster}\n");
        }

        if (i.DirtyFlag)
        {
            sb.Append("cleanly shut down: no\n");
        }

        if (i.BackingFilename is string backing)
        {
            sb.Append("backing file: ").Append(backing);
            if (i.FullBackingFilename is string full && full != backing)
            {
                sb.Append(" (actual path: ").Append(full).Append(')');
            }

            sb.Append('\n');
            if (i.BackingFilenameFormat is string fmt)
            {
                sb.Append("backing file format: ").Append(fmt).Append('\n');
            }
        }

        if (i.Snapshots.Count > 0)
        {
            AppendSnapshots(sb, i.Snapshots);
        }

        if (i.Qcow2 is Qcow2InfoData q)
        {
            sb.Append("Format specific information:\n");
            sb.Append("    compat: ").Append(q.Compat).Append('\n');
            sb.Append("    compression type: ").Append(q.CompressionType).Append('\n');
            if (q.LazyRefcounts is bool lazy)
            {
                sb.Append("    lazy refcounts: ").Append(lazy ? "true" : "false").Append('\n');
            }

            if (q.Bitmaps is { } bitmaps)
            {
                AppendBitmaps(sb, bitmaps);
            }

            sb.Append(CultureInfo.InvariantCulture, $"    refcount bits: {q.RefcountBits}\n");
            if (q.Corrupt is bool corrupt)
            {
                sb.Append("    corrupt: ").Append(corrupt ? "true" : "false").Append('\n');
            }

            if (q.ExtendedL2 is bool ext)
            {
                sb.Append("    extended l2: ").Append(ext ? "true" : "false").Append('\n');
            }
        }

        return sb.ToString();
    }

    /// <summary>QEMU's generic QAPI dump of the bitmap list, as under "Format specific information".</summary>
    private static void AppendBitmaps(StringBuilder sb, IReadOnlyList<BitmapInfo> bitmaps)
    {
        sb.Append("    bitmaps:\n");
        for (int i = 0; i < bitmaps.Count; i++)
        {
            BitmapInfo b = bitmaps[i];
            sb.Append(CultureInfo.InvariantCulture, $"        [{i}]:\n            flags:\n");
            for (int f = 0; f < b.Flags.Count; f++)
            {
                sb.Append(CultureInfo.InvariantCulture, $"                [{f}]: {b.Flags[f]}\n");
            }

            sb.Append(CultureInfo.InvariantCulture, $"            name: {b.Name}\n            granularity: {b.Granularity}\n");
        }
    }

    /// <summary>QEMU's bdrv_snapshot_dump: fixed-width columns, local time, clock as h:mm:ss.mmm.</summary>
    private static void AppendSnapshots(StringBuilder sb, IReadOnlyList<SnapshotInfo> snapshots)
    {
        sb.Append("Snapshot list:\n");
        sb.Append(CultureInfo.InvariantCulture, $"{"ID",-10}{"TAG",-17}{"VM SIZE",8}{"DATE",20}{"VM CLOCK",13}{"ICOUNT",11}\n");
        foreach (SnapshotInfo s in snapshots)
        {
            string date = DateTimeOffset.FromUnixTimeSeconds(s.DateSec).ToLocalTime().ToString("yyyy-MM-dd HH:mm:ss", CultureInfo.InvariantCulture);
            long secs = s.VmClockNsec / 1_000_000_000;
            string clock = string.Create(CultureInfo.InvariantCulture,
                $"{secs / 3600:00}:{secs / 60 % 60:00}:{secs % 60:00}.{s.VmClockNsec / 1_000_000 % 1000:000}");
            string icount = s.Icount is long n ? n.ToString(CultureInfo.InvariantCulture) : string.Empty;
            sb.Append(CultureInfo.InvariantCulture, $"{s.Id,-9} {s.Name,-16} {SizeToString(s.VmStateSize),8}{date,20}{clock,13}{icount,11}\n");
        }
    }

    /// <summary>
    /// QEMU's size_to_str: the largest binary unit whose value stays below 1000, printed with three
    /// significant digits ("324 KiB", "0.977 MiB", "1 GiB").
    /// </summary>
    public static string SizeToString(long value)
    {
        string[] suffixes = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
        int unit = 0;
        double scaled = value / (1000.0 / 1024.0);
        while (unit < suffixes.Length - 1 && scaled >= 1024)
        {
            scaled /= 1024;
            unit++;
        }

        double shown = value / Math.Pow(1024, unit);
        return shown.ToString("G3", CultureInfo.InvariantCulture) + " " + suffixes[unit] + "B";
    }
}
