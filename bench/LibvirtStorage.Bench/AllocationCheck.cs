using System.Runtime.InteropServices;
using LibvirtStorage.Images;

namespace LibvirtStorage.Bench;

/// <summary>One allocation measurement: managed bytes allocated per request on a warmed image.</summary>
internal sealed record AllocationResult(string Name, int Requests, long ThreadBytes, long ProcessBytes)
{
    public double ThreadBytesPerRequest => (double)ThreadBytes / Requests;

    public double ProcessBytesPerRequest => (double)ProcessBytes / Requests;
}

/// <summary>
/// The zero-allocation check of the fast path (issue 2: "no allocation per request"): after a warm-up pass,
/// N requests on one thread (fast paths; plus allocating writes for information), measuring GC.GetAllocatedBytesForCurrentThread (this thread's requests only)
/// and GC.GetTotalAllocatedBytes(precise) (anything the engine allocates on other threads too).
/// </summary>
internal static unsafe class AllocationCheck
{
    private const int RequestSize = 4096;

    public static IReadOnlyList<AllocationResult> Run(ScratchImages images, int requests)
    {
        var results = new List<AllocationResult>();
        string allocated = images.Prepare(ImageKind.Allocated, recreate: false);
        foreach (bool direct in new[] { false, true })
        {
            string cache = direct ? "none" : "writeback";
            results.Add(Measure($"read 4K allocated cluster, cache={cache}", allocated, direct, write: false, requests));
            results.Add(Measure($"write 4K allocated cluster, cache={cache}", allocated, direct, write: true, requests));
        }

        string fresh = images.Prepare(ImageKind.Fresh, recreate: true);
        results.Add(Measure("read 4K unallocated (zeroes), cache=none", fresh, direct: true, write: false, requests));
        fresh = images.Prepare(ImageKind.Fresh, recreate: true);
        results.Add(Measure("write 64K allocating a new cluster each (slow path), cache=none", fresh, direct: true, write: true, requests / 10, 65536, fresh: true));
        string overlay = images.Prepare(ImageKind.Overlay, recreate: true);
        results.Add(Measure("read 4K from raw backing via overlay, cache=none", overlay, direct: true, write: false, requests));
        return results;
    }

    /// <remarks>
    /// The warm-up pass runs the same requests first (so tiered JIT, pools and caches are warm). With
    /// <paramref name="fresh"/> it runs over the first half of the image and the measured pass over the second
    /// half, so every measured write still allocates a new cluster.
    /// </remarks>
    private static AllocationResult Measure(string name, string path, bool direct, bool write, int requests, int size = RequestSize, bool fresh = false)
    {
        using IBlockImage image = ImageOpener.Open(path, new ImageOpenOptions { Direct = direct, Format = ImageFormat.Qcow2 });
        void* buffer = NativeMemory.AlignedAlloc((nuint)size, 4096);
        try
        {
            // SAFETY: buffer is a fresh allocation of size bytes, freed only after its last use below.
            var span = new Span<byte>(buffer, size);
            span.Fill(0x5a);
            long range = Math.Min(fresh ? image.VirtualSize / 2 : image.VirtualSize, (long)requests * size);
            Loop(image, span, write, requests, range, 0);

            long threadBefore = GC.GetAllocatedBytesForCurrentThread();
            long totalBefore = GC.GetTotalAllocatedBytes(precise: true);
            Loop(image, span, write, requests, range, fresh ? image.VirtualSize / 2 : 0);
            long threadBytes = GC.GetAllocatedBytesForCurrentThread() - threadBefore;
            long totalBytes = GC.GetTotalAllocatedBytes(precise: true) - totalBefore;
            return new AllocationResult(name, requests, threadBytes, totalBytes);
        }
        finally
        {
            NativeMemory.AlignedFree(buffer);
        }
    }

    private static void Loop(IBlockImage image, Span<byte> buffer, bool write, int requests, long range, long start)
    {
        for (int i = 0; i < requests; i++)
        {
            long offset = start + ((long)i * buffer.Length % range);
            if (write)
            {
                image.Write(offset, buffer);
            }
            else
            {
                image.Read(offset, buffer);
            }
        }
    }
}
