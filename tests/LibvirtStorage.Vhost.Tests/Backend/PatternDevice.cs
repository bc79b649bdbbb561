using LibvirtStorage.Vhost.Memory;
using LibvirtStorage.Vhost.Protocol;
using LibvirtStorage.Vhost.Virtqueue;

namespace LibvirtStorage.Vhost.Tests.Backend;

/// <summary>
/// A test device: fills every device-writable buffer of a chain with <see cref="Pattern"/> and reports the bytes
/// written. <see cref="Gate"/>, when set, holds each chain until it is released (a request in flight).
/// <see cref="Rendezvous"/>, when above 1, holds each chain until that many are inside at once (or 10 s pass:
/// then <see cref="RendezvousMissed"/> is set, so a serial queue fails the test instead of hanging it).
/// </summary>
internal sealed class PatternDevice : IVhostUserDevice
{
    public const ulong DeviceFeature = 1UL << 1;

    private int _chains;
    private int _inside;
    private int _maxInside;
    private int _arrived;
    private int _slotOverlaps;
    private readonly int[] _slotBusy = new int[64];

    public int NumQueues { get; init; } = 2;

    public int MaxQueueSize { get; init; } = 256;

    public ulong Features => DeviceFeature;

    public VhostUserProtocolFeatures ProtocolFeatures => VhostUserProtocolFeatures.Config;

    public byte Pattern { get; set; } = 0xA5;

    public ManualResetEventSlim? Gate { get; set; }

    public ManualResetEventSlim Entered { get; } = new();

    /// <summary>Chains of one queue served at once (the framework's I/O threads); 1 = one after another.</summary>
    public int ParallelRequestsPerQueue { get; init; } = 1;

    public int Rendezvous { get; init; }

    public bool RendezvousMissed { get; private set; }

    /// <summary>Most chains seen inside <see cref="ProcessChain"/> at the same time.</summary>
    public int MaxInside => Volatile.Read(ref _maxInside);

    /// <summary>Chains inside <see cref="ProcessChain"/> now.</summary>
    public int Inside => Volatile.Read(ref _inside);

    /// <summary>Times two calls with the same slot overlapped (must stay 0: per-slot state relies on it).</summary>
    public int SlotOverlaps => Volatile.Read(ref _slotOverlaps);

    /// <summary>When set, the chain with this head throws (a device bug) instead of completing.</summary>
    public ushort? FailHead { get; set; }

    /// <summary>When set, a chain held by <see cref="Gate"/> fails once released: the back-end "dies" mid-request.</summary>
    public bool DieWhenReleased { get; set; }

    public int Chains => Volatile.Read(ref _chains);

    public ulong AckedFeatures { get; private set; }

    public int Resets { get; private set; }

    public byte[] Config { get; } = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];

    public uint ProcessChain(int queueIndex, int slot, ref DescriptorChain chain, GuestMemory memory)
    {
        if (Interlocked.Exchange(ref _slotBusy[(queueIndex * ParallelRequestsPerQueue) + slot], 1) != 0)
            Interlocked.Increment(ref _slotOverlaps);
        int inside = Interlocked.Increment(ref _inside);
        int max;
        while (inside > (max = Volatile.Read(ref _maxInside)) && Interlocked.CompareExchange(ref _maxInside, inside, max) != max)
        {
        }

        try
        {
            return Complete(slot, ref chain, memory);
        }
        finally
        {
            Interlocked.Decrement(ref _inside);
            Volatile.Write(ref _slotBusy[(queueIndex * ParallelRequestsPerQueue) + slot], 0);
        }
    }

    private uint Complete(int slot, ref DescriptorChain chain, GuestMemory memory)
    {
        _ = slot;
        Entered.Set();
        if (Rendezvous > 1)
        {
            Interlocked.Increment(ref _arrived);
            if (!SpinWait.SpinUntil(() => Volatile.Read(ref _arrived) >= Rendezvous, TimeSpan.FromSeconds(10)))
                RendezvousMissed = true;
        }

        Gate?.Wait(TimeSpan.FromSeconds(10));
        if (DieWhenReleased)
            throw new InvalidOperationException("back-end killed with this request in flight");
        if (FailHead == chain.Head)
            throw new InvalidOperationException($"device bug on head {chain.Head}");
        uint written = 0;
        while (chain.TryNext(out DescriptorSegment segment))
        {
            if (segment.Writable && memory.TryGetSegments(segment.Address, segment.Length, writable: true, out GuestSegments pieces))
            {
                foreach (Span<byte> piece in pieces)
                {
                    piece.Fill(Pattern);
                    written += (uint)piece.Length;
                }
            }
        }

        Interlocked.Increment(ref _chains);
        return written;
    }

    public void AckFeatures(ulong features) => AckedFeatures = features;

    public bool GetConfig(uint offset, Span<byte> destination)
    {
        if (offset > Config.Length || destination.Length > Config.Length - offset)
            return false;
        Config.AsSpan((int)offset, destination.Length).CopyTo(destination);
        return true;
    }

    public void Reset() => Resets++;
}
