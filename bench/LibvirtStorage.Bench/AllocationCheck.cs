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
/// N requests on one thread, measuring GC.GetAllocatedBytesForCurrentThread (this thread's requests only)
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
        string overlay = images.Prepare(ImageKind.Overlay, recreate: true);
        results.Add(Measure("read 4K from raw backing via overlay, cache=none", overlay, direct: true, write: false, requests));
        return results;
    }

    private static AllocationResult Measure(string name, string path, bool direct, bool write, int requests)
    {
        using IBlockImage image = ImageOpener.Open(path, new ImageOpenOptions { Direct = direct, Format = ImageFormat.Qcow2 });
        void* buffer = NativeMemory.AlignedAlloc(RequestSize, 4096);
        try
        {
            // SAFETY: buffer is a fresh allocation of RequestSize bytes, freed only after its last use below.
            var span = new Span<byte>(buffer, RequestSize);
            span.Fill(0x5a);
            long range = Math.Min(image.VirtualSize, (long)requests * RequestSize);
            Loop(image, span, write, requests, range);

            long threadBefore = GC.GetAllocatedBytesForCurrentThread();
            long totalBefore = GC.GetTotalAllocatedBytes(precise: true);
            Loop(image, span, write, requests, range);
            long threadBytes = GC.GetAllocatedBytesForCurrentThread() - threadBefore;
            long totalBytes = GC.GetTotalAllocatedBytes(precise: true) - totalBefore;
            return new AllocationResult(name, requests, threadBytes, totalBytes);
        }
        finally
        {
            NativeMemory.AlignedFree(buffer);
        }
    }

    private static void Loop(IBlockImage image, Span<byte> buffer, bool write, int requests, long range)
    {
        for (int i = 0; i < requests; i++)
        {
            long offset = (long)i * RequestSize % range;
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
