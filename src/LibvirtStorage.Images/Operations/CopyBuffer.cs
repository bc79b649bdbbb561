using System.Runtime.InteropServices;

namespace LibvirtStorage.Images.Operations;

/// <summary>
/// The buffer of a copy loop (convert, commit, rebase, compare): 2 MiB like QEMU's block jobs, aligned to
/// 4 KiB so O_DIRECT reads and writes go straight to it instead of through a bounce buffer.
/// </summary>
internal sealed unsafe class CopyBuffer : IDisposable
{
    public const int DefaultSize = 2 << 20;
    private const int Alignment = 4096;

    private byte* _memory;

    public CopyBuffer(int size = DefaultSize)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(size);
        _memory = (byte*)NativeMemory.AlignedAlloc((nuint)size, Alignment);
        Size = size;
    }

    ~CopyBuffer() => Free();

    public int Size { get; }

    public Span<byte> Span(int length) => Span(0, length);

    public Span<byte> Span(int start, int length)
    {
        ObjectDisposedException.ThrowIf(_memory is null, this);
        ArgumentOutOfRangeException.ThrowIfGreaterThan((uint)start + (uint)length, (uint)Size);

        // SAFETY: [start, start+length) lies inside the Size bytes allocated in the constructor, which stay
        // allocated until Dispose; spans never outlive the loop iteration that asked for them.
        return new Span<byte>(_memory + start, length);
    }

    public void Dispose()
    {
        Free();
        GC.SuppressFinalize(this);
    }

    private void Free()
    {
        if (_memory is not null)
        {
            NativeMemory.AlignedFree(_memory);
            _memory = null;
        }
    }
}
