using LibvirtStorage.Vhost.Memory;
using LibvirtStorage.Vhost.Protocol;
using LibvirtStorage.Vhost.Virtqueue;
using Microsoft.Win32.SafeHandles;
using Microsoft.Extensions.Logging;

namespace LibvirtStorage.Vhost.Backend;

/// <summary>SET_VRING_* and GET_VRING_BASE (vhost-user.rst "Ring states", "Starting and stopping rings").</summary>
internal sealed partial class VhostUserRequestDispatcher
{
    private string? FindVring(uint index, out VhostUserVring vring)
    {
        vring = null!;
        if (index >= (uint)_vrings.Length)
            return $"vring index {index} is out of range: the device has {_vrings.Length} queues";
        vring = _vrings[index];
        return null;
    }

    // Size, addresses and base may change only while the ring is stopped (virtio 1.2 §2.7: the driver sets them up
    // before DRIVER_OK; QEMU stops the ring with GET_VRING_BASE first).
    private string? FindStoppedVring(uint index, out VhostUserVring vring) =>
        FindVring(index, out vring) ?? (vring.IsStarted ? $"vring {index} is started" : null);

    private string? SetVringNum(VhostUserVringState state)
    {
        if (FindStoppedVring(state.Index, out VhostUserVring vring) is { } error)
            return error;
        if (state.Num > (uint)_device.MaxQueueSize || !vring.Queue.TrySetSize(state.Num))
            return $"queue size {state.Num} is not a power of two in 1..{_device.MaxQueueSize}";
        return null;
    }

    private string? SetVringAddr(VhostUserVringAddress address)
    {
        if (FindStoppedVring(address.Index, out VhostUserVring vring) is { } error)
            return error;
        if (_map is null)
            return $"vring {address.Index} addresses arrived before any memory table";
        ushort size = vring.Queue.Size;
        if (size == 0)
            return $"vring {address.Index} addresses arrived before its size";

        // The addresses are the front-end's virtual addresses (vhost-user.rst "Vring address description").
        GuestMemory memory = _map.Memory;
        if (!memory.TryTranslateUserAddress(address.DescUserAddr, VirtqLayout.DescTableBytes(size), out GuestAddress desc)
            || !memory.TryTranslateUserAddress(address.AvailUserAddr, VirtqLayout.AvailRingBytes(size, EventIdx), out GuestAddress avail)
            || !memory.TryTranslateUserAddress(address.UsedUserAddr, VirtqLayout.UsedRingBytes(size, EventIdx), out GuestAddress used))
        {
            return $"vring {address.Index} rings (desc 0x{address.DescUserAddr:x}, avail 0x{address.AvailUserAddr:x}, used 0x{address.UsedUserAddr:x}) are not inside guest memory";
        }

        vring.Queue.SetAddresses(desc, avail, used);
        vring.HasAddresses = true;
        return null;
    }

    private string? SetVringBase(VhostUserVringState state)
    {
        if (FindStoppedVring(state.Index, out VhostUserVring vring) is { } error)
            return error;
        if (state.Num > ushort.MaxValue)
            return $"vring {state.Index} base {state.Num} does not fit a 16-bit index";
        vring.Base = (ushort)state.Num;
        return null;
    }

    // "The back-end must stop the ring": join the worker, then report the next avail index. The kick fd goes; a
    // new SET_VRING_KICK restarts the ring.
    private string? GetVringBase(VhostUserMessage message)
    {
        var state = message.Read<VhostUserVringState>();
        if (FindVring(state.Index, out VhostUserVring vring) is { } error)
            return error;
        vring.Stop();
        vring.SetKick(null);
        var reply = new VhostUserVringState(state.Index, vring.Base);
        _connection.Reply(message.Header, System.Runtime.InteropServices.MemoryMarshal.AsBytes(new ReadOnlySpan<VhostUserVringState>(in reply)));
        return null;
    }

    private string? SetVringFd(VhostUserMessage message)
    {
        ulong value = message.Read<VhostUserU64>().Value;
        if (FindVring(VhostUserVringFd.Index(value), out VhostUserVring vring) is { } error)
            return error;
        bool hasFd = VhostUserVringFd.HasFd(value);
        if (message.Request == FrontendRequest.SetVringKick)
        {
            if (!hasFd)
                return $"vring {vring.Index}: polling without a kick fd is not supported";
            if (_map is null)
                return $"vring {vring.Index} kick fd arrived before any memory table";
        }

        // The worker signals the call and error fds and polls the kick fd: stop it before swapping any of them.
        bool wasStarted = vring.IsStarted;
        vring.Stop();
        SafeFileHandle? fd = hasFd ? message.Fds.Take(0) : null;
        switch (message.Request)
        {
            case FrontendRequest.SetVringKick:
                vring.SetKick(fd);
                break;
            case FrontendRequest.SetVringCall:
                vring.SetCall(fd);
                break;
            default:
                vring.SetErr(fd);
                break;
        }

        if (message.Request != FrontendRequest.SetVringKick && !wasStarted)
            return null;
        return vring.TryStart(Memory, _device, EventIdx, _logger, _threadFor);
    }

    private string? SetVringEnable(VhostUserVringState state)
    {
        if (FindVring(state.Index, out VhostUserVring vring) is { } error)
            return error;
        if (state.Num > 1)
            return $"vring {state.Index} enable value {state.Num} is neither 0 nor 1";
        vring.Enabled = state.Num == 1;
        if (!vring.Enabled)
        {
            vring.Stop();
            return null;
        }

        return vring.TryStart(Memory, _device, EventIdx, _logger, _threadFor);
    }
}
