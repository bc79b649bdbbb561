namespace LibvirtStorage.Service;

/// <summary>The in-process <see cref="IVolumeUsers"/>: users attach and detach by disposing the returned token.</summary>
public sealed class VolumeUserRegistry : IVolumeUsers
{
    private readonly Lock _lock = new();
    private readonly Dictionary<Guid, List<VolumeUser>> _users = [];

    /// <summary>Records that <paramref name="user"/> uses the volume until the returned object is disposed.</summary>
    public IDisposable Attach(Guid volumeKey, VolumeUser user)
    {
        ArgumentNullException.ThrowIfNull(user);
        lock (_lock)
        {
            if (!_users.TryGetValue(volumeKey, out List<VolumeUser>? list))
            {
                _users[volumeKey] = list = [];
            }

            list.Add(user);
        }

        return new Attachment(this, volumeKey, user);
    }

    /// <inheritdoc/>
    public IReadOnlyList<VolumeUser> GetUsers(Guid volumeKey)
    {
        lock (_lock)
        {
            return _users.TryGetValue(volumeKey, out List<VolumeUser>? list) ? [.. list] : [];
        }
    }

    private void Detach(Guid volumeKey, VolumeUser user)
    {
        lock (_lock)
        {
            if (_users.TryGetValue(volumeKey, out List<VolumeUser>? list) && list.Remove(user) && list.Count == 0)
            {
                _users.Remove(volumeKey);
            }
        }
    }

    private sealed class Attachment(VolumeUserRegistry owner, Guid volumeKey, VolumeUser user) : IDisposable
    {
        private int _disposed;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _disposed, 1) == 0)
            {
                owner.Detach(volumeKey, user);
            }
        }
    }
}
