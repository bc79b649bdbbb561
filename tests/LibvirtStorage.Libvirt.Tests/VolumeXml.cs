using System.Globalization;
using System.Text.RegularExpressions;
using System.Xml.Linq;

namespace LibvirtStorage.Libvirt.Tests;

/// <summary>What <c>virsh vol-dumpxml</c> and <c>vol-info --bytes</c> say about a volume.</summary>
internal sealed record VolumeXml(string Name, long Capacity, long Allocation, string? Path, string? Format, IReadOnlyList<(string Path, string? Format)> BackingChain)
{
    public static VolumeXml Parse(string xml)
    {
        XElement v = XDocument.Parse(xml).Root!;
        var chain = new List<(string, string?)>();
        for (XElement? b = v.Element("backingStore"); b is not null && b.Element("path") is { } p; b = b.Element("backingStore"))
            chain.Add((p.Value, b.Element("format")?.Attribute("type")?.Value));
        return new VolumeXml(
            v.Element("name")!.Value,
            Bytes(v.Element("capacity")!),
            Bytes(v.Element("allocation")!),
            v.Element("target")?.Element("path")?.Value,
            v.Element("target")?.Element("format")?.Attribute("type")?.Value,
            chain);
    }

    /// <summary>The capacity and allocation lines of <c>vol-info --bytes</c>.</summary>
    public static (long Capacity, long Allocation) ParseInfo(string info) =>
        (Field(info, "Capacity"), Field(info, "Allocation"));

    private static long Field(string info, string name) =>
        long.Parse(Regex.Match(info, name + @":\s+(\d+) bytes").Groups[1].Value, CultureInfo.InvariantCulture);

    private static long Bytes(XElement e)
    {
        string unit = e.Attribute("unit")?.Value ?? "bytes";
        long n = long.Parse(e.Value, CultureInfo.InvariantCulture);
        return unit is "bytes" or "B" ? n : throw new FormatException($"unexpected unit {unit}");
    }
}
