using FsCheck.Xunit;
using LibvirtStorage.Vhost.Memory;
using LibvirtStorage.Vhost.Tests.Memory;
using LibvirtStorage.Vhost.Virtqueue;
using Xunit;

namespace LibvirtStorage.Vhost.Tests.Virtqueue;

/// <summary>
/// Random rings and descriptor tables, biased towards the interesting edges (region boundaries, gaps, the top of
/// the address space, indirect tables, read-only memory): the queue never throws, never hangs, yields only buffers
/// inside guest memory, and never writes outside it (the fake's guard canaries stay intact).
/// </summary>
public sealed class VirtqueuePropertyTests
{
    private const ulong IndirectArea = 0x104000;
    private static readonly TimeSpan HangLimit = TimeSpan.FromSeconds(20);

    /// <remarks>
    /// FsCheck supplies the seed (and shrinks it); a seeded <see cref="Random"/> fills the tables, because FsCheck's
    /// own small integers would mostly build one-descriptor chains.
    /// </remarks>
    [Property(MaxTest = 400, QuietOnSuccess = true)]
    public void RandomRingsAreHandledSafely(int seed, byte sizeSeed, bool eventIdx) =>
        WithoutHang(() =>
        {
            var random = new Random(seed);
            bool hostile = random.Next(2) == 0; // otherwise mostly plausible buffers, so long chains get walked too
            using var fake = new FakeGuestMemory((0, 0x10000, false), (0x10000, 0x10000, false), (0x100000, 0x10000, false), (0x200000, 0x1000, true));
            GuestMemory memory = fake.Memory;
            ushort size = (ushort)(1 << (sizeSeed % 9));
            ushort start = (ushort)random.Next(65536);
            var driver = new FakeDriver(memory, size);
            SplitVirtqueue queue = driver.CreateQueue(eventIdx);
            queue.SetIndices(start, start);
            Assert.Equal(QueueError.None, queue.Validate(memory));

            for (int i = 0; i < size; i++)
            {
                FakeDriver.WriteDescriptorAt(memory, driver.Desc.Value, i, Address(random, hostile), Length(random, hostile), Flags(random), Next(random, size));
            }

            for (int i = 0; i < 256; i++)
            {
                FakeDriver.WriteDescriptorAt(memory, IndirectArea, i, Address(random, hostile), Length(random, hostile), Flags(random), Next(random, size));
            }

            for (int i = 0; i < size; i++)
            {
                driver.SetAvailRingEntry(i, random.Next(16) == 0 ? (ushort)random.Next(65536) : (ushort)random.Next(size));
            }

            driver.SetAvailIdx(random.Next(16) == 0 ? (ushort)random.Next(65536) : (ushort)(start + random.Next(size + 1)));
            RunDevice(fake, queue, size);
            Assert.True(fake.GuardsIntact());
        });

    [Property(MaxTest = 300, QuietOnSuccess = true)]
    public void RandomQueueConfigurationsValidateSafely(uint size, ulong desc, ulong avail, ulong used, bool eventIdx, byte bias) =>
        WithoutHang(() =>
        {
            using var fake = FakeGuestMemory.Standard();
            GuestMemory memory = fake.Memory;
            var queue = new SplitVirtqueue();
            uint candidate = (bias & 1) == 0 ? size : 1u << (int)(size % 17);
            bool sized = queue.TrySetSize(candidate);
            Assert.Equal(sized, candidate != 0 && candidate <= 32768 && (candidate & (candidate - 1)) == 0);
            if ((bias & 2) != 0)
            {
                (desc, avail, used) = (Address(new Random((int)desc)) & ~15ul, Address(new Random((int)avail)) & ~1ul, Address(new Random((int)used)) & ~3ul);
            }

            queue.SetAddresses(new GuestAddress(desc), new GuestAddress(avail), new GuestAddress(used));
            queue.EventIdx = eventIdx;
            if (queue.Validate(memory) == QueueError.None)
            {
                Assert.True(fake.Covers(desc, 16ul * queue.Size));
                Assert.True(fake.Covers(avail, 4 + (2ul * queue.Size) + (eventIdx ? 2ul : 0)));
                Assert.True(fake.Covers(used, 4 + (8ul * queue.Size) + (eventIdx ? 2ul : 0), writable: true));
            }

            RunDevice(fake, queue, queue.Size);
            Assert.True(fake.GuardsIntact());
        });

    /// <summary>One worker wake-up against whatever the rings hold, checking every buffer it is given.</summary>
    private static void RunDevice(FakeGuestMemory fake, SplitVirtqueue queue, int size)
    {
        GuestMemory memory = fake.Memory;
        queue.DisableNotification(memory);
        int pops = 0;
        do
        {
            while (queue.TryPopAvail(memory, out DescriptorChain chain) == PopResult.Chain)
            {
                Assert.True(++pops <= size, "popped more chains than the queue holds");
                uint written = 0;
                int buffers = 0;
                while (chain.TryNext(out DescriptorSegment segment))
                {
                    Assert.True(++buffers <= size, "a chain yielded more buffers than the queue size");
                    Assert.True(fake.Covers(segment.Address.Value, segment.Length, segment.Writable));
                    Assert.True(memory.TryGetSegments(segment.Address, segment.Length, segment.Writable, out GuestSegments pieces));
                    foreach (Span<byte> piece in pieces)
                    {
                        Assert.True(fake.SpanInsideRegions(piece));
                        if (segment.Writable)
                        {
                            piece.Fill(0x5a);
                        }
                    }

                    written += segment.Writable ? segment.Length : 0;
                }

                queue.AddUsed(memory, chain.Head, chain.Error == ChainError.None ? written : 0);
            }
        }
        while (queue.Error == QueueError.None && queue.EnableNotification(memory));

        queue.NeedsNotification(memory);
    }

    /// <summary>An address biased towards the ones that matter.</summary>
    private static ulong Address(Random random, bool hostile = true) => (hostile ? random.Next(8) : 6 + random.Next(40)) switch
    {
        0 => (ulong)random.NextInt64() * 2 + (ulong)random.Next(2),
        1 => 0xfff0 + (ulong)random.Next(0x20), // crossing two contiguous regions
        2 => 0x1fff0 + (ulong)random.Next(0x20), // running into the gap
        3 => ulong.MaxValue - (ulong)random.Next(0x40), // wrapping
        4 => IndirectArea + ((ulong)random.Next(0x100) * 16),
        5 => 0x200000 + (ulong)random.Next(0x1010), // read-only region and past it
        6 => 0x100000 + (ulong)random.Next(0x10010),
        _ => 0x100000 + (ulong)random.Next(0xe000),
    };

    private static uint Length(Random random, bool hostile) => (hostile ? random.Next(4) : 2) switch
    {
        0 => (uint)random.NextInt64(1L << 32),
        1 => (uint)random.Next(0x41) * 16, // plausible indirect-table lengths
        _ => (uint)random.Next(0x2000),
    };

    /// <summary>Mostly NEXT (long chains, readable then writable), sometimes an indirect pointer, sometimes anything.</summary>
    private static ushort Flags(Random random) => random.Next(10) switch
    {
        0 => (ushort)random.Next(65536),
        1 => VirtqLayout.DescFlagIndirect,
        2 => (ushort)random.Next(8),
        3 => (ushort)random.Next(4),
        4 => VirtqLayout.DescFlagNext | VirtqLayout.DescFlagWrite,
        _ => VirtqLayout.DescFlagNext,
    };

    private static ushort Next(Random random, ushort size) => random.Next(8) == 0 ? (ushort)random.Next(65536) : (ushort)random.Next(size + 1);

    private static void WithoutHang(Action body)
    {
        Task run = Task.Run(body);
        Assert.True(run.Wait(HangLimit), "the queue did not finish: a hang");
        run.GetAwaiter().GetResult();
    }
}
