namespace LibvirtStorage.Images.Tests.Infrastructure;

/// <summary>How a guarded call ended.</summary>
internal enum OutcomeKind
{
    Success,
    ImageError,
    OtherException,
    Hang,
}

/// <summary>The end of a guarded call: its exception (if any) and how much it allocated on its thread.</summary>
internal sealed record Outcome(OutcomeKind Kind, Exception? Error, long AllocatedBytes)
{
    public ErrorKind? ImageErrorKind => (Error as ImageException)?.Kind;

    public override string ToString() => Kind switch
    {
        OutcomeKind.Success => $"success ({AllocatedBytes >> 20} MiB allocated)",
        OutcomeKind.Hang => "no answer within the time limit (hang)",
        _ => $"{Error!.GetType().Name} ({ImageErrorKind?.ToString() ?? "-"}): {Error.Message}\n{Error.StackTrace}",
    };
}

/// <summary>
/// Runs engine code on a dedicated thread with a time limit, catching everything, and measures what
/// it allocated: the tests of hostile input check "never a hang, never a stray exception type, never a
/// runaway allocation" with it.
/// </summary>
internal static class Guard
{
    /// <summary>No single open/read of a small hostile image may allocate more than this.</summary>
    public const long AllocationLimit = 512L << 20;

    public static Outcome Run(Action action, TimeSpan timeout)
    {
        Exception? error = null;
        long allocated = 0;
        var thread = new Thread(() =>
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            try
            {
                action();
            }
            catch (Exception e)
            {
                error = e;
            }

            allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        })
        {
            IsBackground = true,
            Name = "guarded engine call",
        };
        thread.Start();
        if (!thread.Join(timeout))
        {
            return new Outcome(OutcomeKind.Hang, null, 0);
        }

        OutcomeKind kind = error switch
        {
            null => OutcomeKind.Success,
            ImageException => OutcomeKind.ImageError,
            _ => OutcomeKind.OtherException,
        };
        return new Outcome(kind, error, allocated);
    }

    /// <summary>
    /// Opens an image (and its chain) and reads it: the first 8 MiB, the last 64 KiB, a few spots
    /// between, and the block status of the first clusters. Bounded work whatever the virtual size says.
    /// </summary>
    public static void OpenAndRead(string path, bool readOnly, Action<IBlockImage>? then = null)
    {
        using IBlockImage image = ImageOpener.Open(path, new ImageOpenOptions { ReadOnly = readOnly });
        long size = image.VirtualSize;
        byte[] buffer = new byte[1 << 20];
        for (long pos = 0; pos < Math.Min(size, 8L << 20); pos += buffer.Length)
        {
            image.Read(pos, buffer.AsSpan(0, (int)Math.Min(buffer.Length, size - pos)));
        }

        if (size > 65536)
        {
            image.Read(size - 65536, buffer.AsSpan(0, 65536));
            for (int i = 1; i < 8; i++)
            {
                image.Read((size / 8 * i) & ~511L, buffer.AsSpan(0, 4096));
            }
        }

        long at = 0;
        for (int i = 0; i < 64 && at < size; i++)
        {
            BlockStatus s = image.GetBlockStatus(at, size - at);
            if (s.Length <= 0)
            {
                break;
            }

            at += s.Length;
        }

        then?.Invoke(image);
    }
}
