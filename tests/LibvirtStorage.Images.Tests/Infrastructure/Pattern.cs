using System.Buffers.Binary;

namespace LibvirtStorage.Images.Tests.Infrastructure;

/// <summary>
/// Deterministic test data. The byte at a disk offset depends on the seed and on the offset itself, so
/// data landing at the wrong offset, in the wrong cluster or from the wrong write is detected.
/// </summary>
internal static class Pattern
{
    /// <summary>Fills <paramref name="destination"/> with the bytes of stream <paramref name="seed"/> at disk offsets starting at <paramref name="offset"/>.</summary>
    public static void Fill(Span<byte> destination, uint seed, long offset)
    {
        Span<byte> word = stackalloc byte[8];
        int i = 0;
        while (i < destination.Length)
        {
            long pos = offset + i;
            BinaryPrimitives.WriteUInt64LittleEndian(word, Mix(seed, pos >> 3));
            int start = (int)(pos & 7);
            int n = Math.Min(8 - start, destination.Length - i);
            word.Slice(start, n).CopyTo(destination[i..]);
            i += n;
        }
    }

    public static byte[] Make(uint seed, long offset, int length)
    {
        byte[] b = new byte[length];
        Fill(b, seed, offset);
        return b;
    }

    /// <summary>The bytes of one test write: a constant fill byte (checkable with qemu-io <c>read -P</c>) or the stream.</summary>
    public static byte[] WriteData(uint seed, long offset, int length, bool constant)
    {
        if (!constant)
        {
            return Make(seed, offset, length);
        }

        byte[] b = new byte[length];
        b.AsSpan().Fill(ConstantFor(seed));
        return b;
    }

    /// <summary>A non-zero fill byte for qemu-io's <c>write -P</c>, derived from a seed.</summary>
    public static byte ConstantFor(uint seed) => (byte)(1 + (Mix(seed, 0) % 255));

    /// <summary>SplitMix64 over (seed, word index): a well-spread 64-bit value, never all-zero bytes in practice.</summary>
    public static ulong Mix(uint seed, long index)
    {
        ulong z = ((ulong)seed << 32) ^ (ulong)index;
        z += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return (z ^ (z >> 31)) | 0x0101010101010101UL;
    }
}
