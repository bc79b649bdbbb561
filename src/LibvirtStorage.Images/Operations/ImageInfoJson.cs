using System.Text.Json;
using System.Text.Json.Serialization;

namespace LibvirtStorage.Images.Operations;

/// <summary>
/// JSON shape of <c>qemu-img info --output=json</c> (QEMU 7.2): its key names, and its key order, so
/// that our output can be compared with QEMU's as text.
/// </summary>
internal static class ImageInfoJson
{
    public static string Serialize(ImageInfo info) =>
        QemuEmptyArrays(JsonSerializer.Serialize(ToDto(info), ImageInfoJsonContext.Default.InfoDto)) + "\n";

    public static string Serialize(IReadOnlyList<ImageInfo> chain)
    {
        var list = new List<InfoDto>(chain.Count);
        foreach (ImageInfo info in chain)
        {
            list.Add(ToDto(info));
        }

        return QemuEmptyArrays(JsonSerializer.Serialize(list, ImageInfoJsonContext.Default.ListInfoDto)) + "\n";
    }

    /// <summary>
    /// QEMU's pretty printer writes an empty array as "[", a newline and "]" at the key's indentation;
    /// System.Text.Json writes "[]". Only a bitmap's "flags" can be empty here.
    /// </summary>
    private static string QemuEmptyArrays(string json)
    {
        const string Empty = "\"flags\": []";
        int at = json.IndexOf(Empty, StringComparison.Ordinal);
        if (at < 0)
        {
            return json;
        }

        var sb = new System.Text.StringBuilder(json.Length + 64);
        int from = 0;
        while (at >= 0)
        {
            int lineStart = json.LastIndexOf('\n', at) + 1;
            sb.Append(json, from, at - from).Append("\"flags\": [\n").Append(' ', at - lineStart).Append(']');
            from = at + Empty.Length;
            at = json.IndexOf(Empty, from, StringComparison.Ordinal);
        }

        return sb.Append(json, from, json.Length - from).ToString();
    }

    private static InfoDto ToDto(ImageInfo i) => new()
    {
        Snapshots = i.Snapshots.Count == 0 ? null : SnapshotDtos(i.Snapshots),
        BackingFilenameFormat = i.BackingFilenameFormat,
        VirtualSize = i.VirtualSize,
        Filename = i.Filename,
        ClusterSize = i.ClusterSize,
        Format = i.Format,
        ActualSize = i.ActualSize,
        FormatSpecific = i.Qcow2 is null ? null : new FormatSpecificDto
        {
            Data = new Qcow2Dto
            {
                Compat = i.Qcow2.Compat,
                CompressionType = i.Qcow2.CompressionType,
                LazyRefcounts = i.Qcow2.LazyRefcounts,
                Bitmaps = i.Qcow2.Bitmaps is null ? null : BitmapDtos(i.Qcow2.Bitmaps),
                RefcountBits = i.Qcow2.RefcountBits,
                Corrupt = i.Qcow2.Corrupt,
                ExtendedL2 = i.Qcow2.ExtendedL2,
            },
        },
        FullBackingFilename = i.FullBackingFilename,
        BackingFilename = i.BackingFilename,
        DirtyFlag = i.DirtyFlag,
    };

    private static List<BitmapDto> BitmapDtos(IReadOnlyList<BitmapInfo> bitmaps)
    {
        var list = new List<BitmapDto>(bitmaps.Count);
        foreach (BitmapInfo b in bitmaps)
        {
            list.Add(new BitmapDto { Flags = [.. b.Flags], Name = b.Name, Granularity = b.Granularity });
        }

        return list;
    }

    private static List<SnapshotDto> SnapshotDtos(IReadOnlyList<SnapshotInfo> snapshots)
    {
        var list = new List<SnapshotDto>(snapshots.Count);
        foreach (SnapshotInfo s in snapshots)
        {
            list.Add(new SnapshotDto
            {
                Icount = s.Icount,
                VmClockNsec = s.VmClockNsec % 1_000_000_000,
                Name = s.Name,
                DateSec = s.DateSec,
                DateNsec = s.DateNsec,
                VmClockSec = s.VmClockNsec / 1_000_000_000,
                Id = s.Id,
                VmStateSize = s.VmStateSize,
            });
        }

        return list;
    }

    internal sealed class InfoDto
    {
        [JsonPropertyName("snapshots")]
        public List<SnapshotDto>? Snapshots { get; set; }

        [JsonPropertyName("backing-filename-format")]
        public string? BackingFilenameFormat { get; set; }

        [JsonPropertyName("virtual-size")]
        public long VirtualSize { get; set; }

        [JsonPropertyName("filename")]
        public string Filename { get; set; } = string.Empty;

        [JsonPropertyName("cluster-size")]
        public int? ClusterSize { get; set; }

        [JsonPropertyName("format")]
        public string Format { get; set; } = string.Empty;

        [JsonPropertyName("actual-size")]
        public long ActualSize { get; set; }

        [JsonPropertyName("format-specific")]
        public FormatSpecificDto? FormatSpecific { get; set; }

        [JsonPropertyName("full-backing-filename")]
        public string? FullBackingFilename { get; set; }

        [JsonPropertyName("backing-filename")]
        public string? BackingFilename { get; set; }

        [JsonPropertyName("dirty-flag")]
        public bool DirtyFlag { get; set; }
    }

    internal sealed class SnapshotDto
    {
        [JsonPropertyName("icount")]
        public long? Icount { get; set; }

        [JsonPropertyName("vm-clock-nsec")]
        public long VmClockNsec { get; set; }

        [JsonPropertyName("name")]
        public string Name { get; set; } = string.Empty;

        [JsonPropertyName("date-sec")]
        public long DateSec { get; set; }

        [JsonPropertyName("date-nsec")]
        public int DateNsec { get; set; }

        [JsonPropertyName("vm-clock-sec")]
        public long VmClockSec { get; set; }

        [JsonPropertyName("id")]
        public string Id { get; set; } = string.Empty;

        [JsonPropertyName("vm-state-size")]
        public long VmStateSize { get; set; }
    }

    internal sealed class BitmapDto
    {
        [JsonPropertyName("flags")]
        public List<string> Flags { get; set; } = [];

        [JsonPropertyName("name")]
        public string Name { get; set; } = string.Empty;

        [JsonPropertyName("granularity")]
        public long Granularity { get; set; }
    }

    internal sealed class FormatSpecificDto
    {
        [JsonPropertyName("type")]
        public string Type { get; set; } = "qcow2";

        [JsonPropertyName("data")]
        public Qcow2Dto Data { get; set; } = new();
    }

    internal sealed class Qcow2Dto
    {
        [JsonPropertyName("compat")]
        public string Compat { get; set; } = string.Empty;

        [JsonPropertyName("compression-type")]
        public string CompressionType { get; set; } = string.Empty;

        [JsonPropertyName("lazy-refcounts")]
        public bool? LazyRefcounts { get; set; }

        [JsonPropertyName("bitmaps")]
        public List<BitmapDto>? Bitmaps { get; set; }

        [JsonPropertyName("refcount-bits")]
        public int RefcountBits { get; set; }

        [JsonPropertyName("corrupt")]
        public bool? Corrupt { get; set; }

        [JsonPropertyName("extended-l2")]
        public bool? ExtendedL2 { get; set; }
    }
}

/// <summary>Source-generated serializer for <see cref="ImageInfoJson"/> (AOT and trimming safe).</summary>
[JsonSourceGenerationOptions(WriteIndented = true, IndentSize = 4, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(ImageInfoJson.InfoDto))]
[JsonSerializable(typeof(List<ImageInfoJson.InfoDto>), TypeInfoPropertyName = "ListInfoDto")]
internal sealed partial class ImageInfoJsonContext : JsonSerializerContext
{
}
