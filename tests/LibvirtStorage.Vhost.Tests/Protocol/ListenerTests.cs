using System.Net.Sockets;
using LibvirtStorage.Vhost.Protocol;
using Xunit;

namespace LibvirtStorage.Vhost.Tests.Protocol;

[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class ListenerTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("lvstor-vhost-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static VhostUserFrontendChannel Connect(string path)
    {
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        socket.Connect(new UnixDomainSocketEndPoint(path));
        var channel = new VhostUserFrontendChannel(UnixSocket.DuplicateBlocking(socket.SafeHandle));
        socket.Dispose();
        return channel;
    }

    [Fact]
    public async Task Creates_the_socket_with_the_mode_and_serves_a_connection()
    {
        string path = Path.Combine(_dir, "vol.sock");
        using (var listener = VhostUserListener.Create(path, UnixFileMode.UserRead | UnixFileMode.UserWrite))
        {
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(path));
            var accept = listener.AcceptAsync(CancellationToken.None);
            using var frontend = Connect(path);
            using var backend = await accept.WaitAsync(TimeSpan.FromSeconds(10));
            using var call = TestNative.EventFd();
            frontend.Send(FrontendRequest.SetVringCall, 0UL, [call]);
            Assert.Equal(1, ReceiveFdCount(backend));
        }
        Assert.False(File.Exists(path));
    }

    private static int ReceiveFdCount(VhostUserConnection backend)
    {
        var message = backend.Receive();
        Assert.Equal(VhostUserRefusal.None, message.Refusal);
        return message.Fds.Count;
    }

    [Fact]
    public void A_stale_socket_is_replaced_but_a_live_one_or_a_regular_file_is_not()
    {
        string path = Path.Combine(_dir, "stale.sock");
        // A leftover socket file of a crashed back-end: bound, closed, never unlinked (.NET would unlink it on Dispose).
        TestNative.BindAndAbandon(path);
        Assert.True(File.Exists(path));
        using (var listener = VhostUserListener.Create(path, UnixFileMode.UserRead | UnixFileMode.UserWrite))
        {
            Assert.Throws<IOException>(() => VhostUserListener.Create(path, UnixFileMode.UserRead | UnixFileMode.UserWrite));
        }

        string file = Path.Combine(_dir, "image.qcow2");
        File.WriteAllText(file, "not a socket");
        Assert.Throws<IOException>(() => VhostUserListener.Create(file, UnixFileMode.UserRead | UnixFileMode.UserWrite));
        Assert.Equal("not a socket", File.ReadAllText(file));
    }

    [Fact]
    public async Task Accept_honours_cancellation()
    {
        using var listener = VhostUserListener.Create(Path.Combine(_dir, "c.sock"), UnixFileMode.UserRead | UnixFileMode.UserWrite);
        using var cts = new CancellationTokenSource(TimeSpan.FromMilliseconds(50));
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => listener.AcceptAsync(cts.Token));
    }
}
