using System.Net.Sockets;

namespace LibvirtStorage.Vhost.Protocol;

/// <summary>
/// A listening UNIX socket at a path, created with a given mode before anyone can connect. It is bound, chmod-ed
/// and listening under a temporary name in the same folder, then renamed into place, so the path never exists
/// without a listener behind it (a front-end that sees the file can connect: no ECONNREFUSED window). Accepted
/// sockets become <see cref="VhostUserConnection"/>s on their own blocking fd, because message I/O needs recvmsg
/// for SCM_RIGHTS.
/// </summary>
internal sealed class VhostUserListener : IDisposable
{
    private readonly Socket _socket;

    private VhostUserListener(Socket socket, string path)
    {
        _socket = socket;
        Path = path;
    }

    /// <summary>The socket's path.</summary>
    public string Path { get; }

    /// <summary>
    /// Creates the socket at <paramref name="path"/> with <paramref name="mode"/>. A stale socket left by a previous
    /// run is replaced only when nobody answers on it; any other existing file is an error, never deleted. A given
    /// <paramref name="owner"/> is applied (chown) before the socket appears at its path.
    /// </summary>
    public static VhostUserListener Create(string path, UnixFileMode mode, int backlog = 1, (int? UserId, int? GroupId) owner = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (!OperatingSystem.IsLinux())
            throw new PlatformNotSupportedException("vhost-user sockets need Linux (SCM_RIGHTS, memfd)");
        RemoveStaleSocket(path);
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        string bindPath = TemporaryNameFor(path);
        try
        {
            socket.Bind(new UnixDomainSocketEndPoint(bindPath));
            File.SetUnixFileMode(bindPath, mode);
            if (owner.UserId is not null || owner.GroupId is not null)
                UnixSocket.ChangeOwner(bindPath, owner.UserId ?? -1, owner.GroupId ?? -1);
            socket.Listen(backlog);
            if (bindPath != path)
                File.Move(bindPath, path, overwrite: true); // rename(2): atomic in one folder
            return new VhostUserListener(socket, path);
        }
        catch
        {
            socket.Dispose();
            if (bindPath != path)
                File.Delete(bindPath);
            throw;
        }
    }

    // sun_path holds 107 bytes and a NUL: a path close to that limit is bound in place (a connect may then see
    // ECONNREFUSED until listen, which QEMU's reconnect= retries).
    private const int MaxSocketPathBytes = 107;

    private static string TemporaryNameFor(string path)
    {
        string temporary = System.IO.Path.Combine(System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path)) ?? "/",
            $".{System.IO.Path.GetFileName(path)}.{Environment.ProcessId}.new");
        return System.Text.Encoding.UTF8.GetByteCount(temporary) <= MaxSocketPathBytes ? temporary : path;
    }

    /// <summary>Waits for the next front-end and returns its connection (the caller owns it).</summary>
    public async Task<VhostUserConnection> AcceptAsync(CancellationToken cancellationToken) =>
        new(await AcceptSocketAsync(cancellationToken).ConfigureAwait(false));

    /// <summary>Waits for the next front-end and returns its blocking socket fd (the caller owns it).</summary>
    public async Task<Microsoft.Win32.SafeHandles.SafeFileHandle> AcceptSocketAsync(CancellationToken cancellationToken)
    {
        using var accepted = await _socket.AcceptAsync(cancellationToken).ConfigureAwait(false);
        return UnixSocket.DuplicateBlocking(accepted.SafeHandle);
    }

    /// <summary>Stops listening and removes the socket file.</summary>
    public void Dispose()
    {
        _socket.Dispose();
        try
        {
            File.Delete(Path);
        }
        catch (IOException)
        {
            // Already gone or replaced: nothing of ours to remove.
        }
    }

    private static void RemoveStaleSocket(string path)
    {
        if (!File.Exists(path) && !Directory.Exists(path))
            return;
        if ((File.GetAttributes(path) & FileAttributes.Directory) != 0)
            throw new IOException($"{path} is a directory, not a vhost-user socket");
        using var probe = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            probe.Connect(new UnixDomainSocketEndPoint(path));
        }
        catch (SocketException e) when (e.SocketErrorCode == SocketError.ConnectionRefused)
        {
            // A socket nobody listens on (ECONNREFUSED); a regular file also gives ECONNREFUSED, so check below.
            if (!IsSocketFile(path))
                throw new IOException($"{path} exists and is not a socket", e);
            File.Delete(path);
            return;
        }
        throw new IOException($"{path} is a live socket: another back-end serves it");
    }

    private static bool IsSocketFile(string path)
    {
        // FileSystemInfo has no socket type, but a socket file cannot be opened: open(2) fails with ENXIO.
        try
        {
            using var f = File.OpenHandle(path, FileMode.Open, FileAccess.Read);
            return false;
        }
        catch (IOException)
        {
            return true;
        }
        catch (UnauthorizedAccessException)
        {
            return false;
        }
    }
}
