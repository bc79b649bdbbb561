using System.Buffers.Binary;
using FsCheck.Xunit;
using LibvirtStorage.Vhost.Blk;
using LibvirtStorage.Vhost.Virtqueue;
using Xunit;

namespace LibvirtStorage.Vhost.Tests.Blk;

/// <summary>
/// Random request layouts, biased towards the edges (headers split anywhere, buffers crossing regions, running into
/// gaps, read-only memory, wrapping addresses, sectors near the capacity and near 2^64, every request type and
/// random discard segments): parsing and execution never throw, the device is only called inside its capacity with
/// spans inside guest memory, and the only guest bytes that change are in the chain's device-writable buffers
/// (guard canaries intact everywhere else).
/// </summary>
public sealed class VirtioBlkPropertyTests
{
    private static readonly uint[] Types = [0, 1, 4, 8, 11, 13];
    private static readonly (ulong Start, int Length)[] Watched = [(0x9000, 0x7000), (0x10000, 0x10000), (0x100000, 0x10000), (BlkHarness.ReadOnlyRegion, 0x1000)];

    [Property(MaxTest = 400, QuietOnSuccess = true)]
    public void RandomLayoutsAreHandledSafely(int seed) => RunOne(seed);

    /// <summary>The generator is not vacuous: it reaches every outcome, including successful I/O of each kind.</summary>
    [Fact]
    public void GeneratorReachesEveryOutcome()
    {
        var outcomes = new Dictionary<(VirtioBlkParseError, VirtioBlkStatus?, uint), int>();
        for (int seed = 0; seed < 1500; seed++)
        {
            var key = RunOne(seed);
            outcomes[key] = outcomes.GetValueOrDefault(key) + 1;
        }

        Assert.Contains(outcomes.Keys, k => k.Item1 == VirtioBlkParseError.BadChain);
        Assert.Contains(outcomes.Keys, k => k.Item1 == VirtioBlkParseError.HeaderTooShort);
        Assert.Contains(outcomes.Keys, k => k.Item1 == VirtioBlkParseError.NoStatusByte);
        Assert.Contains(outcomes.Keys, k => k.Item1 == VirtioBlkParseError.WrongDirection);
        Assert.Contains(outcomes.Keys, k => k.Item1 == VirtioBlkParseError.TooManySegments);
        Assert.Contains(outcomes.Keys, k => k.Item2 == VirtioBlkStatus.Unsupported);
        foreach (uint type in Types)
        {
            Assert.True(outcomes.Keys.Any(k => k.Item2 == VirtioBlkStatus.Ok && k.Item3 == type), $"no successful type {type}: {string.Join(", ", outcomes)}");
            if (type is not (4 or 8)) // FLUSH and GET_ID cannot fail on a healthy device
            {
                Assert.Contains(outcomes.Keys, k => k.Item2 == VirtioBlkStatus.IoError && k.Item3 == type);
            }
        }
    }

    private static (VirtioBlkParseError, VirtioBlkStatus?, uint) RunOne(int seed)
    {
        var random = new Random(seed);
        var settings = new VirtioBlkSettings { SegMax = (uint)random.Next(1, 9), MaxDiscardSegments = 4, MaxWriteZeroesSegments = 4, MaxDiscardSectors = 64 };
        var device = new FakeBlockDevice(capacity: 64 * 1024, blockSize: random.Next(3) == 0 ? 4096 : 512, readOnly: random.Next(5) == 0);
        using var h = new BlkHarness(device, settings);
        FillGuest(h, random);

        var buffers = Layout(h, random);
        byte[][] before = Snapshot(h);
        h.Driver.AddChain(buffers.ToArray());
        ref VirtioBlkRequest request = ref h.PopAndParse();
        VirtioBlkCompletion completion = h.Handler.Execute(in request, h.Memory, h.Device);

        Assert.Equal(0, device.OutOfRangeCalls);
        Assert.Equal(0, device.SpansOutsideGuest);
        Assert.Null(completion.DeviceError);
        ulong writable = 0;
        foreach (var b in buffers)
        {
            writable += b.Write ? b.Length : 0;
        }

        Assert.True(completion.Written <= writable);
        if (request.Error != VirtioBlkParseError.None)
        {
            Assert.Equal(0u, completion.Written);
            Assert.Null(completion.Status);
        }
        else
        {
            Assert.NotNull(completion.Status);
            Assert.Equal((byte)completion.Status!.Value, h.Fake.Bytes(request.StatusAddress.Value, 1)[0]);
        }

        AssertOnlyWritableBuffersChanged(h, before, buffers);
        return (request.Error, completion.Status, request.Type);
    }

    private static List<(ulong Address, uint Length, bool Write)> Layout(BlkHarness h, Random random)
    {
        var buffers = new List<(ulong, uint, bool)>();
        uint type = random.Next(8) == 0 ? (uint)random.Next() : Types[random.Next(Types.Length)];
        ulong sector = random.Next(4) switch
        {
            0 => (ulong)random.NextInt64(),
            1 => 120 + (ulong)random.Next(16), // near the 128-sector capacity
            2 => ulong.MaxValue - (ulong)random.Next(4),
            _ => (ulong)random.Next(128),
        };
        ulong header = 0x9000 + ((ulong)random.Next(0x100) * 16);
        h.WriteHeader(header, type, sector);
        int split = random.Next(4) == 0 ? random.Next(1, 16) : 16;
        buffers.Add((header, (uint)split, random.Next(20) == 0));
        if (split < 16)
        {
            buffers.Add((header + (ulong)split, (uint)(16 - split), false));
        }

        int headerBuffers = buffers.Count;
        bool hostile = random.Next(2) == 0; // otherwise mostly plausible buffers, so requests get executed too
        int count = !hostile && type is 11 or 13 && random.Next(2) == 0 ? 1 : random.Next(0, 6);
        bool write = type is 0 or 8;
        for (int i = 0; i < count; i++)
        {
            bool w = random.Next(hostile ? 6 : 30) == 0 ? random.Next(2) == 0 : write;
            uint length = type is 11 or 13 && random.Next(2) == 0 ? 16u * (uint)random.Next(1, 6) : Length(random, hostile);
            buffers.Add((Address(random, hostile), length, w));
        }

        if (random.Next(8) != 0)
        {
            buffers.Add((Address(random, hostile), random.Next(4) == 0 ? (uint)random.Next(3) : 1u, true)); // the status byte
        }

        // Discard/write-zeroes segments in every readable data buffer that lies in memory.
        foreach (var (address, length, w) in buffers.Skip(headerBuffers))
        {
            if (!w && length >= 16 && h.Fake.Covers(address, length) && length <= 0x1000 && IsSingleRegion(address, length))
            {
                Span<byte> bytes = h.Fake.Bytes(address, (int)length);
                for (int at = 0; at + 16 <= bytes.Length; at += 16)
                {
                    BinaryPrimitives.WriteUInt64LittleEndian(bytes[at..], random.Next(4) == 0 ? (ulong)random.NextInt64() : 8ul * (ulong)random.Next(17));
                    BinaryPrimitives.WriteUInt32LittleEndian(bytes[(at + 8)..], random.Next(4) == 0 ? (uint)random.Next() : 8u * (uint)random.Next(9));
                    BinaryPrimitives.WriteUInt32LittleEndian(bytes[(at + 12)..], random.Next(4) == 0 ? (uint)random.Next(4) : 0u);
                }
            }
        }

        return buffers;
    }

    private static bool IsSingleRegion(ulong address, uint length) =>
        (address >= 0x9000 && address + length <= 0x10000) || (address >= 0x10000 && address + length <= 0x20000) ||
        (address >= 0x100000 && address + length <= 0x110000);

    private static ulong Address(Random random, bool hostile) => (hostile || random.Next(20) == 0 ? random.Next(9) : 8) switch
    {
        0 => (ulong)random.NextInt64() * 2 + (ulong)random.Next(2),
        1 => 0xfe00 + (ulong)random.Next(0x400), // crossing the two contiguous regions
        2 => 0x1fe00 + (ulong)random.Next(0x400), // running into the gap
        3 => ulong.MaxValue - (ulong)random.Next(0x400), // wrapping
        4 => BlkHarness.ReadOnlyRegion + (ulong)random.Next(0x1100), // read-only, and past it
        5 => 0x10fe00 + (ulong)random.Next(0x400), // the end of the last region
        _ => random.Next(2) == 0 ? 0xA000 + (ulong)random.Next(0x10000) : 0x100000 + (ulong)random.Next(0xC000),
    };

    private static uint Length(Random random, bool hostile) => (hostile ? random.Next(6) : 1 + random.Next(5)) switch
    {
        0 => (uint)random.NextInt64(1L << 32),
        1 => (uint)random.Next(64) * 16,
        2 => (uint)random.Next(0x1000),
        _ => (uint)random.Next(1, 9) * 512,
    };

    private static void FillGuest(BlkHarness h, Random random)
    {
        foreach (var (start, length) in Watched)
        {
            if (start != BlkHarness.ReadOnlyRegion)
            {
                random.NextBytes(h.Fake.Bytes(start, length));
            }
        }
    }

    private static byte[][] Snapshot(BlkHarness h)
    {
        var copies = new byte[Watched.Length][];
        for (int i = 0; i < Watched.Length; i++)
        {
            copies[i] = h.Fake.Bytes(Watched[i].Start, Watched[i].Length).ToArray();
        }

        return copies;
    }

    private static void AssertOnlyWritableBuffersChanged(BlkHarness h, byte[][] before, List<(ulong Address, uint Length, bool Write)> buffers)
    {
        for (int i = 0; i < Watched.Length; i++)
        {
            ReadOnlySpan<byte> now = h.Fake.Bytes(Watched[i].Start, Watched[i].Length);
            for (int j = 0; j < now.Length; j++)
            {
                if (now[j] != before[i][j])
                {
                    ulong gpa = Watched[i].Start + (ulong)j;
                    Assert.True(InWritableBuffer(h, buffers, gpa), $"guest byte 0x{gpa:x} changed outside every device-writable buffer");
                }
            }
        }
    }

    private static bool InWritableBuffer(BlkHarness h, List<(ulong Address, uint Length, bool Write)> buffers, ulong gpa)
    {
        foreach (var (address, length, write) in buffers)
        {
            if (write && gpa >= address && gpa - address < length && h.Fake.Covers(address, length, writable: true))
            {
                return true;
            }
        }

        return false;
    }
}
