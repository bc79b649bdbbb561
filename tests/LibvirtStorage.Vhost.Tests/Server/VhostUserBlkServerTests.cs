using System.Text;
using LibvirtStorage.Vhost.Blk;
using LibvirtStorage.Vhost.Protocol;
using LibvirtStorage.Vhost.Tests.Backend;
using LibvirtStorage.Vhost.Tests.Blk;
using LibvirtStorage.Vhost.Tests.Protocol;
using Xunit;

namespace LibvirtStorage.Vhost.Tests.Server;

/// <summary>The server over a real UNIX socket path, a memfd guest and an in-memory <see cref="FakeBlockDevice"/>.</summary>
public sealed class VhostUserBlkServerTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("vhost-blk-server-").FullName;
    private readonly ListLogger _log = new();

    private string SocketPath => Path.Combine(_dir, "blk.sock");

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private VhostUserBlkServer Listen(FakeBlockDevice device, ushort queues = 1, int queueThreads = 0)
    {
        var options = new VhostUserBlkOptions { NumQueues = queues, QueueThreads = queueThreads };
        var server = VhostUserBlkServer.Listen(SocketPath, device, options, _log);
        server.Start();
        return server;
    }

    private static byte[] Pattern(int length, byte seed) => [.. Enumerable.Range(0, length).Select(i => (byte)(seed + (i * 7)))];

    [Fact]
    public async Task Out_then_in_flush_and_get_id_through_the_socket()
    {
        var device = new FakeBlockDevice(serial: "fake-serial-42");
        await using VhostUserBlkServer server = Listen(device, queues: 2);
        using BlkGuest guest = BlkGuest.Connect(SocketPath).Start();

        byte[] data = Pattern(8192, 3);
        Assert.Equal(((byte)VirtioBlkStatus.Ok, 1u), Pick(guest.Request(VirtioBlkRequestType.Out, 16, data)));
        Assert.Equal(data, device.Data.AsSpan(16 * 512, 8192).ToArray());
        var read = guest.Request(VirtioBlkRequestType.In, 16, inputLength: 8192);
        Assert.Equal(((byte)VirtioBlkStatus.Ok, 8193u), Pick(read));
        Assert.Equal(data, read.Input);
        Assert.Equal((byte)VirtioBlkStatus.Ok, guest.Request(VirtioBlkRequestType.Flush, 0).Status);
        Assert.Equal(1, device.Flushes);
        var id = guest.Request(VirtioBlkRequestType.GetId, 0, inputLength: 20);
        Assert.Equal(((byte)VirtioBlkStatus.Ok, 21u), Pick(id));
        Assert.Equal("fake-serial-42", Encoding.ASCII.GetString(id.Input).TrimEnd('\0'));

        Assert.NotEqual(0UL, guest.Features & VirtioBlkFeatures.Flush);
        byte[] config = guest.GetConfig();
        Assert.Equal((ulong)device.Capacity / 512, BitConverter.ToUInt64(config, 0));
        Assert.Equal(2, BitConverter.ToUInt16(config, 34)); // num_queues (virtio 1.2 §5.2.4)
    }

    [Fact]
    public async Task Four_queues_on_one_queue_thread_serve_the_guest()
    {
        var device = new FakeBlockDevice();
        await using VhostUserBlkServer server = Listen(device, queues: 4, queueThreads: 1);
        using BlkGuest guest = BlkGuest.Connect(SocketPath).Start();

        byte[] data = Pattern(4096, 9);
        Assert.Equal((byte)VirtioBlkStatus.Ok, guest.Request(VirtioBlkRequestType.Out, 8, data).Status);
        Assert.Equal(data, guest.Request(VirtioBlkRequestType.In, 8, inputLength: 4096).Input);
        Assert.Equal(data, device.Data.AsSpan(8 * 512, 4096).ToArray());
    }

    [Fact]
    public void A_negative_queue_thread_count_is_refused()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() =>
            VhostUserBlkServer.Listen(SocketPath, new FakeBlockDevice(), new VhostUserBlkOptions { QueueThreads = -1 }, _log));
        Assert.False(File.Exists(SocketPath));
    }

    [Fact]
    public async Task A_read_only_device_refuses_writes_with_ioerr()
    {
        var device = new FakeBlockDevice(readOnly: true);
        device.Data[0] = 0x5a;
        await using VhostUserBlkServer server = Listen(device);
        using BlkGuest guest = BlkGuest.Connect(SocketPath).Start();

        Assert.NotEqual(0UL, guest.Features & VirtioBlkFeatures.ReadOnly);
        Assert.Equal(((byte)VirtioBlkStatus.IoError, 1u), Pick(guest.Request(VirtioBlkRequestType.Out, 0, new byte[512])));
        Assert.Equal(0, device.Writes);
        Assert.Equal(0x5a, device.Data[0]);
        Assert.Equal(0x5a, guest.Request(VirtioBlkRequestType.In, 0, inputLength: 512).Input[0]);
    }

    [Fact]
    public async Task A_malformed_chain_completes_with_length_0_and_the_queue_goes_on()
    {
        var device = new FakeBlockDevice();
        await using VhostUserBlkServer server = Listen(device);
        using BlkGuest guest = BlkGuest.Connect(SocketPath).Start();

        // IN with a device-readable data buffer: WrongDirection, status byte untouched.
        Assert.Equal((0xff, 0u), Pick(guest.Request(VirtioBlkRequestType.In, 0, new byte[512])));
        Assert.Equal((byte)VirtioBlkStatus.Ok, guest.Request(VirtioBlkRequestType.In, 0, inputLength: 512).Status);
    }

    [Fact]
    public async Task A_second_front_end_is_closed_while_the_first_keeps_working()
    {
        var device = new FakeBlockDevice();
        await using VhostUserBlkServer server = Listen(device);
        using BlkGuest first = BlkGuest.Connect(SocketPath).Start();

        using (BlkGuest second = BlkGuest.Connect(SocketPath))
        {
            AssertClosed(second);
        }

        byte[] data = Pattern(512, 9);
        Assert.Equal((byte)VirtioBlkStatus.Ok, first.Request(VirtioBlkRequestType.Out, 1, data).Status);
        Assert.Equal(data, first.Request(VirtioBlkRequestType.In, 1, inputLength: 512).Input);
        Assert.Equal(1, server.ConnectionCount);
        Assert.Contains("a second front-end connected", _log.Text, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_front_end_that_reconnects_at_once_is_served()
    {
        var device = new FakeBlockDevice();
        await using VhostUserBlkServer server = Listen(device);
        byte[] data = Pattern(4096, 1);
        using (BlkGuest first = BlkGuest.Connect(SocketPath).Start())
            Assert.Equal((byte)VirtioBlkStatus.Ok, first.Request(VirtioBlkRequestType.Out, 8, data).Status);

        using BlkGuest again = BlkGuest.Connect(SocketPath).Start();
        Assert.Equal(data, again.Request(VirtioBlkRequestType.In, 8, inputLength: 4096).Input);
        Assert.Equal(2, server.ConnectionCount);
    }

    [Fact]
    public async Task Stop_ends_the_served_connection_and_removes_the_socket()
    {
        var device = new FakeBlockDevice();
        VhostUserBlkServer server = Listen(device);
        using BlkGuest guest = BlkGuest.Connect(SocketPath).Start();
        Assert.Equal((byte)VirtioBlkStatus.Ok, guest.Request(VirtioBlkRequestType.In, 0, inputLength: 512).Status);

        await server.StopAsync().WaitAsync(TimeSpan.FromSeconds(10));
        Assert.False(server.IsServing);
        AssertClosed(guest);
        await server.DisposeAsync();
        Assert.False(File.Exists(SocketPath));
        await server.DisposeAsync(); // a second dispose does nothing
        await Assert.ThrowsAsync<ObjectDisposedException>(server.StopAsync);
    }

    [Fact]
    public async Task A_connected_fd_is_served_until_the_front_end_leaves()
    {
        var device = new FakeBlockDevice();
        var (frontend, backend) = UnixSocket.CreatePair();
        int fd = (int)backend.DangerousGetHandle();
        backend.SetHandleAsInvalid(); // handed over, as a parent process passes --fd
        await using VhostUserBlkServer server = VhostUserBlkServer.FromConnectedFd(fd, device, new VhostUserBlkOptions(), _log);
        server.Start();
        using (BlkGuest guest = BlkGuest.Over(frontend).Start())
            Assert.Equal((byte)VirtioBlkStatus.Ok, guest.Request(VirtioBlkRequestType.Out, 0, new byte[512]).Status);

        await server.Completion.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Null(server.SocketPath);
    }

    /// <summary>The back-end closed the socket: sending fails (EPIPE) or no reply comes.</summary>
    private static void AssertClosed(BlkGuest guest) =>
        Assert.ThrowsAny<IOException>(() =>
        {
            guest.Frontend.Send(FrontendRequest.GetFeatures);
            guest.Frontend.ReceiveU64Reply(FrontendRequest.GetFeatures);
        });

    private static (byte, uint) Pick((byte Status, uint Used, byte[] Input) r) => (r.Status, r.Used);
}
