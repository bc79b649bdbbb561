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

    /// <summary>
    /// A front-end that connects as soon as it sees the socket file (as QEMU, a test or a script waiting for it does)
    /// must never be refused, so the file may only appear once something listens behind it: it arrives by a rename
    /// (inotify IN_MOVED_TO), never by a bind in place (IN_CREATE). Nothing temporary is left behind.
    /// </summary>
    [Fact]
    public async Task The_socket_file_appears_by_rename_once_listening()
    {
        string path = Path.Combine(_dir, "vol.sock");
        var created = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        var renamed = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        using var watcher = new FileSystemWatcher(_dir) { EnableRaisingEvents = true };
        watcher.Created += (_, e) => { if (e.Name == "vol.sock") created.TrySetResult(e.Name); };
        watcher.Renamed += (_, e) => { if (e.Name == "vol.sock") renamed.TrySetResult(e.OldName ?? ""); };

        using (VhostUserListener.Create(path, UnixFileMode.UserRead | UnixFileMode.UserWrite))
        {
            string from = await renamed.Task.WaitAsync(TimeSpan.FromSeconds(10));
            Assert.StartsWith(".vol.sock.", from, StringComparison.Ordinal);
            using var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            socket.Connect(new UnixDomainSocketEndPoint(path));
        }

        Assert.False(created.Task.IsCompleted, "the socket was bound in place: it existed before listen");
        Assert.Empty(Directory.GetFiles(_dir));
    }

    [Fact]
    public void A_path_too_long_for_a_temporary_name_is_bound_in_place()
    {
        // 107 bytes in all: the longest path sun_path takes; ".<name>.<pid>.new" beside it would not fit.
        string prefix = _dir + "/";
        string path = prefix + new string('s', 107 - prefix.Length);
        using (VhostUserListener.Create(path, UnixFileMode.UserRead | UnixFileMode.UserWrite))
        {
            using var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            socket.Connect(new UnixDomainSocketEndPoint(path));
        }

        Assert.Empty(Directory.GetFiles(_dir));
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
