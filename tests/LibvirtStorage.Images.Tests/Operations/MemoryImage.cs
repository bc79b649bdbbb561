namespace LibvirtStorage.Images.Tests.Operations;

/// <summary>
/// An in-memory qcow2-like layer for testing chain operations without the qcow2 core: each cluster is
/// unallocated, data or zero; unallocated clusters read from the backing image (zeroes past its end),
/// and partial writes copy the rest of the cluster from the backing image first.
/// </summary>
internal sealed class MemoryImage(string path, long size, int clusterSize, IBlockImage? backing = null) : IBlockImage
{
    private const byte Unallocated = 0, DataState = 1, ZeroState = 2;

    /// <summary>Host offsets are reported as guest offset plus this, to tell them apart in maps.</summary>
    public const long HostBase = 1 << 20;

    private readonly byte[] _data = new byte[size];
    private readonly byte[] _state = new byte[(size + clusterSize - 1) / clusterSize];

    public string Path => path;

    public ImageFormat Format => ImageFormat.Qcow2;

    public long VirtualSize => size;

    public bool IsReadOnly => false;

    public int ClusterSize => clusterSize;

    public IBlockImage? Backing => backing;

    public int Reads { get; private set; }

    public void Read(long offset, Span<byte> destination)
    {
        Reads++;
        for (int i = 0; i < destination.Length;)
        {
            long at = offset + i;
            int cluster = (int)(at / clusterSize);
            int n = (int)Math.Min(destination.Length - i, ((cluster + 1L) * clusterSize) - at);
            Span<byte> part = destination.Slice(i, n);
            switch (_state[cluster])
            {
                case DataState:
                    _data.AsSpan((int)at, n).CopyTo(part);
                    break;
                case ZeroState:
                    part.Clear();
                    break;
                default:
                    ReadBacking(at, part);
                    break;
            }

            i += n;
        }
    }

    public void Write(long offset, ReadOnlySpan<byte> source)
    {
        for (int i = 0; i < source.Length;)
        {
            long at = offset + i;
            int cluster = (int)(at / clusterSize);
            long start = (long)cluster * clusterSize;
            int n = (int)Math.Min(source.Length - i, start + clusterSize - at);
            if (_state[cluster] != DataState)
            {
                Span<byte> whole = _data.AsSpan((int)start, (int)Math.Min(clusterSize, size - start));
                if (_state[cluster] == ZeroState)
                {
                    whole.Clear();
                }
                else
                {
                    ReadBacking(start, whole);
                }

                _state[cluster] = DataState;
            }

            source.Slice(i, n).CopyTo(_data.AsSpan((int)at, n));
            i += n;
        }
    }

    /// <summary>Marks whole clusters zero (the range must be cluster-aligned).</summary>
    public void WriteZeroes(long offset, long length, bool unmap)
    {
        for (long at = offset; at < offset + length; at += clusterSize)
        {
            _state[at / clusterSize] = ZeroState;
        }
    }

    /// <summary>Makes whole clusters unallocated again (the range must be cluster-aligned).</summary>
    public void Discard(long offset, long length)
    {
        for (long at = offset; at < offset + length; at += clusterSize)
        {
            _state[at / clusterSize] = Unallocated;
        }
    }

    public void Flush()
    {
    }

    public void Resize(long newSize) => throw new NotSupportedException();

    public BlockStatus GetBlockStatus(long offset, long length)
    {
        length = Math.Min(length, size - offset);
        if (length <= 0)
        {
            return new BlockStatus(0, true, true, false, null);
        }

        int cluster = (int)(offset / clusterSize);
        byte state = _state[cluster];
        long end = (cluster + 1L) * clusterSize;
        while (end < offset + length && _state[end / clusterSize] == state)
        {
            end += clusterSize;
        }

        long run = Math.Min(end, offset + length) - offset;
        return new BlockStatus(run, state != Unallocated, state == ZeroState, state == DataState, state == DataState ? offset + HostBase : null);
    }

    public void Dispose()
    {
    }

    private void ReadBacking(long offset, Span<byte> destination)
    {
        if (backing is null || offset >= backing.VirtualSize)
        {
            destination.Clear();
            return;
        }

        int n = (int)Math.Min(destination.Length, backing.VirtualSize - offset);
        backing.Read(offset, destination[..n]);
        destination[n..].Clear();
    }
}
