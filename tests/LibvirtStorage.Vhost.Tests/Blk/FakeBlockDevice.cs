using LibvirtStorage.Vhost.Tests.Memory;

namespace LibvirtStorage.Vhost.Tests.Blk;

/// <summary>An in-memory <see cref="IBlockDevice"/> that records calls and checks every span it is handed.</summary>
internal class FakeBlockDevice : IBlockDevice
{
    private readonly byte[] _data;

    public FakeBlockDevice(int capacity = 1 << 20, int blockSize = 512, bool readOnly = false, string serial = "lvstor-test-0001")
    {
        _data = new byte[capacity];
        for (int i = 0; i < _data.Length; i++)
        {
            _data[i] = (byte)(i * 7 + 3);
        }

        LogicalBlockSize = blockSize;
        IsReadOnly = readOnly;
        Serial = serial;
    }

    public virtual long Capacity => _data.Length;

    public int LogicalBlockSize { get; }

    public bool IsReadOnly { get; }

    public string Serial { get; set; }

    public byte[] Data => _data;

    /// <summary>When set, spans must lie inside this fake's regions; a span that does not is counted.</summary>
    public FakeGuestMemory? Guest { get; set; }

    public int SpansOutsideGuest { get; private set; }

    /// <summary>Calls outside the device the handler should never have made (each also throws).</summary>
    public int OutOfRangeCalls { get; private set; }

    public Exception? FailWith { get; set; }

    public int Reads { get; private set; }

    public int Writes { get; private set; }

    public int Flushes { get; private set; }

    public List<(long Offset, long Length)> Discards { get; } = [];

    public List<(long Offset, long Length, bool Unmap)> Zeroed { get; } = [];

    public void Read(long offset, Span<byte> destination)
    {
        Check(offset, destination.Length, destination);
        Reads++;
        _data.AsSpan((int)offset, destination.Length).CopyTo(destination);
    }

    public void Write(long offset, ReadOnlySpan<byte> source)
    {
        Check(offset, source.Length, source);
        Writes++;
        source.CopyTo(_data.AsSpan((int)offset));
    }

    public void Flush()
    {
        Check(0, 0, default);
        Flushes++;
    }

    public void Discard(long offset, long length)
    {
        Check(offset, length, default);
        Discards.Add((offset, length));
    }

    public void WriteZeroes(long offset, long length, bool unmap)
    {
        Check(offset, length, default);
        Zeroed.Add((offset, length, unmap));
        _data.AsSpan((int)offset, (int)length).Clear();
    }

    private void Check(long offset, long length, ReadOnlySpan<byte> span)
    {
        if (FailWith is not null)
        {
            throw FailWith;
        }

        if (offset < 0 || length < 0 || offset + length > _data.Length)
        {
            OutOfRangeCalls++;
            throw new InvalidOperationException($"handler passed an out-of-range request {offset}+{length}");
        }

        if (Guest is not null && !span.IsEmpty && !Guest.SpanInsideRegions(span))
        {
            SpansOutsideGuest++;
        }
    }
}
