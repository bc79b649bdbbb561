using System.Numerics;

namespace LibvirtStorage.Service;

/// <summary>
/// The chunks of a volume a guest changed while a job copied it (QEMU's dirty bitmap of a mirror job): one bit per
/// chunk, set when a write, write-zeroes or discard completes, taken (read and cleared) by the job that copies the
/// chunk again.
/// </summary>
/// <remarks>
/// A bit is set after the request completed, so a job that takes the bit and then reads the chunk reads at least
/// what the guest wrote; a request still running when the export is paused has set its bit before the pause
/// returns. Marking is one interlocked OR per word touched: no lock, no allocation.
/// </remarks>
public sealed class WriteTracker
{
    private readonly long[] _words;
    private readonly int _chunkBits;

    /// <summary>A tracker for <paramref name="capacity"/> bytes in chunks of <paramref name="chunkSize"/> (a power of two).</summary>
    public WriteTracker(long capacity, int chunkSize)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(capacity);
        if (chunkSize < 512 || !BitOperations.IsPow2(chunkSize))
        {
            throw new ArgumentOutOfRangeException(nameof(chunkSize), chunkSize, "the chunk size must be a power of two of at least 512");
        }

        ChunkSize = chunkSize;
        _chunkBits = BitOperations.Log2((uint)chunkSize);
        Chunks = (capacity + chunkSize - 1) >> _chunkBits;
        _words = new long[(Chunks + 63) / 64];
    }

    /// <summary>Bytes per chunk.</summary>
    public int ChunkSize { get; }

    /// <summary>Chunks tracked; writes past them (after a grow) mark the last one.</summary>
    public long Chunks { get; }

    /// <summary>Marks the chunks [offset, offset + length) touches.</summary>
    public void Mark(long offset, long length)
    {
        if (length <= 0 || Chunks == 0)
        {
            return;
        }

        long first = Math.Min(offset >> _chunkBits, Chunks - 1);
        long last = Math.Min((offset + length - 1) >> _chunkBits, Chunks - 1);
        for (long chunk = first; chunk <= last;)
        {
            long word = chunk >> 6;
            int bit = (int)(chunk & 63);
            int count = (int)Math.Min(64 - bit, last - chunk + 1);
            long mask = count == 64 ? -1L : ((1L << count) - 1) << bit;
            if ((Volatile.Read(ref _words[word]) & mask) != mask)
            {
                Interlocked.Or(ref _words[word], mask);
            }

            chunk += count;
        }
    }

    /// <summary>Takes the first marked chunk at or after <paramref name="from"/>: clears its bit and returns it, or -1.</summary>
    public long TakeNext(long from)
    {
        for (long word = Math.Max(0, from) >> 6; word < _words.Length; word++)
        {
            long bits = Volatile.Read(ref _words[word]);
            if (word == from >> 6 && from > 0)
            {
                bits &= -1L << (int)(from & 63);
            }

            while (bits != 0)
            {
                int bit = BitOperations.TrailingZeroCount(bits);
                long mask = 1L << bit;
                if ((Interlocked.And(ref _words[word], ~mask) & mask) != 0)
                {
                    return (word << 6) + bit;
                }

                bits &= ~mask;
            }
        }

        return -1;
    }

    /// <summary>Marked chunks now (a snapshot: guests may mark more meanwhile).</summary>
    public long Count()
    {
        long count = 0;
        for (int i = 0; i < _words.Length; i++)
        {
            count += BitOperations.PopCount((ulong)Volatile.Read(ref _words[i]));
        }

        return count;
    }
}
