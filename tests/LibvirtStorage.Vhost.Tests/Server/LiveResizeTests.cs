using System.Diagnostics;
using LibvirtStorage.Vhost.Blk;
using LibvirtStorage.Vhost.Tests.Backend;
using Xunit;

namespace LibvirtStorage.Vhost.Tests.Server;

/// <summary>
/// Live resize through the server: <see cref="VhostUserBlkServer.NotifyCapacityChanged"/> sends CONFIG_CHANGE_MSG,
/// the QEMU-shaped front-end re-reads the config and acks, and requests past the old end work at once.
/// </summary>
public sealed class LiveResizeTests : IDisposable
{
    private const int OldCapacity = 1 << 20, NewCapacity = 3 << 20;
    private readonly string _dir = Directory.CreateTempSubdirectory("vhost-blk-resize-").FullName;
    private readonly ListLogger _log = new();

    private string SocketPath => Path.Combine(_dir, "blk.sock");

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private VhostUserBlkServer Listen(GrowableBlockDevice device, TimeSpan? ackTimeout = null)
    {
        var options = new VhostUserBlkOptions { BackendAckTimeout = ackTimeout ?? TimeSpan.FromSeconds(5) };
        var server = VhostUserBlkServer.Listen(SocketPath, device, options, _log);
        server.Start();
        return server;
    }

    private static byte[] Pattern(int length, byte seed) => [.. Enumerable.Range(0, length).Select(i => (byte)(seed ^ (i * 13)))];

    [Fact]
    public async Task Growing_notifies_the_front_end_which_sees_the_new_capacity_and_io_past_the_old_end_works()
    {
        var device = new GrowableBlockDevice(OldCapacity);
        await using VhostUserBlkServer server = Listen(device);
        using BlkGuest guest = BlkGuest.Connect(SocketPath).Start();
        const ulong pastOldEnd = OldCapacity / 512 + 8;
        Assert.Equal((byte)VirtioBlkStatus.IoError, guest.Request(VirtioBlkRequestType.Out, pastOldEnd, new byte[4096]).Status);

        device.Grow(NewCapacity);
        Assert.Equal(ConfigChangeNotification.Acknowledged, server.NotifyCapacityChanged());

        // The ack came after the front-end's GET_CONFIG, so it has seen the new capacity by now.
        Assert.True(guest.ConfigChanged.IsSet);
        Assert.Equal(NewCapacity / 512, guest.ConfigCapacity);
        Assert.Equal((ulong)NewCapacity / 512, BitConverter.ToUInt64(guest.GetConfig(), 0));
        byte[] data = Pattern(8192, 0x3c);
        Assert.Equal((byte)VirtioBlkStatus.Ok, guest.Request(VirtioBlkRequestType.Out, pastOldEnd, data).Status);
        Assert.Equal(data, guest.Request(VirtioBlkRequestType.In, pastOldEnd, inputLength: data.Length).Input);
        Assert.Equal(data, device.Snapshot((long)pastOldEnd * 512, data.Length));

        // One request across the old end, and the last sector of the new capacity.
        byte[] across = Pattern(4096, 0x5a);
        Assert.Equal((byte)VirtioBlkStatus.Ok, guest.Request(VirtioBlkRequestType.Out, OldCapacity / 512 - 4, across).Status);
        Assert.Equal(across, guest.Request(VirtioBlkRequestType.In, OldCapacity / 512 - 4, inputLength: 4096).Input);
        Assert.Equal((byte)VirtioBlkStatus.Ok, guest.Request(VirtioBlkRequestType.In, NewCapacity / 512 - 1, inputLength: 512).Status);
        Assert.Equal((byte)VirtioBlkStatus.IoError, guest.Request(VirtioBlkRequestType.In, NewCapacity / 512, inputLength: 512).Status);
        Assert.Contains($"capacity now {NewCapacity} bytes; config change: Acknowledged", _log.Text, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Without_a_front_end_nothing_is_sent_and_the_next_front_end_reads_the_new_capacity()
    {
        var device = new GrowableBlockDevice(OldCapacity);
        await using VhostUserBlkServer server = Listen(device);
        device.Grow(NewCapacity);
        Assert.Equal(ConfigChangeNotification.NoFrontend, server.NotifyCapacityChanged());

        using BlkGuest guest = BlkGuest.Connect(SocketPath).Start();
        Assert.Equal((ulong)NewCapacity / 512, BitConverter.ToUInt64(guest.GetConfig(), 0));
        Assert.Equal((byte)VirtioBlkStatus.Ok, guest.Request(VirtioBlkRequestType.Out, NewCapacity / 512 - 8, new byte[4096]).Status);
    }

    [Fact]
    public async Task A_front_end_without_a_back_end_channel_is_not_notified_but_reads_the_new_capacity()
    {
        var device = new GrowableBlockDevice(OldCapacity);
        await using VhostUserBlkServer server = Listen(device);
        using BlkGuest guest = BlkGuest.Connect(SocketPath).Start(backendChannel: null);

        device.Grow(NewCapacity);
        Assert.Equal(ConfigChangeNotification.NoChannel, server.NotifyCapacityChanged());
        Assert.Equal((ulong)NewCapacity / 512, BitConverter.ToUInt64(guest.GetConfig(), 0));
        Assert.Equal((byte)VirtioBlkStatus.Ok, guest.Request(VirtioBlkRequestType.Out, OldCapacity / 512, new byte[512]).Status);
    }

    [Fact]
    public async Task A_shrunk_device_is_refused_with_a_clear_error()
    {
        var device = new GrowableBlockDevice(NewCapacity);
        await using VhostUserBlkServer server = Listen(device);
        using BlkGuest guest = BlkGuest.Connect(SocketPath).Start();
        device.Grow(OldCapacity); // the fake lets it shrink; the server must not announce that

        var error = Assert.Throws<InvalidOperationException>(() => server.NotifyCapacityChanged());
        Assert.Contains("shrinking a live export is not supported", error.Message, StringComparison.Ordinal);
        Assert.False(guest.ConfigChanged.IsSet);
    }

    [Fact]
    public async Task A_front_end_that_never_acks_costs_the_timeout_and_its_queue_keeps_working()
    {
        var device = new GrowableBlockDevice(OldCapacity);
        TimeSpan timeout = TimeSpan.FromMilliseconds(300);
        await using VhostUserBlkServer server = Listen(device, timeout);
        using BlkGuest guest = BlkGuest.Connect(SocketPath).Start(BackendChannelBehaviour.NeverAck);

        device.Grow(NewCapacity);
        var clock = Stopwatch.StartNew();
        Assert.Equal(ConfigChangeNotification.TimedOut, server.NotifyCapacityChanged());
        Assert.InRange(clock.Elapsed, timeout * 0.9, TimeSpan.FromSeconds(5));
        Assert.Contains("no acknowledgement of CONFIG_CHANGE_MSG", _log.Text, StringComparison.Ordinal);
        Assert.Equal((byte)VirtioBlkStatus.Ok, guest.Request(VirtioBlkRequestType.Out, OldCapacity / 512, new byte[512]).Status);
        Assert.Equal((ulong)NewCapacity / 512, BitConverter.ToUInt64(guest.GetConfig(), 0));
        Assert.True(server.IsServing);
    }

    /// <summary>An in-memory device whose size the test changes (between requests, not during them).</summary>
    private sealed class GrowableBlockDevice(int capacity) : IBlockDevice
    {
        private byte[] _data = new byte[capacity];

        public long Capacity => Volatile.Read(ref _data).Length;

        public int LogicalBlockSize => 512;

        public bool IsReadOnly => false;

        public string Serial => "grow";

        public void Grow(int newCapacity)
        {
            var data = new byte[newCapacity];
            _data.AsSpan(0, Math.Min(_data.Length, newCapacity)).CopyTo(data);
            Volatile.Write(ref _data, data);
        }

        public byte[] Snapshot(long offset, int length) => _data.AsSpan((int)offset, length).ToArray();

        public void Read(long offset, Span<byte> destination) => _data.AsSpan((int)offset, destination.Length).CopyTo(destination);

        public void Write(long offset, ReadOnlySpan<byte> source) => source.CopyTo(_data.AsSpan((int)offset));

        public void Flush()
        {
        }

        public void Discard(long offset, long length)
        {
        }

        public void WriteZeroes(long offset, long length, bool unmap) => _data.AsSpan((int)offset, (int)length).Clear();
    }
}
