using System.Runtime.InteropServices;

namespace LibvirtStorage.Images.Native;

/// <summary>
/// The system zlib (libz.so.1). qcow2 stores zlib clusters as raw deflate with a 4 KiB window
/// (windowBits -12), which .NET's DeflateStream cannot produce, so the engine calls zlib itself,
/// with the same parameters as QEMU (block/qcow2-threads.c): level Z_DEFAULT_COMPRESSION, memLevel 9,
/// Z_DEFAULT_STRATEGY. With the same zlib, the compressed bytes are identical to QEMU's.
/// </summary>
internal static unsafe partial class Zlib
{
    public const int Z_OK = 0;
    public const int Z_STREAM_END = 1;
    public const int Z_BUF_ERROR = -5;
    public const int Z_FINISH = 4;
    public const int Z_DEFLATED = 8;
    public const int Z_DEFAULT_COMPRESSION = -1;
    public const int Z_DEFAULT_STRATEGY = 0;

    /// <summary>qcow2's window: raw deflate (negative) with 2^12 = 4 KiB.</summary>
    public const int Qcow2WindowBits = -12;

    /// <summary>QEMU's deflate memLevel.</summary>
    public const int Qcow2MemLevel = 9;

    private const string Library = "libz.so.1";

    [LibraryImport(Library)]
    public static partial byte* zlibVersion();

    [LibraryImport(Library)]
    public static partial int deflateInit2_(ZStream* strm, int level, int method, int windowBits, int memLevel, int strategy, byte* version, int streamSize);

    [LibraryImport(Library)]
    public static partial int deflate(ZStream* strm, int flush);

    [LibraryImport(Library)]
    public static partial int deflateReset(ZStream* strm);

    [LibraryImport(Library)]
    public static partial int deflateEnd(ZStream* strm);

    [LibraryImport(Library)]
    public static partial int inflateInit2_(ZStream* strm, int windowBits, byte* version, int streamSize);

    [LibraryImport(Library)]
    public static partial int inflate(ZStream* strm, int flush);

    [LibraryImport(Library)]
    public static partial int inflateReset(ZStream* strm);

    [LibraryImport(Library)]
    public static partial int inflateEnd(ZStream* strm);

    /// <summary>z_stream's message for the last error, or a generic text.</summary>
    public static string Message(ZStream* strm, int code) =>
        strm->Msg != null ? Marshal.PtrToStringUTF8((IntPtr)strm->Msg) ?? $"zlib error {code}" : $"zlib error {code}";
}

/// <summary>z_stream for LP64 Linux (x86_64, aarch64): 112 bytes. zlib keeps a pointer back to it, so it must not move.</summary>
[StructLayout(LayoutKind.Explicit, Size = 112)]
internal unsafe struct ZStream
{
    [FieldOffset(0)]
    public byte* NextIn;

    [FieldOffset(8)]
    public uint AvailIn;

    [FieldOffset(16)]
    public ulong TotalIn;

    [FieldOffset(24)]
    public byte* NextOut;

    [FieldOffset(32)]
    public uint AvailOut;

    [FieldOffset(40)]
    public ulong TotalOut;

    [FieldOffset(48)]
    public byte* Msg;

    [FieldOffset(56)]
    public void* State;

    // zalloc (64), zfree (72) and opaque (80) stay null: zlib then uses malloc/free.
}

/// <summary>
/// One zlib stream in native memory (it must not move, and zlib checks that it did not), set up for
/// qcow2 deflate or inflate and reset between clusters. Not thread-safe: callers keep one per thread.
/// </summary>
internal sealed unsafe class ZlibStream : SafeHandle
{
    private readonly bool _deflate;

    private ZlibStream(bool deflate)
        : base(IntPtr.Zero, ownsHandle: true)
    {
        _deflate = deflate;
        var strm = (ZStream*)NativeMemory.AllocZeroed((nuint)sizeof(ZStream));
        int rc = deflate
            ? Zlib.deflateInit2_(strm, Zlib.Z_DEFAULT_COMPRESSION, Zlib.Z_DEFLATED, Zlib.Qcow2WindowBits, Zlib.Qcow2MemLevel, Zlib.Z_DEFAULT_STRATEGY, Zlib.zlibVersion(), sizeof(ZStream))
            : Zlib.inflateInit2_(strm, Zlib.Qcow2WindowBits, Zlib.zlibVersion(), sizeof(ZStream));
        if (rc != Zlib.Z_OK)
        {
            NativeMemory.Free(strm);
            throw new InvalidOperationException($"zlib {(deflate ? "deflateInit2" : "inflateInit2")} failed with {rc}");
        }

        SetHandle((IntPtr)strm);
    }

    public override bool IsInvalid => handle == IntPtr.Zero;

    public static ZlibStream CreateDeflater() => new(deflate: true);

    public static ZlibStream CreateInflater() => new(deflate: false);

    /// <summary>Compresses all of <paramref name="src"/>; returns the length, or -1 when it does not fit in <paramref name="dst"/>.</summary>
    public int Deflate(ReadOnlySpan<byte> src, Span<byte> dst)
    {
        if (dst.IsEmpty)
        {
            return -1;
        }

        int rc = Run(src, dst, out uint availOut, out string? message);
        return rc switch
        {
            Zlib.Z_STREAM_END => dst.Length - (int)availOut,
            Zlib.Z_OK or Zlib.Z_BUF_ERROR => -1,
            _ => throw new InvalidOperationException($"zlib deflate failed: {message}"),
        };
    }

    /// <summary>
    /// Inflates until <paramref name="dst"/> is full, reading at most <paramref name="src"/>
    /// (QEMU's rule: the stream may end later, or its tail may be missing, as long as dst fills).
    /// Returns null on success, else zlib's reason.
    /// </summary>
    public string? Inflate(ReadOnlySpan<byte> src, Span<byte> dst)
    {
        if (dst.IsEmpty)
        {
            return null;
        }

        int rc = Run(src, dst, out uint missing, out string? message);
        if (rc is Zlib.Z_STREAM_END or Zlib.Z_BUF_ERROR)
        {
            return missing == 0 ? null : $"the data ends {missing} bytes short of a cluster";
        }

        return message;
    }

    /// <summary>Resets the stream and runs one deflate or inflate call with Z_FINISH over the two buffers.</summary>
    private int Run(ReadOnlySpan<byte> src, Span<byte> dst, out uint availOut, out string? message)
    {
        var strm = (ZStream*)handle;
        _ = _deflate ? Zlib.deflateReset(strm) : Zlib.inflateReset(strm);
        fixed (byte* pIn = src)
        fixed (byte* pOut = dst)
        {
            // SAFETY: both spans stay pinned for the one call that uses the pointers, zlib writes at
            // most AvailOut bytes from NextOut, and the pointers are cleared before the pins end.
            strm->NextIn = pIn;
            strm->AvailIn = (uint)src.Length;
            strm->NextOut = pOut;
            strm->AvailOut = (uint)dst.Length;
            int rc = _deflate ? Zlib.deflate(strm, Zlib.Z_FINISH) : Zlib.inflate(strm, Zlib.Z_FINISH);
            availOut = strm->AvailOut;
            message = rc is Zlib.Z_OK or Zlib.Z_STREAM_END ? null : Zlib.Message(strm, rc);
            strm->NextIn = null;
            strm->NextOut = null;
            return rc;
        }
    }

    protected override bool ReleaseHandle()
    {
        var strm = (ZStream*)handle;
        _ = _deflate ? Zlib.deflateEnd(strm) : Zlib.inflateEnd(strm);
        NativeMemory.Free(strm);
        return true;
    }
}
