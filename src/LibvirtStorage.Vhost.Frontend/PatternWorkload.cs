using System.Buffers.Binary;

namespace LibvirtStorage.Vhost.Frontend;

/// <summary>What <see cref="PatternWorkload.Verify"/> found.</summary>
/// <param name="Sectors">Sectors read and checked.</param>
/// <param name="Mismatches">Sectors holding something no acknowledged (or, after a crash, no submitted) write put there.</param>
/// <param name="FirstMismatch">The first mismatch in words, or null.</param>
public readonly record struct PatternCheck(long Sectors, long Mismatches, string? FirstMismatch)
{
    /// <summary>True when every sector held what it should.</summary>
    public bool IsOk => Mismatches == 0;
}

/// <summary>
/// Writes self-describing blocks through one queue and checks them back. Every 512-byte sector starts with a magic
/// number, its block index, the write's generation and its sector index, and the rest is filled from those, so a
/// read tells exactly which write a sector holds. The workload remembers, per block, the generation of the last
/// acknowledged write, of the last write acknowledged before a completed FLUSH, and of the last submitted write.
/// </summary>
/// <remarks>
/// <see cref="Verify"/> with <c>afterCrash: false</c> demands the last acknowledged generation everywhere. After the
/// back-end was killed, <c>afterCrash: true</c> accepts any generation from the last flushed one to the last
/// submitted one (a write that was never flushed may or may not have reached the disk), and nothing older: that
/// is the durability promise of FLUSH. Used by the demo and the crash tests; one instance per queue, on disjoint
/// ranges, since a queue is driven by one thread.
/// </remarks>
public sealed class PatternWorkload
{
    private const ulong Magic = 0x4C56_5354_5041_5454;   // "LVSTPATT"
    private const int SectorBytes = 512;
    private const int HeaderBytes = 24;

    private readonly long _offset;
    private readonly int _blockBytes;
    private readonly uint[] _acknowledged;
    private readonly uint[] _flushed;
    private readonly uint[] _submitted;
    private readonly long[] _slotBlock;
    private readonly uint[] _slotGeneration;
    private readonly Random _random;
    private uint _generation;

    /// <summary>Covers <paramref name="length"/> bytes from <paramref name="offset"/> in blocks of <paramref name="blockBytes"/>.</summary>
    public PatternWorkload(long offset, long length, int blockBytes = 4096, int seed = 1, int maxDepth = 1024)
    {
        if (offset < 0 || offset % SectorBytes != 0)
            throw new ArgumentOutOfRangeException(nameof(offset), "must be a non-negative multiple of 512");
        if (blockBytes <= 0 || blockBytes % SectorBytes != 0)
            throw new ArgumentOutOfRangeException(nameof(blockBytes), "must be a positive multiple of 512");
        if (length < blockBytes || length / blockBytes > int.MaxValue)
            throw new ArgumentOutOfRangeException(nameof(length), "must hold at least one block and at most 2^31 blocks");
        _offset = offset;
        _blockBytes = blockBytes;
        int blocks = (int)(length / blockBytes);
        _acknowledged = new uint[blocks];
        _flushed = new uint[blocks];
        _submitted = new uint[blocks];
        _slotBlock = new long[maxDepth];
        _slotGeneration = new uint[maxDepth];
        _random = new Random(seed);
    }

    /// <summary>Number of blocks covered.</summary>
    public int Blocks => _acknowledged.Length;

    /// <summary>Writes acknowledged by the device so far.</summary>
    public long WritesAcknowledged { get; private set; }

    /// <summary>
    /// Writes <paramref name="count"/> blocks at random positions, keeping the queue as full as its depth allows,
    /// and waits for all of them. Throws <see cref="IOException"/> on a failed request.
    /// </summary>
    public void WriteRandom(VhostUserBlkQueue queue, int count) => Write(queue, count, sequential: false);

    /// <summary>Writes every block once, in order, as <see cref="WriteRandom"/> does.</summary>
    public void WriteAll(VhostUserBlkQueue queue) => Write(queue, Blocks, sequential: true);

    private void Write(VhostUserBlkQueue queue, int count, bool sequential)
    {
        ArgumentNullException.ThrowIfNull(queue);
        CheckQueue(queue);
        Span<BlkCompletion> done = stackalloc BlkCompletion[queue.Depth];
        int submitted = 0;

        // Two writes of one block in flight at once may complete in either order (virtio-blk promises none), and the
        // disk may then keep the older one: a block is written again only after its previous write completed.
        var inFlight = new HashSet<int>();
        while (submitted < count || queue.InFlight > 0)
        {
            while (submitted < count && inFlight.Count < Blocks && queue.TryAcquireSlot(out int slot))
            {
                int block = sequential ? submitted : _random.Next(Blocks);
                while (!inFlight.Add(block))
                    block = _random.Next(Blocks);
                uint generation = ++_generation;
                Fill(queue.Data(slot)[.._blockBytes], block, generation);
                _slotBlock[slot] = block;
                _slotGeneration[slot] = generation;
                _submitted[block] = generation;
                queue.Submit(slot, BlkRequestType.Write, SectorOf(block), _blockBytes);
                submitted++;
            }

            int n = queue.WaitForCompletions(done);
            for (int i = 0; i < n; i++)
            {
                BlkCompletion c = done[i];
                if (!c.IsOk)
                    throw new IOException($"write of block {_slotBlock[c.Slot]} failed: status {c.Status}, used length {c.UsedLength}");
                int block = (int)_slotBlock[c.Slot];
                inFlight.Remove(block);
                _acknowledged[block] = _slotGeneration[c.Slot];
                WritesAcknowledged++;
            }
        }
    }

    /// <summary>Sends a FLUSH and waits for it; from then on every write acknowledged before it must survive a crash.</summary>
    public void Flush(VhostUserBlkQueue queue)
    {
        ArgumentNullException.ThrowIfNull(queue);
        if (queue.InFlight != 0)
            throw new InvalidOperationException("flush with requests in flight");
        Span<BlkCompletion> done = stackalloc BlkCompletion[1];
        if (!queue.TryAcquireSlot(out int slot))
            throw new InvalidOperationException("no free slot");
        queue.Submit(slot, BlkRequestType.Flush, 0, 0);
        while (queue.WaitForCompletions(done) == 0)
        {
        }

        if (!done[0].IsOk)
            throw new IOException($"FLUSH failed: status {done[0].Status}");
        // Nothing else was in flight, so everything acknowledged so far was covered by this FLUSH.
        Array.Copy(_acknowledged, _flushed, _flushed.Length);
    }

    /// <summary>Reads every block back and checks it (see the remarks of the type).</summary>
    public PatternCheck Verify(VhostUserBlkQueue queue, bool afterCrash = false)
    {
        ArgumentNullException.ThrowIfNull(queue);
        CheckQueue(queue);
        Span<BlkCompletion> done = stackalloc BlkCompletion[queue.Depth];
        long sectors = 0;
        long mismatches = 0;
        string? first = null;
        int next = 0;
        while (next < Blocks || queue.InFlight > 0)
        {
            while (next < Blocks && queue.TryAcquireSlot(out int slot))
            {
                _slotBlock[slot] = next;
                queue.Submit(slot, BlkRequestType.Read, SectorOf(next), _blockBytes);
                next++;
            }

            int n = queue.WaitForCompletions(done);
            for (int i = 0; i < n; i++)
            {
                BlkCompletion c = done[i];
                int block = (int)_slotBlock[c.Slot];
                if (!c.IsOk)
                    throw new IOException($"read of block {block} failed: status {c.Status}");
                ReadOnlySpan<byte> data = queue.Data(c.Slot)[.._blockBytes];
                for (int s = 0; s < _blockBytes / SectorBytes; s++)
                {
                    sectors++;
                    string? problem = Check(data.Slice(s * SectorBytes, SectorBytes), block, s, afterCrash);
                    if (problem is not null)
                    {
                        mismatches++;
                        first ??= problem;
                    }
                }
            }
        }

        return new PatternCheck(sectors, mismatches, first);
    }

    private string? Check(ReadOnlySpan<byte> sector, int block, int index, bool afterCrash)
    {
        uint low = afterCrash ? _flushed[block] : _acknowledged[block];
        uint high = afterCrash ? Math.Max(_submitted[block], _acknowledged[block]) : _acknowledged[block];
        uint found;
        if (!sector.ContainsAnyExcept((byte)0))
        {
            found = 0;
        }
        else
        {
            ulong magic = BinaryPrimitives.ReadUInt64LittleEndian(sector);
            long ownBlock = BinaryPrimitives.ReadInt64LittleEndian(sector[8..]);
            found = BinaryPrimitives.ReadUInt32LittleEndian(sector[16..]);
            int ownIndex = BinaryPrimitives.ReadInt32LittleEndian(sector[20..]);
            if (magic != Magic || ownBlock != block || ownIndex != index || found == 0 || !FillMatches(sector, block, found, index))
                return $"block {block} sector {index}: foreign or damaged data (expected generation {low}..{high})";
        }

        return found >= low && found <= high
            ? null
            : $"block {block} sector {index}: generation {found}, expected {(low == high ? low.ToString(System.Globalization.CultureInfo.InvariantCulture) : $"{low}..{high}")}";
    }

    private void Fill(Span<byte> data, int block, uint generation)
    {
        for (int s = 0; s < _blockBytes / SectorBytes; s++)
        {
            Span<byte> sector = data.Slice(s * SectorBytes, SectorBytes);
            BinaryPrimitives.WriteUInt64LittleEndian(sector, Magic);
            BinaryPrimitives.WriteInt64LittleEndian(sector[8..], block);
            BinaryPrimitives.WriteUInt32LittleEndian(sector[16..], generation);
            BinaryPrimitives.WriteInt32LittleEndian(sector[20..], s);
            ulong word = Mix(block, generation, s);
            for (int o = HeaderBytes; o < SectorBytes; o += 8)
                BinaryPrimitives.WriteUInt64LittleEndian(sector[o..], word + (ulong)o);
        }
    }

    private static bool FillMatches(ReadOnlySpan<byte> sector, int block, uint generation, int index)
    {
        ulong word = Mix(block, generation, index);
        for (int o = HeaderBytes; o < SectorBytes; o += 8)
        {
            if (BinaryPrimitives.ReadUInt64LittleEndian(sector[o..]) != word + (ulong)o)
                return false;
        }

        return true;
    }

    private static ulong Mix(int block, uint generation, int sector) =>
        ((ulong)(uint)block * 0x9E37_79B9_7F4A_7C15) ^ ((ulong)generation << 20) ^ (ulong)sector;

    private ulong SectorOf(int block) => (ulong)((_offset + ((long)block * _blockBytes)) / SectorBytes);

    private void CheckQueue(VhostUserBlkQueue queue)
    {
        if (queue.Depth > _slotBlock.Length)
            throw new ArgumentException($"queue depth {queue.Depth} exceeds the workload's maxDepth {_slotBlock.Length}", nameof(queue));
        if (queue.MaxRequestBytes < _blockBytes)
            throw new ArgumentException($"queue slots hold {queue.MaxRequestBytes} bytes, blocks need {_blockBytes}", nameof(queue));
    }
}
