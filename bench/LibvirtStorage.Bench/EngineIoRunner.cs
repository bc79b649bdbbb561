using System.Diagnostics;
using System.Runtime.InteropServices;
using LibvirtStorage.Images;

namespace LibvirtStorage.Bench;

/// <summary>
/// Our side of an I/O row: <see cref="IoPattern.Depth"/> threads each issue synchronous requests, taking
/// request numbers from one shared counter, so at most Depth requests are in flight and they are issued in
/// qemu-img bench's strided order. Buffers are page-aligned native memory (like qemu_blockalign), so
/// O_DIRECT requests go straight to the file with no bounce buffer.
/// </summary>
internal sealed unsafe class EngineIoRunner
{
    private const int BufferAlignment = 4096;

    private readonly IBlockImage _image;
    private readonly IoPattern _pattern;
    private readonly long _imageSize;
    private long _nextRequest;
    private Exception? _failure;

    private EngineIoRunner(IBlockImage image, IoPattern pattern)
    {
        _image = image;
        _pattern = pattern;
        _imageSize = image.VirtualSize;
    }

    /// <summary>Runs the pattern and returns the time from the first submission to the last completion.</summary>
    public static TimeSpan Run(IBlockImage image, IoPattern pattern) => new EngineIoRunner(image, pattern).RunCore();

    private TimeSpan RunCore()
    {
        int depth = Math.Max(1, _pattern.Depth);
        var buffers = new nint[depth];
        var threads = new Thread[depth];
        using var ready = new CountdownEvent(depth);
        using var start = new ManualResetEventSlim(false);
        try
        {
            for (int t = 0; t < depth; t++)
            {
                void* buffer = NativeMemory.AlignedAlloc((nuint)_pattern.RequestSize, BufferAlignment);
                // SAFETY: buffer is a fresh allocation of exactly RequestSize bytes.
                new Span<byte>(buffer, _pattern.RequestSize).Fill(_pattern.Fill);
                buffers[t] = (nint)buffer;
                int worker = t;
                threads[t] = new Thread(() =>
                {
                    ready.Signal();
                    start.Wait();
                    Work(worker, (byte*)buffers[worker]);
                })
                {
                    IsBackground = true,
                    Name = $"bench-io-{t}",
                };
                threads[t].Start();
            }

            ready.Wait();
            long began = Stopwatch.GetTimestamp();
            start.Set();
            foreach (Thread thread in threads)
            {
                thread.Join();
            }

            TimeSpan elapsed = Stopwatch.GetElapsedTime(began);
            if (_failure is not null)
            {
                throw new InvalidOperationException($"engine I/O failed: {_failure.Message}", _failure);
            }

            return elapsed;
        }
        finally
        {
            foreach (nint buffer in buffers)
            {
                NativeMemory.AlignedFree((void*)buffer);
            }
        }
    }

    private void Work(int worker, byte* buffer)
    {
        // SAFETY: buffer stays allocated until every worker has been joined (RunCore's finally).
        var span = new Span<byte>(buffer, _pattern.RequestSize);
        ulong random = (ulong)(worker + 1) * 0x9E3779B97F4A7C15UL;
        long slots = _imageSize / _pattern.RequestSize;
        try
        {
            long index;
            while ((index = Interlocked.Increment(ref _nextRequest) - 1) < _pattern.Count)
            {
                long offset = _pattern.Order == AccessOrder.Strided
                    ? _pattern.StridedOffset(index, _imageSize)
                    : (long)(NextRandom(ref random) % (ulong)slots) * _pattern.RequestSize;
                if (_pattern.Write)
                {
                    _image.Write(offset, span);
                }
                else
                {
                    _image.Read(offset, span);
                }
            }
        }
        catch (Exception e)
        {
            Interlocked.CompareExchange(ref _failure, e, null);
            Interlocked.Exchange(ref _nextRequest, _pattern.Count);
        }
    }

    /// <summary>xorshift64*: cheap, allocation-free, good enough to scatter offsets.</summary>
    private static ulong NextRandom(ref ulong state)
    {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        return state * 0x2545F4914F6CDD1DUL;
    }
}
