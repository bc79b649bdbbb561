using LibvirtStorage.Vhost;

namespace LibvirtStorage.Service;

/// <summary>
/// The <see cref="IBlockDevice"/> an export serves: the current image behind a gate, so the service can swap the
/// image (a snapshot's new overlay, a resized or reverted chain) between two requests while a guest runs.
/// </summary>
/// <remarks>
/// <para>Every request enters the gate, runs on the current image and leaves. <see cref="Quiesce"/> closes the gate:
/// new requests wait (the guest sees latency, never an error), the requests in flight finish, and the image is
/// handed back to the caller, who flushes and may close it. <see cref="Resume"/> installs an image (the same or a
/// new one) and opens the gate; the waiting requests then run on it.</para>
/// <para>The hot path is two interlocked operations on one counter and a volatile read, with no lock and no
/// allocation. Closing races with entering like Dekker's protocol: an entrant increments the counter and then
/// reads the flag; the quiescer sets the flag and then reads the counter (both through full fences), so either the
/// entrant sees the gate closed and backs out, or the quiescer sees it and waits for it to leave.</para>
/// <para><see cref="Capacity"/>, <see cref="IsReadOnly"/> and <see cref="Serial"/> stay answerable while quiesced:
/// the capacity is the last installed image's, the mode and serial are fixed for the device's life (the export
/// rebuilds its server to change them).</para>
/// </remarks>
public sealed class SwitchableBlockDevice : IBlockDevice, IDisposable
{
    private readonly ManualResetEventSlim _open = new(initialState: false);
    private readonly ManualResetEventSlim _drained = new(initialState: true);
    private readonly Lock _switch = new();
    private ImageBlockDevice? _current;
    private WriteTracker? _tracker;
    private int _inFlight;
    private int _closed = 1;
    private long _capacity;

    /// <summary>A closed device: requests wait until <see cref="Resume"/> installs an image.</summary>
    /// <param name="readOnly">Whether the export refuses writes (VIRTIO_BLK_F_RO), whatever image is installed.</param>
    /// <param name="serial">The device ID the guest reads (cut to 20 bytes).</param>
    /// <param name="capacity">The capacity reported until an image is installed.</param>
    public SwitchableBlockDevice(bool readOnly, string serial, long capacity)
    {
        ArgumentNullException.ThrowIfNull(serial);
        IsReadOnly = readOnly;
        Serial = serial.Length > ImageBlockDevice.SerialBytes ? serial[..ImageBlockDevice.SerialBytes] : serial;
        _capacity = capacity;
    }

    /// <summary>The installed image, or null while quiesced.</summary>
    public ImageBlockDevice? Current => Volatile.Read(ref _closed) == 0 ? Volatile.Read(ref _current) : null;

    /// <summary>Whether the gate is closed (between <see cref="Quiesce"/> and <see cref="Resume"/>).</summary>
    public bool IsQuiesced => Volatile.Read(ref _closed) != 0;

    /// <summary>Requests running now (for tests and diagnostics).</summary>
    public int InFlight => Volatile.Read(ref _inFlight);

    /// <summary>
    /// Where guest writes, write-zeroes and discards are marked when they complete (a job copying the volume), or
    /// null. A request marks before it leaves the gate, so after <see cref="Quiesce"/> every completed change is marked.
    /// </summary>
    public WriteTracker? Tracker
    {
        get => Volatile.Read(ref _tracker);
        set => Volatile.Write(ref _tracker, value);
    }

    /// <inheritdoc/>
    public long Capacity => Volatile.Read(ref _capacity);

    /// <inheritdoc/>
    public int LogicalBlockSize => 512;

    /// <inheritdoc/>
    public bool IsReadOnly { get; }

    /// <inheritdoc/>
    public string Serial { get; }

    /// <summary>
    /// Closes the gate, waits until the requests in flight have finished and returns the image (null if none was
    /// installed); the caller now owns it, and flushes it before closing it. New requests wait until <see cref="Resume"/>.
    /// </summary>
    /// <exception cref="InvalidOperationException">The device is already quiesced.</exception>
    public ImageBlockDevice? Quiesce()
    {
        lock (_switch)
        {
            if (Volatile.Read(ref _closed) != 0)
            {
                throw new InvalidOperationException("the export is already quiesced");
            }

            _open.Reset();
            Interlocked.Exchange(ref _closed, 1);
            while (true)
            {
                _drained.Reset();
                if (Volatile.Read(ref _inFlight) == 0)
                {
                    break;
                }

                _drained.Wait();
            }

            return Interlocked.Exchange(ref _current, null);
        }
    }

    /// <summary>
    /// Installs <paramref name="image"/> (null: requests fail with an I/O error until the next switch) and opens
    /// the gate; waiting requests run on it.
    /// </summary>
    /// <exception cref="InvalidOperationException">The device is not quiesced.</exception>
    public void Resume(ImageBlockDevice? image)
    {
        lock (_switch)
        {
            if (Volatile.Read(ref _closed) == 0)
            {
                throw new InvalidOperationException("the export is not quiesced");
            }

            Volatile.Write(ref _current, image);
            if (image is not null)
            {
                Volatile.Write(ref _capacity, image.Capacity);
            }

            Interlocked.Exchange(ref _closed, 0);
            _open.Set();
        }
    }

    /// <inheritdoc/>
    public void Read(long offset, Span<byte> destination)
    {
        ImageBlockDevice image = Enter();
        try
        {
            image.Read(offset, destination);
        }
        finally
        {
            Leave();
        }
    }

    /// <inheritdoc/>
    public void Write(long offset, ReadOnlySpan<byte> source)
    {
        ImageBlockDevice image = Enter();
        try
        {
            image.Write(offset, source);
        }
        finally
        {
            Volatile.Read(ref _tracker)?.Mark(offset, source.Length);
            Leave();
        }
    }

    /// <inheritdoc/>
    public void Flush()
    {
        ImageBlockDevice image = Enter();
        try
        {
            image.Flush();
        }
        finally
        {
            Leave();
        }
    }

    /// <inheritdoc/>
    public void Discard(long offset, long length)
    {
        ImageBlockDevice image = Enter();
        try
        {
            image.Discard(offset, length);
        }
        finally
        {
            Volatile.Read(ref _tracker)?.Mark(offset, length);
            Leave();
        }
    }

    /// <inheritdoc/>
    public void WriteZeroes(long offset, long length, bool unmap)
    {
        ImageBlockDevice image = Enter();
        try
        {
            image.WriteZeroes(offset, length, unmap);
        }
        finally
        {
            Volatile.Read(ref _tracker)?.Mark(offset, length);
            Leave();
        }
    }

    /// <summary>Releases the events; the installed image is not owned (quiesce first to take it back).</summary>
    public void Dispose()
    {
        _open.Dispose();
        _drained.Dispose();
    }

    private ImageBlockDevice Enter()
    {
        while (true)
        {
            Interlocked.Increment(ref _inFlight);
            if (Volatile.Read(ref _closed) == 0)
            {
                return Volatile.Read(ref _current) ?? NoImage();
            }

            Leave();
            _open.Wait();
        }
    }

    private void Leave()
    {
        if (Interlocked.Decrement(ref _inFlight) == 0 && Volatile.Read(ref _closed) != 0)
        {
            _drained.Set();
        }
    }

    private ImageBlockDevice NoImage()
    {
        Leave();
        throw new IOException("the volume's image is not open (see the service log)");
    }
}
