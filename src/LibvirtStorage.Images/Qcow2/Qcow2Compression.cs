using LibvirtStorage.Images.Native;
using ZstdSharp.Unsafe;

namespace LibvirtStorage.Images.Qcow2;

/// <summary>
/// Compression of single qcow2 clusters, byte-compatible with QEMU (block/qcow2-threads.c).
/// </summary>
/// <remarks>
/// <para><b>zlib</b> (compression type 0): raw deflate with a 4 KiB window (windowBits -12), level 6,
/// memLevel 9, through the system zlib, so our clusters are byte for byte what QEMU writes. Inflate is
/// QEMU's too: one inflate(Z_FINISH) call with the same window, successful when the cluster is full even
/// if the stream's end lies beyond the input (compressed sizes are stored in whole sectors).</para>
/// <para><b>zstd</b> (type 1): one frame with the content size, produced by one ZSTD_compressStream2
/// (ZSTD_e_end) call at the default level. Decompression streams frame after frame until the cluster is
/// full, as QEMU does, so several concatenated frames are accepted and the bytes after the last one
/// (the rest of the last 512-byte sector) are ignored; a frame that is still open when the cluster is
/// full is an error.</para>
/// <para>Hostile input: the compressed length in an L2 entry is bounded by the cluster size, zlib's
/// window is 4 KiB and zstd's window is capped at 2^<see cref="ZstdWindowLogMax"/> bytes, so neither
/// codec can be made to allocate more than a few MiB, and both stop when the output or input runs out.
/// Codec state is kept per thread and reset between clusters, so the steady state allocates nothing.</para>
/// </remarks>
internal static class Qcow2Compression
{
    /// <summary>Largest zstd window accepted (8 MiB, four times the largest cluster).</summary>
    internal const int ZstdWindowLogMax = 23;

    [ThreadStatic]
    private static ZlibStream? t_deflater;

    [ThreadStatic]
    private static ZlibStream? t_inflater;

    [ThreadStatic]
    private static ZstdCompressor? t_zstdCompressor;

    [ThreadStatic]
    private static ZstdDecompressor? t_zstdDecompressor;

    /// <summary>
    /// Decompresses one cluster: fills exactly <paramref name="dst"/> from at most <paramref name="src"/>.
    /// Returns the number of bytes produced (always <paramref name="dst"/>.Length).
    /// </summary>
    /// <exception cref="ImageException">Corrupt: the data is not a valid stream or is too short.</exception>
    public static int Decompress(CompressionType type, ReadOnlySpan<byte> src, Span<byte> dst)
    {
        string? error = type switch
        {
            CompressionType.Zlib => (t_inflater ??= ZlibStream.CreateInflater()).Inflate(src, dst),
            CompressionType.Zstd => (t_zstdDecompressor ??= new ZstdDecompressor()).Decompress(src, dst),
            _ => throw new ArgumentOutOfRangeException(nameof(type), type, "unknown compression type"),
        };
        if (error is not null)
        {
            ThrowHelper.CorruptCompressed(type == CompressionType.Zlib ? "zlib" : "zstd", error);
        }

        return dst.Length;
    }

    /// <summary>
    /// Compresses <paramref name="src"/> (one cluster) into <paramref name="dst"/>. Returns the compressed
    /// length, or -1 when the result does not fit in <paramref name="dst"/> (the cluster is then better
    /// stored uncompressed; QEMU passes cluster size - 1 for that test).
    /// </summary>
    public static int Compress(CompressionType type, ReadOnlySpan<byte> src, Span<byte> dst) => type switch
    {
        CompressionType.Zlib => (t_deflater ??= ZlibStream.CreateDeflater()).Deflate(src, dst),
        CompressionType.Zstd => (t_zstdCompressor ??= new ZstdCompressor()).Compress(src, dst),
        _ => throw new ArgumentOutOfRangeException(nameof(type), type, "unknown compression type"),
    };

    /// <summary>A zstd compression context for one thread, freed by its finalizer.</summary>
    private sealed unsafe class ZstdCompressor
    {
        private readonly ZSTD_CCtx_s* _cctx;

        public ZstdCompressor()
        {
            _cctx = Methods.ZSTD_createCCtx();
            if (_cctx == null)
            {
                throw new InsufficientMemoryException("cannot create a zstd compression context");
            }
        }

        ~ZstdCompressor() => Methods.ZSTD_freeCCtx(_cctx);

        public int Compress(ReadOnlySpan<byte> src, Span<byte> dst)
        {
            Methods.ZSTD_CCtx_reset(_cctx, ZSTD_ResetDirective.ZSTD_reset_session_only);
            fixed (byte* pIn = src)
            fixed (byte* pOut = dst)
            {
                // SAFETY: the spans are pinned for the call; zstd writes at most output.size bytes.
                var input = new ZSTD_inBuffer_s { src = pIn, size = (nuint)src.Length, pos = 0 };
                var output = new ZSTD_outBuffer_s { dst = pOut, size = (nuint)dst.Length, pos = 0 };
                nuint remaining = Methods.ZSTD_compressStream2(_cctx, &output, &input, ZSTD_EndDirective.ZSTD_e_end);
                if (Methods.ZSTD_isError(remaining) || remaining != 0)
                {
                    // Either the output is full (dstSize_tooSmall, or data still to flush) or the input
                    // is unusable; both mean "store it uncompressed".
                    return -1;
                }

                return (int)output.pos;
            }
        }

    }

    /// <summary>A zstd decompression context for one thread, freed by its finalizer.</summary>
    private sealed unsafe class ZstdDecompressor
    {
        private readonly ZSTD_DCtx_s* _dctx;

        public ZstdDecompressor()
        {
            _dctx = Methods.ZSTD_createDCtx();
            if (_dctx == null)
            {
                throw new InsufficientMemoryException("cannot create a zstd decompression context");
            }

            Methods.ZSTD_DCtx_setParameter(_dctx, ZSTD_dParameter.ZSTD_d_windowLogMax, ZstdWindowLogMax);
        }

        ~ZstdDecompressor() => Methods.ZSTD_freeDCtx(_dctx);

        public string? Decompress(ReadOnlySpan<byte> src, Span<byte> dst)
        {
            Methods.ZSTD_DCtx_reset(_dctx, ZSTD_ResetDirective.ZSTD_reset_session_only);
            fixed (byte* pIn = src)
            fixed (byte* pOut = dst)
            {
                // SAFETY: the spans are pinned for the loop; zstd reads at most input.size and writes
                // at most output.size bytes.
                var input = new ZSTD_inBuffer_s { src = pIn, size = (nuint)src.Length, pos = 0 };
                var output = new ZSTD_outBuffer_s { dst = pOut, size = (nuint)dst.Length, pos = 0 };
                nuint hint = 0;
                while (output.pos < output.size)
                {
                    nuint lastIn = input.pos;
                    nuint lastOut = output.pos;
                    hint = Methods.ZSTD_decompressStream(_dctx, &output, &input);
                    if (Methods.ZSTD_isError(hint))
                    {
                        return ErrorName(hint);
                    }

                    if (input.pos == lastIn && output.pos == lastOut)
                    {
                        return $"the data ends {output.size - output.pos} bytes short of a cluster";
                    }
                }

                // hint != 0: the cluster is full but the frame has not ended (more data than a cluster).
                return hint == 0 ? null : "a frame holds more than one cluster of data";
            }
        }

        private static string ErrorName(nuint code)
        {
            string? name = Methods.ZSTD_getErrorName(code);
            return string.IsNullOrEmpty(name) ? $"zstd error {code}" : name;
        }
    }
}
