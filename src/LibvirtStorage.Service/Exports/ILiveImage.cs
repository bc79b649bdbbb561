using LibvirtStorage.Images;

namespace LibvirtStorage.Service;

/// <summary>
/// A volume's open chain, lent to a job that works on it while a guest may use it (see
/// <see cref="IVolumeExports.Lend"/>). Disposing gives it back (and stops tracking).
/// </summary>
public interface ILiveImage : IDisposable
{
    /// <summary>The top of the chain, its backing images open beneath it; writable.</summary>
    IBlockImage Image { get; }

    /// <summary>
    /// Holds the guest still: requests in flight finish, new ones wait until the result is disposed. The image stays
    /// open; use it for steps that must not interleave with guest requests, and keep them short (the guest waits).
    /// </summary>
    IDisposable Pause();

    /// <summary>From now on guest writes, write-zeroes and discards are marked in <paramref name="tracker"/> (null: no longer).</summary>
    void Track(WriteTracker? tracker);

    /// <summary>Whether the guest has requests in flight now (a job at idle priority waits for a gap).</summary>
    bool GuestBusy { get; }
}

/// <summary>A chain the job opened itself (no export holds the volume): nothing to pause or track; disposing flushes and closes it.</summary>
internal sealed class OwnedLiveImage(IBlockImage image) : ILiveImage
{
    public IBlockImage Image => image;

    public IDisposable Pause() => NoPause.Instance;

    public void Track(WriteTracker? tracker)
    {
    }

    public bool GuestBusy => false;

    public void Dispose()
    {
        try
        {
            image.Flush();
        }
        finally
        {
            image.Dispose();
        }
    }

    private sealed class NoPause : IDisposable
    {
        public static readonly NoPause Instance = new();

        public void Dispose()
        {
        }
    }
}
