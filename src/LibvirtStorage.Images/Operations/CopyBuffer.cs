using System.Buffers;

namespace LibvirtStorage.Images.Operations;

/// <summary>A pooled buffer for the copy loops of commit and rebase (2 MiB, like QEMU's block jobs use).</summary>
internal sealed class CopyBuffer : IDisposable
{
    public const int DefaultSize = 2 << 20;

    private byte[]? _array;

    public CopyBuffer(int size = DefaultSize)
    {
        _array = ArrayPool<byte>.Shared.Rent(size);
        Size = size;
    }

    public int Size { get; }

    public Span<byte> Span(int length) => (_array ?? throw new ObjectDisposedException(nameof(CopyBuffer))).AsSpan(0, length);

    public Span<byte> Span(int start, int length) => (_array ?? throw new ObjectDisposedException(nameof(CopyBuffer))).AsSpan(start, length);

    public void Dispose()
    {
        if (_array is not null)
        {
            ArrayPool<byte>.Shared.Return(_array);
            _array = null;
        }
    }
}
