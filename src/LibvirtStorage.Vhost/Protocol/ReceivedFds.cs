using Microsoft.Win32.SafeHandles;

namespace LibvirtStorage.Vhost.Protocol;

/// <summary>
/// The fds received with one message, at most <see cref="UnixSocket.MaxFds"/>; any beyond are closed at once.
/// Owned by the connection and reused: the caller <see cref="Take"/>s the fds it keeps (and disposes them);
/// every fd not taken is closed by <see cref="CloseAll"/> before the next receive, on Break and on Dispose,
/// so a refused, ignored or forgotten fd never leaks.
/// </summary>
internal sealed class ReceivedFds
{
    private readonly int[] _fds = new int[UnixSocket.MaxFds];

    /// <summary>Fds held (taken ones included: their slots read -1).</summary>
    public int Count { get; private set; }

    /// <summary>More fds arrived than fit (the extra ones were closed), or the kernel reported MSG_CTRUNC.</summary>
    public bool Truncated { get; private set; }

    internal void Add(int fd)
    {
        if (Count < _fds.Length)
            _fds[Count++] = fd;
        else
        {
            UnixSocket.Close(fd);
            Truncated = true;
        }
    }

    internal void MarkTruncated() => Truncated = true;

    /// <summary>Hands fd <paramref name="index"/> to the caller, who must dispose it.</summary>
    public SafeFileHandle Take(int index)
    {
        if ((uint)index >= (uint)Count || _fds[index] < 0)
            ThrowHelper.ArgumentOutOfRange(nameof(index), "no such fd, or it was already taken");
        var handle = new SafeFileHandle(_fds[index], ownsHandle: true);
        _fds[index] = -1;
        return handle;
    }

    /// <summary>Closes every fd not taken and empties the set.</summary>
    public void CloseAll()
    {
        for (int i = 0; i < Count; i++)
        {
            if (_fds[i] >= 0)
                UnixSocket.Close(_fds[i]);
            _fds[i] = -1;
        }
        Count = 0;
        Truncated = false;
    }
}
