using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using LibvirtStorage.Vhost.Memory;

namespace LibvirtStorage.Vhost.Tests.Memory;

/// <summary>
/// Guest memory without a memfd (virtio-queue's mock.rs idea): regions carved out of one native block, each
/// surrounded by guard bytes holding a canary, so a test can prove nothing wrote outside the regions. Front-end
/// virtual addresses are the guest-physical ones plus <see cref="UserBase"/>.
/// </summary>
internal sealed unsafe class FakeGuestMemory : IDisposable
{
    public const ulong UserBase = 0x7f00_0000_0000;
    private const byte Canary = 0xA5;
    private const int Guard = 256;

    private readonly byte* _block;
    private readonly nuint _blockSize;
    private readonly (ulong Gpa, ulong Size, nint Host)[] _layout;

    /// <summary>Builds regions at the given guest-physical addresses (read-only where asked).</summary>
    public FakeGuestMemory(params (ulong Gpa, ulong Size, bool ReadOnly)[] regions)
    {
        ulong total = Guard;
        foreach (var r in regions)
        {
            total += r.Size + Guard;
        }

        _blockSize = (nuint)total;
        _block = (byte*)NativeMemory.AlignedAlloc(_blockSize, 4096);
        new Span<byte>(_block, checked((int)total)).Fill(Canary);
        _layout = new (ulong, ulong, nint)[regions.Length];
        var built = new GuestRegion[regions.Length];
        ulong offset = Guard;
        for (int i = 0; i < regions.Length; i++)
        {
            nint host = (nint)(_block + offset);
            new Span<byte>((void*)host, checked((int)regions[i].Size)).Clear();
            _layout[i] = (regions[i].Gpa, regions[i].Size, host);
            built[i] = GuestRegion.FromPointer(new GuestAddress(regions[i].Gpa), regions[i].Size, UserBase + regions[i].Gpa, host, !regions[i].ReadOnly);
            offset += regions[i].Size + Guard;
        }

        if (!GuestMemoryMap.TryCreate(built, out GuestMemoryMap? map, out string? reason))
        {
            throw new ArgumentException(reason, nameof(regions));
        }

        foreach (GuestRegion r in built)
        {
            r.Dispose();
        }

        Map = map!;
    }

    /// <summary>The standard test layout: 64 KiB at 0 and 64 KiB at 0x10000 (contiguous), and 64 KiB at 0x100000 after a gap.</summary>
    public static FakeGuestMemory Standard() => new((0, 0x10000, false), (0x10000, 0x10000, false), (0x100000, 0x10000, false));

    public GuestMemoryMap Map { get; }

    public GuestMemory Memory => Map.Memory;

    /// <summary>Independent model of the rules: whether [gpa, gpa + len) is covered by contiguous regions.</summary>
    public bool Covers(ulong gpa, ulong len, bool writable = false)
    {
        if (len == 0)
        {
            return true;
        }

        if (gpa + (len - 1) < gpa)
        {
            return false;
        }

        ulong cursor = gpa, end = gpa + (len - 1);
        while (true)
        {
            int i = Array.FindIndex(_layout, r => cursor >= r.Gpa && cursor - r.Gpa < r.Size);
            if (i < 0 || (writable && IsReadOnly(i)))
            {
                return false;
            }

            ulong last = _layout[i].Gpa + _layout[i].Size - 1;
            if (end <= last)
            {
                return true;
            }

            cursor = last + 1;
        }
    }

    /// <summary>Whether a host span lies inside one region's host bytes.</summary>
    public bool SpanInsideRegions(ReadOnlySpan<byte> span)
    {
        nint start = (nint)Unsafe.AsPointer(ref MemoryMarshal.GetReference(span));
        foreach (var r in _layout)
        {
            if (start >= r.Host && start + span.Length <= r.Host + (nint)r.Size)
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>Whether every guard byte still holds the canary.</summary>
    public bool GuardsIntact()
    {
        ulong offset = 0;
        var all = new ReadOnlySpan<byte>(_block, (int)_blockSize);
        foreach (var r in _layout)
        {
            ulong hostOffset = (ulong)((byte*)r.Host - _block);
            if (all[(int)offset..(int)hostOffset].ContainsAnyExcept(Canary))
            {
                return false;
            }

            offset = hostOffset + r.Size;
        }

        return !all[(int)offset..].ContainsAnyExcept(Canary);
    }

    /// <summary>Direct view of guest bytes inside one region (test setup and checks).</summary>
    public Span<byte> Bytes(ulong gpa, int length)
    {
        foreach (var r in _layout)
        {
            if (gpa >= r.Gpa && gpa + (ulong)length <= r.Gpa + r.Size)
            {
                return new Span<byte>((void*)(r.Host + (nint)(gpa - r.Gpa)), length);
            }
        }

        throw new ArgumentOutOfRangeException(nameof(gpa));
    }

    public void Dispose()
    {
        Map.Release();
        NativeMemory.AlignedFree(_block);
    }

    private bool IsReadOnly(int index)
    {
        foreach (GuestRegion r in Map.Regions)
        {
            if (r.Start.Value == _layout[index].Gpa)
            {
                return !r.Writable;
            }
        }

        return false;
    }
}
