using System.Runtime.InteropServices;

namespace LibvirtStorage.Images.Native;

/// <summary>
/// A few reusable, 4 KiB-aligned native buffers of one size (copy-on-write fill, one cluster each), so
/// O_DIRECT I/O from them needs no bounce buffer and steady state allocates nothing.
/// </summary>
internal sealed unsafe class AlignedBufferPool : IDisposable
{
    private const int Alignment = 4096;
    private readonly nint[] _free = new nint[8];
    private readonly int _size;

    public AlignedBufferPool(int size) => _size = size;

    public int Size => _size;

    public nint Rent()
    {
        for (int i = 0; i < _free.Length; i++)
        {
            nint p = Interlocked.Exchange(ref _free[i], 0);
            if (p != 0)
            {
                return p;
            }
        }

        return (nint)NativeMemory.AlignedAlloc((nuint)_size, Alignment);
    }

    public void Return(nint buffer)
    {
        for (int i = 0; i < _free.Length; i++)
        {
            if (Interlocked.CompareExchange(ref _free[i], buffer, 0) == 0)
            {
                return;
            }
        }

        NativeMemory.AlignedFree((void*)buffer);
    }

    /// <summary>The whole buffer as a span. SAFETY: the caller rented <paramref name="buffer"/> and has not returned it.</summary>
    public Span<byte> AsSpan(nint buffer) => new((void*)buffer, _size);

    public void Dispose()
    {
        for (int i = 0; i < _free.Length; i++)
        {
            nint p = Interlocked.Exchange(ref _free[i], 0);
            if (p != 0)
            {
                NativeMemory.AlignedFree((void*)p);
            }
        }
    }
}
