using System.Runtime.InteropServices;
using LibvirtStorage.Vhost.Memory;
using LibvirtStorage.Vhost.Protocol;
using Microsoft.Win32.SafeHandles;

namespace LibvirtStorage.Vhost.Backend;

/// <summary>
/// GET_INFLIGHT_FD and SET_INFLIGHT_FD (vhost-user.rst "Inflight I/O tracking"): the back-end allocates the
/// tracking buffer, the front-end keeps it, and hands it back to the next back-end after a reconnect.
/// </summary>
internal sealed partial class VhostUserRequestDispatcher
{
    // The mapped area of the last SET_INFLIGHT_FD. Replaced or disposed only while every queue is stopped, so a
    // worker never sees its region unmapped.
    private InflightArea? _inflightArea;

    private bool InflightNegotiated => (_ackedProtocolFeatures & VhostUserProtocolFeatures.InflightShmfd) != 0;

    // A zeroed memfd for num_queues × queue_size; nothing is mapped here, SET_INFLIGHT_FD maps what comes back.
    private string? GetInflightFd(VhostUserMessage message)
    {
        if (!InflightNegotiated)
            return "VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD was not negotiated";
        var request = message.Read<VhostUserInflight>();
        if (request.QueueCount > _vrings.Length || request.QueueSize > Virtqueue.VirtqLayout.MaxQueueSize)
            return $"{request.QueueCount} queues of {request.QueueSize} entries: the device has {_vrings.Length} queues of at most {Virtqueue.VirtqLayout.MaxQueueSize}";
        SafeFileHandle fd;
        try
        {
            fd = InflightArea.CreateFile(request.QueueCount, request.QueueSize);
        }
        catch (IOException ex)
        {
            return $"cannot allocate the inflight area: {ex.Message}";
        }

        using (fd)
        {
            var reply = new VhostUserInflight(InflightArea.AreaSize(request.QueueCount, request.QueueSize), 0, request.QueueCount, request.QueueSize);
            _connection.Reply(message.Header, MemoryMarshal.AsBytes(new ReadOnlySpan<VhostUserInflight>(in reply)), [fd]);
        }

        return null;
    }

    private string? SetInflightFd(VhostUserMessage message)
    {
        if (!InflightNegotiated)
            return "VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD was not negotiated";
        var description = message.Read<VhostUserInflight>();
        if (description.QueueCount > _vrings.Length)
            return $"{description.QueueCount} queues in the inflight area: the device has {_vrings.Length}";
        foreach (VhostUserVring vring in _vrings)
        {
            if (vring.IsStarted)
                return $"vring {vring.Index} is started";
        }

        using SafeFileHandle fd = message.Fds.Take(0);
        if (InflightArea.TryMap(fd, description.MmapSize, description.MmapOffset, description.QueueCount, description.QueueSize, out InflightArea? area) is { } error)
            return error;

        ReleaseInflightArea();
        _inflightArea = area;
        for (int i = 0; i < area!.QueueCount; i++)
            _vrings[i].Inflight = area.Queue(i);
        return null;
    }

    // Every queue is stopped (or the connection is ending) when this runs.
    private void ReleaseInflightArea()
    {
        foreach (VhostUserVring vring in _vrings)
            vring.Inflight = null;
        _inflightArea?.Dispose();
        _inflightArea = null;
    }
}
