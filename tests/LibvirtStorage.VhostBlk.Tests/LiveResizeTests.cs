using System.Diagnostics;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using LibvirtStorage.Images;
using LibvirtStorage.Service;
using LibvirtStorage.Vhost;
using LibvirtStorage.Vhost.Blk;
using LibvirtStorage.Vhost.Tests.Backend;
using LibvirtStorage.Vhost.Tests.Server;
using Xunit;

namespace LibvirtStorage.VhostBlk.Tests;

/// <summary>
/// Live resize of a real qcow2 export: <see cref="ImageBlockDevice.Grow"/> plus the config-change notification,
/// in process and through the program's <c>--control-socket</c>, checked afterwards with qemu-img and qemu-io.
/// </summary>
public sealed class LiveResizeTests : IDisposable
{
    private const long OldSize = 16 << 20, NewSize = 48 << 20;
    private readonly string _dir = Directory.CreateTempSubdirectory("vhost-blk-resize-").FullName;
    private readonly ListLogger _log = new();

    private string ImagePath => Path.Combine(_dir, "disk.qcow2");

    private string SocketPath => Path.Combine(_dir, "blk.sock");

    private string ControlPath => Path.Combine(_dir, "control.sock");

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public async Task Growing_a_qcow2_export_while_the_guest_writes_shows_the_new_size_to_the_guest_and_to_qemu()
    {
        Tools.CreateQcow2(ImagePath, "16M");
        byte[] tail = new byte[65536];
        Array.Fill(tail, (byte)0xd4);
        using (IBlockImage image = ImageOpener.Open(ImagePath))
        {
            var device = new ImageBlockDevice(image, serial: null);
            await using var server = VhostUserBlkServer.Listen(SocketPath, device, new VhostUserBlkOptions(), _log);
            server.Start();
            using BlkGuest guest = BlkGuest.Connect(SocketPath).Start();

            // Requests keep flowing on the worker while the control thread grows the image.
            using var stop = new CancellationTokenSource();
            var writer = Task.Run(() =>
            {
                byte[] block = new byte[4096];
                int n = 0;
                while (!stop.IsCancellationRequested)
                {
                    Array.Fill(block, (byte)n);
                    Assert.Equal((byte)VirtioBlkStatus.Ok, guest.Request(VirtioBlkRequestType.Out, (ulong)(n % 256) * 8, block).Status);
                    n++;
                }

                return n;
            });
            await Task.Delay(100);
            device.Grow(NewSize);
            Assert.Equal(ConfigChangeNotification.Acknowledged, server.NotifyCapacityChanged());
            await stop.CancelAsync();
            Assert.True(await writer.WaitAsync(TimeSpan.FromSeconds(30)) > 0);

            Assert.Equal(NewSize / 512, guest.ConfigCapacity);
            Assert.Equal(NewSize, device.Capacity);
            Assert.Equal((byte)VirtioBlkStatus.Ok, guest.Request(VirtioBlkRequestType.Out, (ulong)(NewSize - tail.Length) / 512, tail).Status);
            Assert.Equal(tail, guest.Request(VirtioBlkRequestType.In, (ulong)(NewSize - tail.Length) / 512, inputLength: tail.Length).Input);
            Assert.Equal((byte)VirtioBlkStatus.Ok, guest.Request(VirtioBlkRequestType.Flush, 0).Status);

            var shrink = Assert.Throws<ImageException>(() => device.Grow(OldSize));
            Assert.Contains("shrinking a live export is not supported", shrink.Message, StringComparison.Ordinal);
            Assert.Throws<ImageException>(() => device.Grow(NewSize + 100));
            Assert.Equal(NewSize, device.Capacity);
        }

        Assert.Equal(0, Tools.Run("qemu-img", "check", "-q", ImagePath).Exit);
        Assert.Equal(NewSize, VirtualSize(ImagePath));
        Assert.True(Tools.QemuIoPatternMatches(ImagePath, 0xd4, NewSize - tail.Length, tail.Length));
        Assert.True(Tools.QemuIoPatternMatches(ImagePath, 0x00, OldSize, 1 << 20));
    }

    [Fact]
    public async Task The_program_resizes_through_its_control_socket_and_refuses_bad_commands()
    {
        Tools.CreateQcow2(ImagePath, "16M");
        using Process backend = Tools.StartBackend("--socket-path", SocketPath, "--image", ImagePath, "--control-socket", ControlPath);
        Task<string> log = backend.StandardError.ReadToEndAsync();
        Task<string> stdout = backend.StandardOutput.ReadToEndAsync();
        Assert.True(SpinWait.SpinUntil(() => (File.Exists(SocketPath) && File.Exists(ControlPath)) || backend.HasExited, 30_000), "no sockets");
        Assert.False(backend.HasExited, "the back-end exited before listening");

        byte[] data = new byte[8192];
        Array.Fill(data, (byte)0x6e);
        using (BlkGuest guest = BlkGuest.Connect(SocketPath).Start())
        {
            using (JsonDocument info = Command("info"))
            {
                Assert.True(info.RootElement.GetProperty("ok").GetBoolean());
                Assert.Equal(OldSize, info.RootElement.GetProperty("capacity").GetInt64());
                Assert.True(info.RootElement.GetProperty("frontend").GetBoolean());
            }

            using (JsonDocument resized = Command("resize 48M"))
            {
                Assert.True(resized.RootElement.GetProperty("ok").GetBoolean(), resized.RootElement.ToString());
                Assert.Equal(NewSize, resized.RootElement.GetProperty("capacity").GetInt64());
                Assert.Equal("Acknowledged", resized.RootElement.GetProperty("notified").GetString());
            }

            Assert.Equal(NewSize / 512, guest.ConfigCapacity);
            Assert.Equal((byte)VirtioBlkStatus.Ok, guest.Request(VirtioBlkRequestType.Out, (ulong)(NewSize - data.Length) / 512, data).Status);
            Assert.Equal((byte)VirtioBlkStatus.Ok, guest.Request(VirtioBlkRequestType.Flush, 0).Status);

            AssertError("resize 8M", "shrinking a live export is not supported");
            AssertError("resize 1000", "not a positive multiple of 512");
            AssertError("resize lots", "bad size");
            AssertError("resize 99999999999999999999T", "bad size");
            AssertError("resize", "usage: resize SIZE");
            AssertError("format c:", "unknown command 'format'");
            AssertError("", "empty command");
            AssertError(new string('x', 5000), "line longer than 256 bytes");
            AssertError("\u0001\u00ff\u0000garbage", "unknown command");

            // Many clients at once: the ones beyond the limit are told so; the back-end keeps serving.
            var idle = new List<Socket>();
            try
            {
                for (int i = 0; i < ControlSocket.MaxClients + 4; i++)
                    idle.Add(ConnectControl());
                string refused = ReadLine(idle[^1]);
                Assert.Contains("too many control clients", refused, StringComparison.Ordinal);
            }
            finally
            {
                foreach (Socket s in idle)
                    s.Dispose();
            }

            Assert.True(SpinWait.SpinUntil(() => TryInfo(), 10_000), "the control socket did not recover after the clients left");
            Assert.Equal(data, guest.Request(VirtioBlkRequestType.In, (ulong)(NewSize - data.Length) / 512, inputLength: data.Length).Input);
        }

        Assert.Equal(0, Tools.Run("kill", "-TERM", backend.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)).Exit);
        Assert.True(backend.WaitForExit(30_000), "the back-end did not stop on SIGTERM");
        string text = await log + await stdout;
        Assert.True(backend.ExitCode == 0, text);
        Assert.False(File.Exists(ControlPath), "the control socket was left behind");
        Assert.Contains("config change: Acknowledged", text, StringComparison.Ordinal);
        Assert.Equal(0, Tools.Run("qemu-img", "check", "-q", ImagePath).Exit);
        Assert.Equal(NewSize, VirtualSize(ImagePath));
        Assert.True(Tools.QemuIoPatternMatches(ImagePath, 0x6e, NewSize - data.Length, data.Length));
    }

    [Fact]
    public async Task A_stale_control_socket_is_replaced_and_a_regular_file_in_its_place_is_never_deleted()
    {
        Tools.CreateQcow2(ImagePath, "16M");
        File.WriteAllText(ControlPath, "not a socket");
        var (exit, _, err) = Tools.Run("dotnet", Tools.BackendDll, "--socket-path", SocketPath, "--image", ImagePath, "--control-socket", ControlPath);
        Assert.Equal(1, exit);
        Assert.Contains("is not a socket", err, StringComparison.Ordinal);
        Assert.Equal("not a socket", File.ReadAllText(ControlPath));

        File.Delete(ControlPath);
        LibvirtStorage.Vhost.Tests.Protocol.TestNative.BindAndAbandon(ControlPath);
        using Process backend = Tools.StartBackend("--socket-path", SocketPath, "--image", ImagePath, "--control-socket", ControlPath);
        Task<string> log = backend.StandardError.ReadToEndAsync();
        Assert.True(SpinWait.SpinUntil(() => TryInfo() || backend.HasExited, 30_000), "the stale control socket was not replaced");
        Assert.Equal(0, Tools.Run("kill", "-TERM", backend.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)).Exit);
        Assert.True(backend.WaitForExit(30_000), "the back-end did not stop on SIGTERM");
        Assert.True(backend.ExitCode == 0, await log);
    }

    [Fact]
    public void A_read_only_export_refuses_to_grow_and_keeps_its_capacity()
    {
        Tools.CreateQcow2(ImagePath, "16M");
        using IBlockImage image = ImageOpener.Open(ImagePath, new ImageOpenOptions { ReadOnly = true });
        var device = new ImageBlockDevice(image, serial: null);
        var error = Assert.Throws<ImageException>(() => device.Grow(NewSize));
        Assert.Equal(ErrorKind.ReadOnly, error.Kind);
        Assert.Equal(OldSize, device.Capacity);
        Assert.Equal(OldSize, image.VirtualSize);
    }

    [Fact]
    public void Sizes_parse_with_binary_suffixes_and_refuse_garbage()
    {
        Assert.True(ControlSocket.TryParseSize("4096", out long b) && b == 4096);
        Assert.True(ControlSocket.TryParseSize("2k", out b) && b == 2048);
        Assert.True(ControlSocket.TryParseSize("3M", out b) && b == 3L << 20);
        Assert.True(ControlSocket.TryParseSize("1G", out b) && b == 1L << 30);
        Assert.True(ControlSocket.TryParseSize("2T", out b) && b == 2L << 40);
        foreach (string bad in new[] { "", "M", "-1", "1.5G", "1 G", "0x10", "+5", "9223372036854775807K", "١٢" })
            Assert.False(ControlSocket.TryParseSize(bad, out _), bad);
    }

    private bool TryInfo()
    {
        try
        {
            using JsonDocument info = Command("info");
            return info.RootElement.GetProperty("ok").GetBoolean();
        }
        catch (Exception e) when (e is SocketException or IOException or JsonException)
        {
            return false;
        }
    }

    private void AssertError(string command, string expected)
    {
        using JsonDocument reply = Command(command);
        Assert.False(reply.RootElement.GetProperty("ok").GetBoolean(), command);
        Assert.Contains(expected, reply.RootElement.GetProperty("error").GetString(), StringComparison.Ordinal);
    }

    private JsonDocument Command(string command)
    {
        using Socket s = ConnectControl();
        s.Send(Encoding.UTF8.GetBytes(command + "\n"));
        return JsonDocument.Parse(ReadLine(s));
    }

    private Socket ConnectControl()
    {
        var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified) { ReceiveTimeout = 30_000 };
        s.Connect(new UnixDomainSocketEndPoint(ControlPath));
        return s;
    }

    private static string ReadLine(Socket s)
    {
        var line = new List<byte>();
        var one = new byte[1];
        while (s.Receive(one) == 1 && one[0] != '\n')
            line.Add(one[0]);
        return Encoding.UTF8.GetString([.. line]);
    }

    private static long VirtualSize(string image)
    {
        var (exit, output, err) = Tools.Run("qemu-img", "info", "--output=json", image);
        Assert.True(exit == 0, err);
        using JsonDocument info = JsonDocument.Parse(output);
        return info.RootElement.GetProperty("virtual-size").GetInt64();
    }
}
