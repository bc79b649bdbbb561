using System.Globalization;
using LibvirtStorage.CrashWriter;
using LibvirtStorage.Images;

// Usage: LibvirtStorage.CrashWriter <image> <seed> <flush-every> [max-writes]
// Performs WritePlan.Generate(seed) on the image through the engine, flushing after every
// <flush-every> writes and printing "FLUSHED <n>" once writes 0..n-1 are durable. The crash-safety
// test SIGKILLs it at random points.
if (args.Length < 3)
{
    Console.Error.WriteLine("usage: LibvirtStorage.CrashWriter <image> <seed> <flush-every> [max-writes]");
    return 64;
}

string path = args[0];
int seed = int.Parse(args[1], CultureInfo.InvariantCulture);
int flushEvery = int.Parse(args[2], CultureInfo.InvariantCulture);
int maxWrites = args.Length > 3 ? int.Parse(args[3], CultureInfo.InvariantCulture) : int.MaxValue;

try
{
    using IBlockImage image = ImageOpener.Open(path);
    Console.Out.WriteLine("OPEN");
    int done = 0;
    foreach (PlannedWrite w in WritePlan.Generate(seed, image.VirtualSize, image.ClusterSize))
    {
        if (done == maxWrites)
        {
            break;
        }

        image.Write(w.Offset, w.Data());
        done++;
        if (done % flushEvery == 0)
        {
            image.Flush();
            Console.Out.WriteLine($"FLUSHED {done}");
        }
    }

    image.Flush();
    Console.Out.WriteLine($"DONE {done}");
    return 0;
}
catch (ImageException e)
{
    Console.Error.WriteLine($"ERROR {e.Kind}: {e}");
    return 2;
}
