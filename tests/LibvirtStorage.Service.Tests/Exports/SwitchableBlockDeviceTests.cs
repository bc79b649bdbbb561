using LibvirtStorage.Images;
using Xunit;

namespace LibvirtStorage.Service.Tests.Exports;

/// <summary>The gate of <see cref="SwitchableBlockDevice"/>: requests across switches are never lost, never run while quiesced, never reach an old image.</summary>
public sealed class SwitchableBlockDeviceTests
{
    private const long Size = 1 << 20;

    [Fact]
    public void Requests_racing_switches_all_complete_on_the_image_installed_at_the_time_and_none_runs_while_quiesced()
    {
        var images = new List<RecordingImage>();
        var first = new RecordingImage(0);
        images.Add(first);
        using var device = new SwitchableBlockDevice(readOnly: false, "disk", Size);
        device.Resume(new ImageBlockDevice(first, "disk"));

        const int Workers = 4, PerWorker = 3000, Switches = 40;
        int completed = 0;
        var errors = new List<Exception>();
        using var stop = new CancellationTokenSource();
        var workers = Enumerable.Range(0, Workers).Select(w => new Thread(() =>
        {
            byte[] block = new byte[512];
            try
            {
                for (int i = 0; i < PerWorker; i++)
                {
                    block[0] = (byte)w;
                    if (i % 3 == 2)
                    {
                        device.Read(w * 4096L, block);
                    }
                    else
                    {
                        device.Write(w * 4096L + (i % 8) * 512, block);
                    }

                    Interlocked.Increment(ref completed);
                }
            }
            catch (Exception ex)
            {
                lock (errors)
                {
                    errors.Add(ex);
                }
            }
        })).ToList();
        workers.ForEach(t => t.Start());

        for (int s = 1; s <= Switches && workers.Any(t => t.IsAlive); s++)
        {
            ImageBlockDevice? old = device.Quiesce();
            Assert.NotNull(old);
            Assert.Equal(0, device.InFlight);
            RecordingImage previous = images[^1];
            previous.Closed = true; // any call from now on is a bug
            Thread.Sleep(2); // requests pile up at the gate meanwhile; one reaching the old image is counted by it
            var next = new RecordingImage(s);
            images.Add(next);
            device.Resume(new ImageBlockDevice(next, "disk"));
            Thread.Sleep(1);
        }

        workers.ForEach(t => t.Join());
        Assert.Empty(errors);
        Assert.Equal(Workers * PerWorker, completed);
        Assert.Equal(Workers * PerWorker, images.Sum(i => i.Calls));
        Assert.All(images, i => Assert.Equal(0, i.CallsAfterClose));
        Assert.True(images.Count(i => i.Calls > 0) > 1, "the requests spanned several images");
    }

    [Fact]
    public void A_request_waits_at_the_closed_gate_and_runs_on_the_new_image()
    {
        var oldImage = new RecordingImage(0);
        var newImage = new RecordingImage(1);
        using var device = new SwitchableBlockDevice(readOnly: false, "a-serial-longer-than-twenty-bytes", Size);
        Assert.Equal("a-serial-longer-than", device.Serial);
        device.Resume(new ImageBlockDevice(oldImage, "x"));
        Assert.Same(oldImage, GetImage(device.Quiesce()));
        Assert.True(device.IsQuiesced);
        Assert.Throws<InvalidOperationException>(() => device.Quiesce());

        var waiting = new Thread(() => device.Write(0, new byte[512]));
        waiting.Start();
        Assert.False(waiting.Join(200), "the write ran while quiesced");
        device.Resume(new ImageBlockDevice(newImage, "x"));
        Assert.True(waiting.Join(10_000));
        Assert.Equal(0, oldImage.Calls);
        Assert.Equal(1, newImage.Calls);
        Assert.Throws<InvalidOperationException>(() => device.Resume(null));
    }

    [Fact]
    public void Without_an_image_requests_fail_with_an_IO_error_instead_of_hanging()
    {
        using var device = new SwitchableBlockDevice(readOnly: true, "disk", Size);
        device.Resume(null);
        Assert.Throws<IOException>(() => device.Read(0, new byte[512]));
        Assert.Equal(0, device.InFlight);
        Assert.True(device.IsReadOnly);
        Assert.Equal(Size, device.Capacity);
    }

    [Fact]
    public void The_request_path_allocates_nothing()
    {
        using var device = new SwitchableBlockDevice(readOnly: false, "disk", Size);
        device.Resume(new ImageBlockDevice(new RecordingImage(0), "disk"));
        byte[] block = new byte[512];
        for (int i = 0; i < 1000; i++)
        {
            device.Write(0, block);
        }

        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 10_000; i++)
        {
            device.Write(0, block);
            device.Read(0, block);
        }

        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
    }

    private static IBlockImage? GetImage(ImageBlockDevice? device) =>
        (IBlockImage?)typeof(ImageBlockDevice).GetField("_image", System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Instance)!.GetValue(device);

    /// <summary>An in-memory image that counts calls, concurrent calls, and calls made after it was marked closed.</summary>
    private sealed class RecordingImage(int generation) : IBlockImage
    {
        private int _calls;
        private int _afterClose;

        public int Generation { get; } = generation;

        public int Calls => Volatile.Read(ref _calls);

        public int CallsAfterClose => Volatile.Read(ref _afterClose);

        public volatile bool Closed;

        public string Path => $"/fake/{Generation}";

        public ImageFormat Format => ImageFormat.Raw;

        public long VirtualSize => Size;

        public bool IsReadOnly => false;

        public int ClusterSize => 512;

        public IBlockImage? Backing => null;

        public void Read(long offset, Span<byte> destination) => Call();

        public void Write(long offset, ReadOnlySpan<byte> source) => Call();

        public void WriteZeroes(long offset, long length, bool unmap) => Call();

        public void Discard(long offset, long length) => Call();

        public void Flush()
        {
        }

        public void Resize(long newSize) => throw new NotSupportedException();

        public BlockStatus GetBlockStatus(long offset, long length) => throw new NotSupportedException();

        public void Dispose()
        {
        }

        private void Call()
        {
            if (Closed)
            {
                Interlocked.Increment(ref _afterClose);
            }

            Thread.SpinWait(50);
            Interlocked.Increment(ref _calls);
        }
    }
}
