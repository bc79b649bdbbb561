using LibvirtStorage.Vhost.Memory;
using LibvirtStorage.Vhost.Protocol;
using LibvirtStorage.Vhost.Virtqueue;

namespace LibvirtStorage.Vhost.Tests.Backend;

/// <summary>
/// A test device: fills every device-writable buffer of a chain with <see cref="Pattern"/> and reports the bytes
/// written. <see cref="Gate"/>, when set, holds each chain until it is released (a request in flight).
/// </summary>
internal sealed class PatternDevice : IVhostUserDevice
{
    public const ulong DeviceFeature = 1UL << 1;

    private int _chains;

    public int NumQueues { get; init; } = 2;

    public int MaxQueueSize { get; init; } = 256;

    public ulong Features => DeviceFeature;

    public VhostUserProtocolFeatures ProtocolFeatures => VhostUserProtocolFeatures.Config;

    public byte Pattern { get; set; } = 0xA5;

    public ManualResetEventSlim? Gate { get; set; }

    public ManualResetEventSlim Entered { get; } = new();

    /// <summary>When set, a chain held by <see cref="Gate"/> fails once released: the back-end "dies" mid-request.</summary>
    public bool DieWhenReleased { get; set; }

    public int Chains => Volatile.Read(ref _chains);

    public ulong AckedFeatures { get; private set; }

    public int Resets { get; private set; }

    public byte[] Config { get; } = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];

    public uint ProcessChain(int queueIndex, ref DescriptorChain chain, GuestMemory memory)
    {
        Entered.Set();
        Gate?.Wait(TimeSpan.FromSeconds(10));
        if (DieWhenReleased)
            throw new InvalidOperationException("back-end killed with this request in flight");
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
