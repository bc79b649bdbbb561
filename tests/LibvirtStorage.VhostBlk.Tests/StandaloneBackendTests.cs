using System.Diagnostics;
using System.Text.Json;
using LibvirtStorage.Vhost.Blk;
using LibvirtStorage.Vhost.Protocol;
using LibvirtStorage.Vhost.Tests.Protocol;
using LibvirtStorage.Vhost.Tests.Server;
using Xunit;

namespace LibvirtStorage.VhostBlk.Tests;

/// <summary>lvstor-vhost-blk as a process: the vhost-user.rst conventions, a qcow2 export, exit codes.</summary>
public sealed class StandaloneBackendTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("vhost-blk-program-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void Print_capabilities_gives_the_block_json_of_the_spec()
    {
        var (exit, output, _) = Tools.Run("dotnet", Tools.BackendDll, "--print-capabilities");
        Assert.Equal(0, exit);
        using JsonDocument json = JsonDocument.Parse(output);
        Assert.Equal("block", json.RootElement.GetProperty("type").GetString());
        string[] features = [.. json.RootElement.GetProperty("features").EnumerateArray().Select(f => f.GetString() ?? "")];
        Assert.Equal(["blk-file", "read-only"], features);
    }

    [Theory]
    [InlineData("--image", "x.qcow2")]
    [InlineData("--socket-path", "s", "--fd", "3", "--image", "x")]
    [InlineData("--socket-path", "s", "--image", "x", "--num-queues", "0")]
    [InlineData("--socket-path", "s", "--image", "x", "--queue-threads", "0")]
    [InlineData("--socket-path", "s", "--image", "x", "--queue-threads", "65")]
    [InlineData("--socket-path", "s", "--image", "x", "--queue-threads", "two")]
    [InlineData("--socket-path", "s", "--image", "x", "--queue-threads")]
    [InlineData("--socket-path", "s", "--image", "x", "--parallel-requests", "0")]
    [InlineData("--socket-path", "s", "--image", "x", "--parallel-requests", "65")]
    [InlineData("--socket-path", "s", "--image", "x", "--format", "vmdk")]
    [InlineData("--socket-path", "s", "--image", "x", "--serial", "more-than-twenty-characters")]
    [InlineData("--bogus")]
    public void A_bad_command_line_exits_2_with_usage(params string[] args)
    {
        var (exit, _, err) = Tools.Run("dotnet", [Tools.BackendDll, .. args]);
        Assert.Equal(2, exit);
        Assert.Contains("usage:", err, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(new[] { "--queue-threads", "2" }, 2)]
    [InlineData(new[] { "--queue-threads=64" }, 64)]
    [InlineData(new string[0], 0)]
    public void Queue_threads_are_parsed_and_default_to_one_per_queue(string[] extra, int expected)
    {
        BackendOptions? options = BackendOptions.Parse(["--socket-path", "s", "--image", "x", .. extra], out string? error);
        Assert.Null(error);
        Assert.Equal(expected, options!.QueueThreads);
        Assert.Contains("--queue-threads N", BackendOptions.Usage, StringComparison.Ordinal);
    }

    [Fact]
    public void A_missing_image_exits_1()
    {
        var (exit, _, err) = Tools.Run("dotnet", Tools.BackendDll, "--socket-path", Path.Combine(_dir, "s"), "--image", Path.Combine(_dir, "none.qcow2"));
        Assert.Equal(1, exit);
        Assert.Contains("none.qcow2", err, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Serves_a_qcow2_image_on_a_socket_until_sigterm()
    {
        string image = Path.Combine(_dir, "disk.qcow2"), socket = Path.Combine(_dir, "blk.sock");
        Tools.CreateQcow2(image, "8M");
        using Process backend = Tools.StartBackend("--socket-path", socket, "--image", image, "--format", "qcow2", "--serial", "prog-serial", "--num-queues", "2");
        Task<string> log = backend.StandardError.ReadToEndAsync();
        Task<string> stdout = backend.StandardOutput.ReadToEndAsync();
        Assert.True(SpinWait.SpinUntil(() => File.Exists(socket) || backend.HasExited, 30_000), "no socket");
        Assert.False(backend.HasExited, "the back-end exited before listening");

        byte[] data = new byte[4096];
        Array.Fill(data, (byte)0xc3);
        using (BlkGuest guest = BlkGuest.Connect(socket).Start())
        {
            Assert.Equal((byte)VirtioBlkStatus.Ok, guest.Request(VirtioBlkRequestType.Out, 8, data).Status);
            Assert.Equal(data, guest.Request(VirtioBlkRequestType.In, 8, inputLength: 4096).Input);
            Assert.Equal("prog-serial", System.Text.Encoding.ASCII.GetString(guest.Request(VirtioBlkRequestType.GetId, 0, inputLength: 20).Input).TrimEnd('\0'));
        }

        // Reconnect, as QEMU does after a restart of the guest's chardev.
        using (BlkGuest again = BlkGuest.Connect(socket).Start())
            Assert.Equal(data, again.Request(VirtioBlkRequestType.In, 8, inputLength: 4096).Input);

        Assert.Equal(0, Tools.Run("kill", "-TERM", backend.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)).Exit);
        Assert.True(backend.WaitForExit(30_000), "the back-end did not stop on SIGTERM");
        string text = await log + await stdout;
        Assert.True(backend.ExitCode == 0, text);
        Assert.Contains(socket, text, StringComparison.Ordinal);
        Assert.Contains("stopped after 2 front-end connection(s)", text, StringComparison.Ordinal);
        Assert.False(File.Exists(socket));
        Assert.Equal(0, Tools.Run("qemu-img", "check", "-q", image).Exit);
        Assert.True(Tools.QemuIoPatternMatches(image, 0xc3, 8 * 512, 4096));
    }

    [Fact]
    public async Task Serves_an_inherited_fd_and_exits_0_when_the_front_end_leaves()
    {
        string image = Path.Combine(_dir, "disk.qcow2");
        Tools.CreateQcow2(image, "4M");
        var (frontend, backendEnd) = UnixSocket.CreatePair();
        Process backend;
        using (backendEnd)
        {
            TestNative.Inherit(backendEnd);
            string fd = ((int)backendEnd.DangerousGetHandle()).ToString(System.Globalization.CultureInfo.InvariantCulture);
            backend = Tools.StartBackend("--fd", fd, "--image", image);
        }

        using (backend)
        {
            Task<string> log = backend.StandardError.ReadToEndAsync();
            byte[] data = new byte[512];
            Array.Fill(data, (byte)0x77);
            using (BlkGuest guest = BlkGuest.Over(frontend).Start())
                Assert.Equal((byte)VirtioBlkStatus.Ok, guest.Request(VirtioBlkRequestType.Out, 1, data).Status);

            Assert.True(backend.WaitForExit(30_000), "the back-end did not exit after its --fd connection ended");
            Assert.True(backend.ExitCode == 0, await log);
            Assert.True(Tools.QemuIoPatternMatches(image, 0x77, 512, 512));
        }
    }
}
