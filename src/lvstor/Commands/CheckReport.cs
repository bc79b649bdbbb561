using System.Globalization;
using System.Text;
using System.Text.Json;
using LibvirtStorage.Images;

namespace LibvirtStorage.Cli.Commands;

/// <summary>Renders an <see cref="ImageCheckResult"/> as <c>qemu-img check</c> does (QEMU 7.2), as text or JSON.</summary>
internal static class CheckReport
{
    public static string ToHuman(ImageCheckResult r)
    {
        var sb = new StringBuilder();
        if (r.LeaksFixed > 0 || r.CorruptionsFixed > 0)
        {
            sb.Append(CultureInfo.InvariantCulture,
                $"The following inconsistencies were found and repaired:\n\n    {r.LeaksFixed} leaked clusters\n    {r.CorruptionsFixed} corruptions\n\n");
            sb.Append("Double checking the fixed image now...\n");
        }

        if (r.Corruptions == 0 && r.Leaks == 0)
        {
            sb.Append("No errors were found on the image.\n");
        }
        else
        {
            if (r.Corruptions > 0)
            {
                sb.Append(CultureInfo.InvariantCulture,
                    $"\n{r.Corruptions} errors were found on the image.\nData may be corrupted, or further writes to the image may corrupt it.\n");
            }

            if (r.Leaks > 0)
            {
                sb.Append(CultureInfo.InvariantCulture,
                    $"\n{r.Leaks} leaked clusters were found on the image.\nThis means waste of disk space, but no harm to data.\n");
            }
        }

        if (r.TotalClusters != 0 && r.AllocatedClusters != 0)
        {
            double total = r.TotalClusters;
            sb.Append(CultureInfo.InvariantCulture,
                $"{r.AllocatedClusters}/{r.TotalClusters} = {r.AllocatedClusters * 100.0 / total:F2}% allocated, " +
                $"{r.FragmentedClusters * 100.0 / total:F2}% fragmented, {r.CompressedClusters * 100.0 / total:F2}% compressed clusters\n");
        }

        if (r.ImageEndOffset != 0)
        {
            sb.Append(CultureInfo.InvariantCulture, $"Image end offset: {r.ImageEndOffset}\n");
        }

        return sb.ToString();
    }

    /// <summary>qemu-img check --output=json: counters that are zero are left out, as QEMU does (check-errors always shown).</summary>
    public static string ToJson(ImageCheckResult r, string filename)
    {
        using var stream = new MemoryStream();
        using (var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true, IndentSize = 4 }))
        {
            w.WriteStartObject();
            WriteIfSet(w, "image-end-offset", r.ImageEndOffset);
            WriteIfSet(w, "total-clusters", r.TotalClusters);
            w.WriteNumber("check-errors", 0);
            WriteIfSet(w, "leaks", r.Leaks);
            WriteIfSet(w, "leaks-fixed", r.LeaksFixed);
            WriteIfSet(w, "corruptions", r.Corruptions);
            WriteIfSet(w, "corruptions-fixed", r.CorruptionsFixed);
            WriteIfSet(w, "allocated-clusters", r.AllocatedClusters);
            w.WriteString("filename", filename);
            w.WriteString("format", "qcow2");
            WriteIfSet(w, "fragmented-clusters", r.FragmentedClusters);
            WriteIfSet(w, "compressed-clusters", r.CompressedClusters);
            w.WriteEndObject();
        }

        return Encoding.UTF8.GetString(stream.ToArray()) + "\n";
    }

    private static void WriteIfSet(Utf8JsonWriter w, string name, long value)
    {
        if (value != 0)
        {
            w.WriteNumber(name, value);
        }
    }
}
