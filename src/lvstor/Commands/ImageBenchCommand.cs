using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using LibvirtStorage.Images;

namespace LibvirtStorage.Cli.Commands;

/// <summary>
/// <c>lvstor image bench</c>: the request pattern of <c>qemu-img bench</c> (strided, not random) through
/// the engine, so the two can be run side by side with the same options.
/// </summary>
internal static class ImageBenchCommand
{
    public static Command Build(CliContext context)
    {
        Option<string?> format = CommonOptions.Format();
        var count = new Option<string>("--count", "-c") { Description = "Requests in total", DefaultValueFactory = _ => "75000" };
        var depth = new Option<int>("--depth", "-d") { Description = "Requests in flight (worker threads)", DefaultValueFactory = _ => 64 };
        var offset = new Option<string>("--offset", "-o") { Description = "First offset", DefaultValueFactory = _ => "0" };
        var size = new Option<string>("--size", "-s") { Description = "Bytes per request", DefaultValueFactory = _ => "4k" };
        var step = new Option<string?>("--step-size", "-S") { Description = "Distance between request offsets (default: the request size)" };
        var write = new Option<bool>("--write", "-w") { Description = "Write instead of read" };
        var pattern = new Option<int>("--pattern") { Description = "Byte written by -w", DefaultValueFactory = _ => 0 };
        Option<string?> cache = CommonOptions.Cache();
        Argument<string> file = CommonOptions.File();
        var command = new Command("bench", "Run qemu-img bench's request pattern through the engine")
        {
            format, count, depth, offset, size, step, write, pattern, cache, file,
        };
        command.SetAction(r => CliErrors.Guard(context, () =>
        {
            var spec = new BenchSpec(
                CliParsing.ParseSize(r.GetValue(count)!),
                Math.Max(1, r.GetValue(depth)),
                CliParsing.ParseSize(r.GetValue(offset)!),
                checked((int)CliParsing.ParseSize(r.GetValue(size)!)),
                r.GetValue(step) is string s ? CliParsing.ParseSize(s) : null,
                r.GetValue(write),
                (byte)r.GetValue(pattern));
            var options = new ImageOpenOptions
            {
                ReadOnly = !spec.Write,
                Format = CliParsing.ParseFormat(r.GetValue(format)),
                Direct = CommonOptions.IsDirect(r, cache),
            };
            using IBlockImage image = ImageOpener.Open(r.GetValue(file)!, options);
            long stepSize = spec.Step ?? spec.Size;
            context.Out.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"Sending {spec.Count} {(spec.Write ? "write" : "read")} requests, {spec.Size} bytes each, {spec.Depth} in parallel (starting at offset {spec.Offset}, step size {stepSize})"));
            TimeSpan elapsed = Run(image, spec with { Step = stepSize });
            double seconds = elapsed.TotalSeconds;
            context.Out.WriteLine(string.Create(CultureInfo.InvariantCulture, $"Run completed in {seconds:F3} seconds."));
            context.Out.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{spec.Count / seconds:F0} IOPS, {spec.Count * (double)spec.Size / seconds / (1 << 20):F1} MiB/s"));
            return 0;
        }));
        return command;
    }

    private sealed record BenchSpec(long Count, int Depth, long Offset, int Size, long? Step, bool Write, byte Pattern);

    private static TimeSpan Run(IBlockImage image, BenchSpec spec)
    {
        long span = image.VirtualSize - spec.Size;
        if (span < 0)
        {
            throw new CliUsageException($"request size {spec.Size} is larger than the image");
        }

        long next = -1;
        var workers = new Thread[spec.Depth];
        Exception? failure = null;
        var clock = Stopwatch.StartNew();
        for (int t = 0; t < workers.Length; t++)
        {
            workers[t] = new Thread(() =>
            {
                try
                {
                    Work(image, spec, span, ref next);
                }
                catch (Exception e) when (CliErrors.IsExpected(e))
                {
                    Interlocked.CompareExchange(ref failure, e, null);
                }
            });
            workers[t].Start();
        }

        foreach (Thread w in workers)
        {
            w.Join();
        }

        if (spec.Write)
        {
            image.Flush();
        }

        clock.Stop();
        if (failure is not null)
        {
            throw failure;
        }

        return clock.Elapsed;
    }

    private static void Work(IBlockImage image, BenchSpec spec, long span, ref long next)
    {
        // A pinned buffer aligned to 4 KiB, so O_DIRECT requests need no bounce buffer.
        byte[] array = GC.AllocateUninitializedArray<byte>(spec.Size + 4096, pinned: true);
        long address = Marshal.UnsafeAddrOfPinnedArrayElement(array, 0).ToInt64();
        Span<byte> buffer = array.AsSpan((int)((4096 - (address % 4096)) % 4096), spec.Size);
        buffer.Fill(spec.Pattern);
        long step = spec.Step!.Value;
        while (true)
        {
            long i = Interlocked.Increment(ref next);
            if (i >= spec.Count)
            {
                return;
            }

            long at = span == 0 ? 0 : (spec.Offset + (i * step)) % span;
            if (spec.Write)
            {
                image.Write(at, buffer);
            }
            else
            {
                image.Read(at, buffer);
            }
        }
    }
}
