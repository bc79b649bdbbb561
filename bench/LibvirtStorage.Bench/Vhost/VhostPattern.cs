using LibvirtStorage.Vhost.Frontend;

namespace LibvirtStorage.Bench.Vhost;

/// <summary>One workload: request type, size, random or sequential, queue depth per queue, number of queues.</summary>
internal sealed record VhostPattern(string Kind, BlkRequestType Type, int RequestSize, bool Random, int Depth, int Queues)
{
    /// <summary>The patterns of the issue: 4K random at QD1 and QD32, 1M sequential at QD8, each on 1 and 2 queues.</summary>
    public static IReadOnlyList<VhostPattern> Standard()
    {
        var all = new List<VhostPattern>();
        foreach (int queues in new[] { 1, 2 })
        {
            all.Add(new("randread", BlkRequestType.Read, 4096, true, 1, queues));
            all.Add(new("randread", BlkRequestType.Read, 4096, true, 32, queues));
            all.Add(new("randwrite", BlkRequestType.Write, 4096, true, 1, queues));
            all.Add(new("randwrite", BlkRequestType.Write, 4096, true, 32, queues));
            all.Add(new("seqread", BlkRequestType.Read, 1 << 20, false, 8, queues));
            all.Add(new("seqwrite", BlkRequestType.Write, 1 << 20, false, 8, queues));
        }

        return all;
    }

    public bool IsWrite => Type == BlkRequestType.Write;

    public Unit Unit => RequestSize < (1 << 20) ? Unit.Iops : Unit.MibPerSecond;

    public string Name(string image) => $"{Kind} {(RequestSize >= 1 << 20 ? $"{RequestSize >> 20}M" : $"{RequestSize >> 10}K")} QD{Depth} {Queues}q {image}";

    /// <summary>fio's spelling of the same workload.</summary>
    public string FioRw => (Kind, Random) switch
    {
        ("randread", _) => "randread",
        ("randwrite", _) => "randwrite",
        ("seqread", _) => "read",
        _ => "write",
    };
}
