using System.Globalization;
using System.Text;

namespace LibvirtStorage.Images.Tests.Infrastructure;

/// <summary>
/// A sparse in-memory model of what a guest must read from a virtual disk. Bytes are stored in 64 KiB
/// chunks (absent chunk = zeroes). Discarded bytes are "don't care" (a discard may leave old data,
/// zeroes or the backing file's data) until something defined is written over them.
/// </summary>
internal sealed class DiskModel
{
    private const int ChunkBits = 16;
    private const int ChunkSize = 1 << ChunkBits;

    private readonly Dictionary<long, byte[]> _data = [];
    private readonly Dictionary<long, bool[]> _dontCare = [];

    public DiskModel(long size)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(size);
        Size = size;
    }

    public long Size { get; private set; }

    /// <summary>True when some byte is "don't care".</summary>
    public bool HasDontCare
    {
        get
        {
            foreach (bool[] mask in _dontCare.Values)
            {
                if (Array.IndexOf(mask, true) >= 0)
                {
                    return true;
                }
            }

            return false;
        }
    }

    public DiskModel Clone()
    {
        var c = new DiskModel(Size);
        foreach ((long k, byte[] v) in _data)
        {
            c._data[k] = (byte[])v.Clone();
        }

        foreach ((long k, bool[] v) in _dontCare)
        {
            c._dontCare[k] = (bool[])v.Clone();
        }

        return c;
    }

    public void Write(long offset, ReadOnlySpan<byte> source)
    {
        CheckRange(offset, source.Length);
        foreach ((long chunk, long at, int start, int n) in Pieces(offset, source.Length))
        {
            source.Slice((int)(at - offset), n).CopyTo(DataChunk(chunk).AsSpan(start, n));
            ClearDontCare(chunk, start, n);
        }
    }

    public void WriteZeroes(long offset, long length)
    {
        CheckRange(offset, length);
        foreach ((long chunk, _, int start, int n) in Pieces(offset, length))
        {
            if (_data.TryGetValue(chunk, out byte[]? d))
            {
                d.AsSpan(start, n).Clear();
            }

            ClearDontCare(chunk, start, n);
        }
    }

    public void Discard(long offset, long length)
    {
        CheckRange(offset, length);
        foreach ((long chunk, _, int start, int n) in Pieces(offset, length))
        {
            if (!_dontCare.TryGetValue(chunk, out bool[]? mask))
            {
                mask = new bool[ChunkSize];
                _dontCare[chunk] = mask;
            }

            mask.AsSpan(start, n).Fill(true);
        }
    }

    /// <summary>Shrinking forgets the tail; growing adds zeroes.</summary>
    public void Resize(long newSize)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(newSize);
        if (newSize < Size)
        {
            WriteZeroes(newSize, Size - newSize);
        }

        Size = newSize;
    }

    /// <summary>The model's bytes (a "don't care" byte reads as whatever was last stored there).</summary>
    public void Read(long offset, Span<byte> destination)
    {
        CheckRange(offset, destination.Length);
        foreach ((long chunk, long at, int start, int n) in Pieces(offset, destination.Length))
        {
            Span<byte> target = destination.Slice((int)(at - offset), n);
            if (_data.TryGetValue(chunk, out byte[]? d))
            {
                d.AsSpan(start, n).CopyTo(target);
            }
            else
            {
                target.Clear();
            }
        }
    }

    public bool IsDefined(long position) =>
        !_dontCare.TryGetValue(position >> ChunkBits, out bool[]? mask) || !mask[position & (ChunkSize - 1)];

    /// <summary>Checks that <paramref name="actual"/> (read at <paramref name="offset"/>) agrees with every defined byte.</summary>
    public void AssertMatches(ReadOnlySpan<byte> actual, long offset, string what)
    {
        string? error = FindMismatch(actual, offset, what);
        if (error is not null)
        {
            throw new Xunit.Sdk.XunitException(error);
        }
    }

    public string? FindMismatch(ReadOnlySpan<byte> actual, long offset, string what)
    {
        if (offset == 0 && actual.Length != Size)
        {
            return $"{what}: the disk is {actual.Length} bytes, the model {Size}";
        }

        byte[] expected = new byte[actual.Length];
        Read(offset, expected);
        long first = -1;
        long count = 0;
        for (int i = 0; i < actual.Length; i++)
        {
            if (actual[i] != expected[i] && IsDefined(offset + i))
            {
                if (first < 0)
                {
                    first = i;
                }

                count++;
            }
        }

        if (first < 0)
        {
            return null;
        }

        var sb = new StringBuilder();
        sb.Append(CultureInfo.InvariantCulture, $"{what}: {count} bytes differ from the model; first at disk offset 0x{offset + first:x} (cluster-relative to 64K: 0x{(offset + first) & 0xffff:x}).");
        int show = (int)Math.Min(16, actual.Length - first);
        sb.Append(CultureInfo.InvariantCulture, $" expected {Convert.ToHexString(expected, (int)first, show)}, actual {Convert.ToHexString(actual.Slice((int)first, show))}");
        return sb.ToString();
    }

    /// <summary>
    /// Maximal runs of at least <paramref name="minLength"/> defined bytes of one value, aligned to 512 so
    /// they can be checked with qemu-io <c>read -P</c>.
    /// </summary>
    public List<(long Offset, long Length, byte Value)> ConstantRuns(long minLength = 512)
    {
        var runs = new List<(long, long, byte)>();
        byte[] sector = new byte[512];
        long runStart = -1;
        byte runValue = 0;
        for (long pos = 0; pos + 512 <= Size; pos += 512)
        {
            Read(pos, sector);
            bool constant = Array.TrueForAll(sector, b => b == sector[0]);
            for (int i = 0; constant && i < 512; i++)
            {
                constant = IsDefined(pos + i);
            }

            if (constant && runStart >= 0 && sector[0] == runValue)
            {
                continue;
            }

            if (runStart >= 0 && pos - runStart >= minLength)
            {
                runs.Add((runStart, pos - runStart, runValue));
            }

            runStart = constant ? pos : -1;
            runValue = sector[0];
        }

        long end = Size & ~511L;
        if (runStart >= 0 && end - runStart >= minLength)
        {
            runs.Add((runStart, end - runStart, runValue));
        }

        return runs;
    }

    /// <summary>Writes the model as a raw image file (don't-care bytes as last stored).</summary>
    public void SaveRaw(string path)
    {
        using var f = new FileStream(path, FileMode.Create, FileAccess.Write);
        f.SetLength(Size);
        foreach ((long chunk, byte[] d) in _data)
        {
            long at = chunk << ChunkBits;
            if (at < Size)
            {
                f.Position = at;
                f.Write(d, 0, (int)Math.Min(ChunkSize, Size - at));
            }
        }
    }

    /// <summary>The range cut at chunk boundaries: (chunk index, disk offset, start in chunk, length).</summary>
    private static IEnumerable<(long Chunk, long At, int Start, int Length)> Pieces(long offset, long length)
    {
        long pos = offset;
        long end = offset + length;
        while (pos < end)
        {
            int start = (int)(pos & (ChunkSize - 1));
            int n = (int)Math.Min(ChunkSize - start, end - pos);
            yield return (pos >> ChunkBits, pos, start, n);
            pos += n;
        }
    }

    private byte[] DataChunk(long chunk)
    {
        if (!_data.TryGetValue(chunk, out byte[]? d))
        {
            d = new byte[ChunkSize];
            _data[chunk] = d;
        }

        return d;
    }

    private void ClearDontCare(long chunk, int start, int n)
    {
        if (_dontCare.TryGetValue(chunk, out bool[]? mask))
        {
            mask.AsSpan(start, n).Clear();
        }
    }

    private void CheckRange(long offset, long length)
    {
        if (offset < 0 || length < 0 || offset > Size - length)
        {
            throw new ArgumentOutOfRangeException(nameof(offset), $"model access at {offset}+{length} outside {Size}");
        }
    }
}
